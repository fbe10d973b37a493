"""The command line: ``configs/default.yaml``, then any ``--config`` files, then ``--key value`` flags.

Built on LightningCLI (``train_cli.TrainCLI``), so every argument of the DataModule, the model and
the Trainer is a config key and a flag; ``--help`` shows the project's keys and ``--print_config``
the resolved result. ``main`` runs what the command asks for and turns every way it can end into a
message and an exit status.
"""

import contextlib
import errno
import io
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import lightning as L
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from {{ cookiecutter.package_name }}.engine.callbacks import (
    ExampleInputsInCheckpoint,
    InterruptCheckpoint,
    RandomStateInCheckpoint,
    RunEndInCheckpoint,
    model_checkpoint,
)
from {{ cookiecutter.package_name }}.engine.checkpoint_io import AtomicCheckpointIO
from {{ cookiecutter.package_name }}.engine.config_errors import ConciseErrorParser
from {{ cookiecutter.package_name }}.engine.console import quiet_start_up, results_line
from {{ cookiecutter.package_name }}.engine.distributed import (
    end_process_group,
    stop_started_processes,
    timed_out_collective,
)
from {{ cookiecutter.package_name }}.engine.non_finite import (
    NonFiniteLossError,
    StopOnNonFiniteLoss,
)
from {{ cookiecutter.package_name }}.engine.predict import evaluate_checkpoint, predict_to_csv
from {{ cookiecutter.package_name }}.engine.short_help import short_help
from {{ cookiecutter.package_name }}.engine.train_cli import COMMANDS, NoSizesForNetError, TrainCLI

__all__ = ["COMMANDS", "TrainCLI", "main"]


def stopped_early(trainer: L.Trainer) -> str:
    """Why training ended before ``max_epochs``, if it did: early stopping names it."""
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)  # type: ignore[attr-defined]
    if stopper is not None and stopper.stopped_epoch > 0:
        return f" (early stopping: {stopper.monitor} did not improve for {stopper.patience} epochs)"
    return ""


def end_on_signal(trainer: L.Trainer, tested: bool = False) -> NoReturn:
    """Ends a run that SIGTERM (or SLURM's time-limit signal) stopped: requeues a SLURM job that
    asked for it (exit 0), else exits 143, 128 + SIGTERM, what schedulers expect of a stopped job."""
    end_process_group()  # Lightning hands the signal to every process at the same step
    interrupt = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))  # type: ignore[attr-defined]
    if tested and trainer.is_global_zero:
        print(interrupt.what_to_do(trainer, SIGTERMException(), saved=False, tested=True), file=sys.stderr)
    if not interrupt.requeue:
        raise SystemExit(143) from None
    if trainer.is_global_zero:
        print(interrupt.requeue_job(), file=sys.stderr, flush=True)
    raise SystemExit(0) from None


def discard_unstarted_run(trainer: L.Trainer) -> None:
    """Removes the directory of a run that its settings stopped before it saved anything: TensorBoard
    would list it next to the real runs, empty."""
    log_dir = getattr(trainer.logger, "log_dir", None)
    if trainer.is_global_zero and log_dir and not any(Path(log_dir).rglob("*.ckpt")):
        shutil.rmtree(log_dir, ignore_errors=True)


def missing_monitor(trainer: L.Trainer, monitor: str, error: Exception) -> str | None:
    """The one-line error for a ``monitor`` that the model does not log, if that is what stopped the run.

    What a module logs is known once it has run: the callbacks that watch the metric (ModelCheckpoint,
    EarlyStopping, a plateau schedule) find out at the end of the first epoch, each with an error of
    its own (EarlyStopping's a RuntimeError with a traceback); this one names the key and the choices.
    """
    logged = sorted(trainer.callback_metrics)
    if monitor in logged or monitor not in str(error):
        return None
    return (
        f"monitor: the model logs no '{monitor}' (it logs {', '.join(logged) or 'nothing'}); set --monitor"
        " to one of those, and --monitor_mode to min or max to match"
    )


@rank_zero_only
def report(message: str) -> None:
    print(message, flush=True)


def project_help(default_config: Path, argv: list[str]) -> str:
    """The short ``--help``: the default config's keys with the values these flags resolve them to."""
    with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.suppress(SystemExit):
        main(default_config, [*argv, "--print_config"])
    default = yaml.safe_load(default_config.read_text())
    return short_help(default, yaml.safe_load(printed.getvalue()), prog=Path(sys.argv[0]).name)


def evaluate(cli: TrainCLI) -> None:
    """``validate``, ``test`` and ``predict`` (or ``--predict_path``): the checkpoint's model on the
    config's data; the metrics are printed, the predictions written to their CSV file."""
    trainer, ckpt_path = cli.trainer, cli.config.ckpt_path
    if cli.config.predict_path is not None:
        writer = predict_to_csv(trainer, ckpt_path, cli.datamodule, cli.config.predict_path)
        end_process_group()
        report(writer.summary())
        return
    split = "val" if cli.command == "validate" else "test"
    metrics = evaluate_checkpoint(trainer, ckpt_path, cli.datamodule, split)
    end_process_group()
    report(results_line(split, metrics))


