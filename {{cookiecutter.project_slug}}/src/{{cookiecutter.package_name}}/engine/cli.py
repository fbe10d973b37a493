"""The command line: ``configs/default.yaml``, then any ``--config`` files, then ``--key value`` flags.

Built on LightningCLI, so every argument of the DataModule, the model and the Trainer is a config
key and a flag; ``--help`` lists them and ``--print_config`` shows the resolved result.
"""

import contextlib
import importlib
import io
import shutil
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelSummary,
    ProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from {{ cookiecutter.package_name }}.engine.callbacks import (
    InterruptCheckpoint,
    NonFiniteLossError,
    RandomStateInCheckpoint,
    StopOnNonFiniteLoss,
    model_checkpoint,
)
from {{ cookiecutter.package_name }}.engine.checkpoint_io import AtomicCheckpointIO, checkpoint_problem
from {{ cookiecutter.package_name }}.engine.config_errors import (
    ConciseErrorParser,
    check_optimizer,
    names_a_setting,
    yaml_error,
)
from {{ cookiecutter.package_name }}.engine.console import quiet_start_up, results_line
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule
from {{ cookiecutter.package_name }}.engine.distributed import (
    end_process_group,
    launches_this_command_again,
    set_collective_timeout,
    stop_started_processes,
    timed_out_collective,
)
from {{ cookiecutter.package_name }}.engine.hardware import auto_precision, enable_tf32_if_supported
from {{ cookiecutter.package_name }}.engine.predict import evaluate_checkpoint, predict_to_csv
from {{ cookiecutter.package_name }}.engine.run_identity import (
    checkpoint_misfit,
    experiment_dir,
    find_last,
    fix_run_dir,
)
from {{ cookiecutter.package_name }}.engine.short_help import short_help
from {{ cookiecutter.package_name }}.engine.sizes import DATA_SIZES, drop_sizes_not_taken, size_from_data
from {{ cookiecutter.package_name }}.module import Classifier


def class_of(component: Namespace) -> type:
    """The class that a ``class_path`` entry of the config names."""
    module, _, name = component.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


COMMANDS = ("fit", "validate", "test", "predict")
"""Lightning's subcommands; without one, ``train.py`` fits and then tests the best checkpoint."""


