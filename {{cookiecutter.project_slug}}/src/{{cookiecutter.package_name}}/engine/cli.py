"""train.py on LightningCLI: runs what the command asks for; every ending becomes a message and a status."""

import contextlib
import errno
import io
import shutil
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from {{ cookiecutter.package_name }}.engine.callbacks import (
    InterruptCheckpoint,
    RunStateInCheckpoint,
    model_checkpoint,
)
from {{ cookiecutter.package_name }}.engine.checkpoint_io import AtomicCheckpointIO
from {{ cookiecutter.package_name }}.engine.config_errors import ConciseErrorParser
from {{ cookiecutter.package_name }}.engine.console import quiet_start_up, results_line, short_help
from {{ cookiecutter.package_name }}.engine.distributed import (
    end_process_group,
    requeue_slurm_job,
    stop_started_processes,
    timed_out_collective,
)
from {{ cookiecutter.package_name }}.engine.non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from {{ cookiecutter.package_name }}.engine.predict import evaluate_checkpoint, predict_to_csv
from {{ cookiecutter.package_name }}.engine.train_cli import COMMANDS, NoSizesForNetError, TrainCLI

report = rank_zero_only(partial(print, flush=True))  # what a run prints: once, not once per process


def project_help(default_config: Path, argv: list[str]) -> str:
    """The short ``--help``: the default config's keys, with the values these flags resolve them to."""
    with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.suppress(SystemExit):
        main(default_config, [*argv, "--print_config"])
    if not printed.getvalue():
        raise SystemExit(2)  # a bad flag: its error is printed
    return short_help(default_config.read_text(), printed.getvalue(), prog=Path(sys.argv[0]).name)


def end_on_signal(trainer: L.Trainer, tested: bool = False) -> NoReturn:
    """Requeues a SLURM job that asked for it (exit 0), else exits 143 (128 + SIGTERM): a stopped job."""
    end_process_group()  # Lightning hands the signal to every process at the same step
    interrupt = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))  # type: ignore[attr-defined]
    if tested and trainer.is_global_zero:
        print(interrupt.what_to_do(trainer, SIGTERMException(), saved=False, tested=True), file=sys.stderr)
    if not interrupt.requeue:
        raise SystemExit(143) from None
    if trainer.is_global_zero:
        print(requeue_slurm_job(interrupt.job), file=sys.stderr, flush=True)
    raise SystemExit(0) from None


def failure(cli: TrainCLI, checkpoint: ModelCheckpoint | None, error: Exception) -> str | None:
    """The line of a run that failed not by a bug (exit 1), or by a setting only the Trainer finds (2)."""
    trainer, monitor, logged = cli.trainer, cli.config.monitor, sorted(cli.trainer.callback_metrics)
    if isinstance(error, NonFiniteLossError) or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        end_process_group()  # every process stops at the same step
        saved = Path(checkpoint.dirpath).glob("*.ckpt") if checkpoint and checkpoint.dirpath else []
        last = max(saved, key=lambda path: path.stat().st_mtime, default=None)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        what = f"disk full writing {error.filename}" if isinstance(error, OSError) else str(error)
        return f"{what}. Training stopped before saving the weights; {kept}"
    # What the model logs is known once it ran: ModelCheckpoint, EarlyStopping (a RuntimeError) or a
    # plateau schedule find a monitor it does not log after the first epoch, each with its own error.
    settings = isinstance(error, MisconfigurationException)
    missing = (
        (settings or isinstance(error, RuntimeError)) and monitor in str(error) and monitor not in logged
    )
    if missing or settings:
        log_dir = getattr(trainer.logger, "log_dir", None)  # TensorBoard would list the empty run
        if trainer.is_global_zero and log_dir and not any(Path(log_dir).rglob("*.ckpt")):
            shutil.rmtree(log_dir, ignore_errors=True)
        logs = f"it logs {', '.join(logged) or 'nothing'}"
        hint = f"monitor: the model logs no '{monitor}' ({logs}); set --monitor to one of those"
        cli.parser.error(f"{hint}, and --monitor_mode to min or max to match" if missing else str(error))
    if (timed_out := timed_out_collective(error)) is not None:
        stop_started_processes(trainer)  # one of them is stuck: it would never exit
    return None if timed_out is None else str(timed_out)