def build_cli(
    default_config: Path,
    argv: list[str],
    command: str | None,
    in_process: bool,
    callbacks: Sequence[Callback],
    net_links: bool,
) -> TrainCLI:
    """LightningCLI with this project's parser, any LightningModule at ``model.class_path``, and the
    callbacks that the guarantees of a run rest on."""
    return TrainCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=argv,
        in_process=in_process,
        command=command,
        net_links=net_links,
        auto_configure_optimizers=False,  # the optimizer and schedule are the model's arguments
        parser_class=ConciseErrorParser,
        parser_kwargs={"default_config_files": [str(default_config)]},
        # Each run logs to a new version directory; fit and test of one run share it.
        save_config_kwargs={"overwrite": True},
        # Added to whatever trainer.callbacks lists: the guarantees of resume and of a clean stop
        # must not depend on a config file that replaces the list.
        trainer_defaults={
            "callbacks": [
                RandomStateInCheckpoint(),
                ExampleInputsInCheckpoint(),
                InterruptCheckpoint(),
                RunEndInCheckpoint(),
                StopOnNonFiniteLoss(),
                # last.ckpt, rewritten every epoch, to resume from (save_last on the best checkpoint
                # would only rewrite it when the best one changes)
                ModelCheckpoint(filename="last", enable_version_counter=False),
                *callbacks,
            ],
            # Checkpoints that a crash or a full disk cannot half-write; a class path, not an instance,
            # so that it shows in --print_config and in each run's config.yaml. TrainCLI keeps it
            # whatever --trainer.plugins gives (checkpoint_io.with_atomic_writer).
            "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}],
        },
    )


def main(default_config: Path, args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> TrainCLI:
    """``python train.py [fit|validate|test|predict] [--key value ...]``.

    Without a subcommand: train with early stopping and checkpoints, then test the best checkpoint.
    ``fit`` trains only; ``validate`` and ``test`` evaluate the ``--ckpt_path`` checkpoint;
    ``predict`` (or ``--predict_path`` alone) writes its predictions to a CSV file.

    Exit status: 0 done, 1 non-finite loss or Ctrl-C, 2 bad configuration, 143 SIGTERM; Ctrl-C
    and SIGTERM print the command that resumes (README: "What a run guarantees"). ``callbacks``
    join the Trainer's own: the hyperparameter search (``tune.py``) passes its pruning hook here,
    an object no config file can hold.
    """
    quiet_start_up()
    argv = list(sys.argv[1:] if args is None else args)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else None
    asked = next((index for index, arg in enumerate(argv) if arg in ("-h", "--help")), None)
    if asked is not None and argv[asked + 1 : asked + 2] == ["all"]:
        del argv[asked + 1]  # LightningCLI's own help: every key
    elif asked is not None:
        print(project_help(default_config, [*argv[:asked], *argv[asked + 1 :]]))
        raise SystemExit(0)
    try:
        cli = build_cli(default_config, argv, command, args is not None, callbacks, net_links=True)
    except NoSizesForNetError:  # no `net`, or one that takes no size: nothing to pass sizes to
        cli = build_cli(default_config, argv, command, args is not None, callbacks, net_links=False)
    trainer = cli.trainer
    report(
        f"Hardware: {type(trainer.accelerator).__name__} x{trainer.num_devices}"
        + (f" x {trainer.num_nodes} nodes" if trainer.num_nodes > 1 else "")
        + f", {type(trainer.strategy).__name__}, precision {trainer.precision},"
        f" TF32 matmuls {'on' if cli.tf32 else 'off'},"
        f" cuDNN autotuner {'on' if cli.config.trainer.benchmark else 'off'}"
    )
    checkpoint = model_checkpoint(trainer)
    for note in cli.notes:
        report(note)
    if cli.config.ckpt_path is not None:
        predicting = cli.config.predict_path is not None
        doing = "Predicting with" if predicting else "Evaluating" if cli.evaluating else "Resuming from"
        report(f"{doing}: {cli.config.ckpt_path}")
    best = ""
    try:
        if cli.evaluating:
            evaluate(cli)
            return cli
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
        report(
            f"Trained to epoch {trainer.current_epoch}, step {trainer.global_step}{stopped_early(trainer)}"
        )
        if trainer.received_sigterm:  # during the last validation: the test is for the next start
            end_on_signal(trainer, tested=True)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if command is None:
            trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    except MisconfigurationException as error:  # settings that only clash once the Trainer runs
        discard_unstarted_run(trainer)
        cli.parser.error(missing_monitor(trainer, cli.config.monitor, error) or str(error))
    except (NonFiniteLossError, OSError) as error:
        if isinstance(error, OSError) and error.errno != errno.ENOSPC:
            raise
        saved = Path(checkpoint.dirpath).glob("*.ckpt") if checkpoint and checkpoint.dirpath else []
        last = max(saved, key=lambda path: path.stat().st_mtime, default=None)
        kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint had been written yet"
        what = f"disk full writing {error.filename}" if isinstance(error, OSError) else str(error)
        sys.stderr.write(f"error: {what}. Training stopped before saving the weights{kept}\n")
        end_process_group()  # every process stops at the same step
        raise SystemExit(1) from None
    except SIGTERMException:
        end_on_signal(trainer)
    except RuntimeError as error:
        if (missing := missing_monitor(trainer, cli.config.monitor, error)) is not None:
            discard_unstarted_run(trainer)  # EarlyStopping's error
            cli.parser.error(missing)
        timed_out = timed_out_collective(error)
        if timed_out is None:
            raise
        stop_started_processes(trainer)  # one of them is stuck: it would never exit
        sys.stderr.write(f"error: {timed_out}\n")
        raise SystemExit(1) from None
    if command is None:
        report(results_line("test", trainer.callback_metrics))
    end_process_group()
    if trainer.log_dir is not None and trainer.logger is not None:
        report(f"Logs: {trainer.log_dir}  (view with: tensorboard --logdir {trainer.logger.save_dir})")
    if best:
        score = checkpoint.best_model_score
        scored = f"  ({checkpoint.monitor} = {score:.4f})" if score is not None else ""
        report(f"Best checkpoint: {best}{scored}")
    return cli