class TrainCLI(LightningCLI):
    def __init__(
        self, *args: Any, in_process: bool = False, command: str | None = None, **kwargs: Any
    ) -> None:
        self.in_process = in_process  # called with `args` (tests, tune.py), not as `python train.py`
        self.command = command
        super().__init__(*args, **kwargs)

    @property
    def evaluating(self) -> bool:
        """Validate, test or predict with a checkpoint: nothing is trained, nothing is logged."""
        return self.command in ("validate", "test", "predict") or self.config.predict_path is not None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Checkpoint to resume from: a file path, or 'last' for the newest last.ckpt or"
            " interrupted.ckpt of this experiment's runs (default_root_dir/<logger name>/version_*).",
        )
        parser.add_argument(
            "--predict_path",
            type=str | None,
            default=None,
            help="Instead of training: predict the DataModule's predict split with the --ckpt_path"
            " checkpoint and write a CSV file here (index, prediction, probability, label).",
        )
        parser.add_argument(
            "--predict_overwrite",
            type=bool,
            default=False,
            help="Replace an existing --predict_path file instead of refusing to run.",
        )
        # One directory for everything a run writes: --trainer.default_root_dir moves the logs too.
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")
        parser.add_argument(
            "--collective_timeout",
            type=int | None,
            default=None,
            help="Seconds that several processes wait for each other in one collective (all-reduce,"
            " all-gather, barrier) before the run stops with an error naming it; null: 300 on CPU,"
            " 1800 on GPUs.",
        )
        # Sizes that depend on the data are read from the DataModule, never typed twice.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        net_class = partial(lambda cli: class_of(cli.config.model.net), self)  # known once parsed
        for size in DATA_SIZES:
            compute = partial(size_from_data, size, net_class)
            parser.link_arguments(
                "data", f"model.net.init_args.{size}", compute_fn=compute, apply_on="instantiate"
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        error = yaml_error(sys.argv[1:] if args is None else args) if isinstance(args, list | None) else None
        if error is not None:
            parser.error(f"config: {error}")
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        ckpt_path = self.config.ckpt_path
        predict_path = self.config.predict_path
        if predict_path is not None and ckpt_path is None:
            self.parser.error("predict_path: needs --ckpt_path, the checkpoint to predict with (or 'last')")
        if predict_path is not None and Path(predict_path).is_dir():
            self.parser.error(f"predict_path: '{predict_path}' is a directory; name the CSV file to write")
        if self.command == "predict" and predict_path is None:
            self.parser.error("predict_path: predict writes its predictions to a CSV file; name it")
        if self.command in ("validate", "test") and ckpt_path is None:
            self.parser.error(f"ckpt_path: {self.command} evaluates a checkpoint; give its path, or 'last'")
        if not self.evaluating and 0 in (trainer.max_epochs, trainer.max_steps):
            self.parser.error("trainer.max_epochs: 0 would test an untrained model; train at least 1 epoch")
        if ckpt_path == "last":
            experiment = experiment_dir(trainer)
            newest = find_last(experiment)
            if newest is None:
                self.parser.error(f"ckpt_path: 'last' found no last.ckpt or interrupted.ckpt in {experiment}")
            self.config.ckpt_path = str(newest)
        elif ckpt_path is not None and not Path(ckpt_path).exists():  # (FSDP saves folders)
            self.parser.error(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
        overwrite, evaluating = self.config.predict_overwrite, self.evaluating
        if problem := checkpoint_problem(self.config.ckpt_path, predict_path, overwrite, evaluating):
            self.parser.error(problem)
        # The flags switch off the Rich progress bar and summary of the default config, as they
        # would Lightning's own, instead of clashing with them.
        switched_off = tuple(
            kind
            for flag, kind in (("enable_progress_bar", ProgressBar), ("enable_model_summary", ModelSummary))
            if trainer.get(flag) is False
        )
        if trainer.get("overfit_batches"):  # validation sees the training batches: nothing to stop on
            switched_off += (EarlyStopping,)
        if trainer.get("logger") is False:  # nothing to log the learning rate to
            switched_off += (LearningRateMonitor,)
        if switched_off and trainer.callbacks:
            trainer.callbacks = [c for c in trainer.callbacks if not issubclass(class_of(c), switched_off)]
        if trainer.precision is None:
            trainer.precision = auto_precision(trainer.accelerator)
        self.tf32 = enable_tf32_if_supported(trainer.accelerator)

    def instantiate_classes(self) -> None:
        """Turns a value that a constructor rejects into the same one-line error as a parse error."""
        try:
            super().instantiate_classes()
            check_optimizer(self.model)
        except (ValueError, TypeError, MisconfigurationException) as error:
            if not names_a_setting(error):
                raise  # a bug in the code being built keeps its traceback (the rule: names_a_setting)
            self.parser.error(str(error))
        net_class = class_of(self.config.model.net)
        drop_sizes_not_taken(net_class, self.config.model.net.init_args)  # the config.yaml of the run
        drop_sizes_not_taken(net_class, self.model.hparams["net"]["init_args"])  # the checkpoints
        if self.config.ckpt_path is not None:
            checkpoint = Path(self.config.ckpt_path)
            misfit = checkpoint_misfit(checkpoint, self.config, self.model, self.datamodule, self.evaluating)
            if misfit is not None:
                self.parser.error(misfit)
        if not isinstance(self.datamodule, SeededDataModule):
            rank_zero_warn(
                f"{type(self.datamodule).__name__} is not a SeededDataModule: its DataLoader workers are not"
                " seeded per (seed, epoch), and a resumed run does not continue its data order exactly",
            )
        if self.in_process and launches_this_command_again(self.trainer):
            self.parser.error(
                f"trainer.devices: {self.trainer.num_devices} processes would run this program's command"
                " line again, which an in-process call (a test, tune.py) does not hold; use one device"
                " (--trainer.devices 1) or run python train.py"
            )
        set_collective_timeout(self.trainer, self.config.collective_timeout)
        if not self.evaluating:  # last: once nothing can stop the run before it starts
            try:
                fix_run_dir(self.trainer, self.config.ckpt_path)
            except OSError as error:
                self.parser.error(f"trainer.default_root_dir: cannot create a run directory in it ({error})")


def discard_unstarted_run(trainer: L.Trainer) -> None:
    """Removes the directory of a run that its settings stopped before it saved anything: TensorBoard
    would list it next to the real runs, empty."""
    log_dir = getattr(trainer.logger, "log_dir", None)
    if trainer.is_global_zero and log_dir and not any(Path(log_dir).rglob("*.ckpt")):
        shutil.rmtree(log_dir, ignore_errors=True)


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
    trainer, model_class, ckpt_path = cli.trainer, type(cli.model), cli.config.ckpt_path
    if cli.config.predict_path is not None:
        writer = predict_to_csv(trainer, model_class, ckpt_path, cli.datamodule, cli.config.predict_path)
        end_process_group()
        report(writer.summary())
        return
    split = "val" if cli.command == "validate" else "test"
    metrics = evaluate_checkpoint(trainer, model_class, ckpt_path, cli.datamodule, split)
    end_process_group()
    report(results_line(split, metrics))


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
    cli = TrainCLI(
        Classifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=argv,
        in_process=args is not None,
        command=command,
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
                InterruptCheckpoint(),
                StopOnNonFiniteLoss(),
                *callbacks,
            ],
            # Checkpoints that a crash or a full disk cannot half-write; a class path, not an instance,
            # so that it shows in --print_config and in each run's config.yaml.
            "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}],
        },
    )
    trainer = cli.trainer
    report(
        f"Hardware: {type(trainer.accelerator).__name__} x{trainer.num_devices}"
        + (f" x {trainer.num_nodes} nodes" if trainer.num_nodes > 1 else "")
        + f", {type(trainer.strategy).__name__}, precision {trainer.precision},"
        f" TF32 matmuls {'on' if cli.tf32 else 'off'}"
    )
    checkpoint = model_checkpoint(trainer)
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
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if command is None:
            trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    except MisconfigurationException as error:  # settings that only clash once the Trainer runs
        discard_unstarted_run(trainer)
        cli.parser.error(str(error))
    except NonFiniteLossError as error:
        saved = Path(checkpoint.dirpath).glob("*.ckpt") if checkpoint and checkpoint.dirpath else []
        last = max(saved, key=lambda path: path.stat().st_mtime, default=None)
        kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint had been written yet"
        sys.stderr.write(f"error: {error}. Training stopped before saving the weights{kept}\n")
        end_process_group()  # every process stops at the same step
        raise SystemExit(1) from None
    except SIGTERMException:
        end_process_group()  # Lightning hands the signal to every process at the same step
        raise SystemExit(143) from None  # 128 + SIGTERM, what schedulers expect of a terminated job
    except RuntimeError as error:
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