def evaluate(cli: TrainCLI) -> None:
    """``validate``, ``test``, ``predict`` (or ``--predict_path``): the checkpoint's model on the data."""
    trainer, ckpt_path = cli.trainer, cli.config.ckpt_path
    if cli.config.predict_path is not None:
        summary = predict_to_csv(trainer, ckpt_path, cli.datamodule, cli.config.predict_path).summary()
    else:
        split = "val" if cli.command == "validate" else "test"
        summary = results_line(split, evaluate_checkpoint(trainer, ckpt_path, cli.datamodule, split))
    end_process_group()
    report(summary)


def build_cli(
    default_config: Path,
    argv: list[str],
    command: str | None,
    in_process: bool,
    callbacks: Sequence[Callback],
    net_links: bool,
) -> TrainCLI:
    """LightningCLI with any LightningModule and DataModule, and the callbacks a run's guarantees rest on."""
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
        save_config_kwargs={"overwrite": True},  # each run logs to a new version directory
        # Added to whatever trainer.callbacks lists: a config file cannot drop what a run's guarantees need.
        trainer_defaults={
            "callbacks": [
                RunStateInCheckpoint(),
                InterruptCheckpoint(),
                StopOnNonFiniteLoss(),
                # rewritten every epoch, to resume from (save_last would only follow the best one)
                ModelCheckpoint(filename="last", enable_version_counter=False),
                *callbacks,
            ],
            # A class path, not an instance: it shows in --print_config and each run's config.yaml.
            "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}],
        },
    )


def main(default_config: Path, args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> TrainCLI:
    """Exit status: 0 done, 1 non-finite loss or Ctrl-C, 2 bad configuration, 143 SIGTERM. ``callbacks``
    join the Trainer's own: tune.py's pruning hook, an object no config file can hold."""
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
    trainer, checkpoint, ckpt_path = cli.trainer, model_checkpoint(cli.trainer), cli.config.ckpt_path
    report(
        f"Hardware: {type(trainer.accelerator).__name__} x{trainer.num_devices}"
        + (f" x {trainer.num_nodes} nodes," if trainer.num_nodes > 1 else ",")
        + f" {type(trainer.strategy).__name__}, precision {trainer.precision}, TF32 matmuls"
        f" {'on' if cli.tf32 else 'off'}, cuDNN autotuner {'on' if cli.config.trainer.benchmark else 'off'}"
    )
    for note in cli.notes:
        report(note)
    if ckpt_path is not None:
        doing = "Evaluating" if cli.evaluating else "Resuming from"
        report(f"{'Predicting with' if cli.config.predict_path else doing}: {ckpt_path}")
    try:
        if cli.evaluating:
            evaluate(cli)
            return cli
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
        stop = trainer.early_stopping_callback
        why = f" (early stopping on {stop.monitor})" if stop is not None and stop.stopped_epoch else ""
        report(f"Trained to epoch {trainer.current_epoch}, step {trainer.global_step}{why}")
        if trainer.received_sigterm:  # during the last validation: the test is for the next start
            end_on_signal(trainer, tested=True)
        if command is None:
            best = checkpoint.best_model_path if checkpoint is not None else ""
            trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
            report(results_line("test", trainer.callback_metrics))
    except SIGTERMException:
        end_on_signal(trainer)
    except Exception as error:
        message = failure(cli, checkpoint, error)
        if message is None:
            raise
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(1) from None
    end_process_group()
    if trainer.log_dir is not None and trainer.logger is not None:
        report(f"Logs: {trainer.log_dir}  (view with: tensorboard --logdir {trainer.logger.save_dir})")
    if checkpoint is not None and checkpoint.best_model_path:
        score = checkpoint.best_model_score
        scored = f"  ({checkpoint.monitor} = {score:.4f})" if score is not None else ""
        report(f"Best checkpoint: {checkpoint.best_model_path}{scored}")
    return cli
