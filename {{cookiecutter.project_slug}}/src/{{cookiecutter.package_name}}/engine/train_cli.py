"""LightningCLI, as this project configures it: the extra keys, the links from the data to the
network, and the checks that stop a run in one line before any work.

The hooks below run in the order LightningCLI calls them: ``add_arguments_to_parser``,
``parse_arguments``, ``before_instantiate_classes``, ``instantiate_classes``.
"""

import re
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import rank_zero_warn

from {{ cookiecutter.package_name }}.engine.checkpoint_io import checkpoint_problem, with_atomic_writer
from {{ cookiecutter.package_name }}.engine.config_errors import names_a_setting, unwrap_link_error, yaml_error
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule
from {{ cookiecutter.package_name }}.engine.distributed import (
    collective_timeout,
    starts_its_own_processes,
    strategies_with_timeout,
)
from {{ cookiecutter.package_name }}.engine.hardware import (
    auto_benchmark,
    auto_precision,
    enable_tf32_if_supported,
)
from {{ cookiecutter.package_name }}.engine.non_finite import StopOnNonFiniteLoss
from {{ cookiecutter.package_name }}.engine.run_identity import (
    checkpoint_misfit,
    experiment_dir,
    find_last,
    fix_run_dir_without_logger,
    fix_run_version,
    forget_run_version,
    make_root_absolute,
    restart_count,
    restart_point,
    unused,
)
from {{ cookiecutter.package_name }}.engine.sizes import SIZES, class_of, record_model_config, size_for, takes


class NoSizesForNetError(Exception):
    """The model takes no ``net``, or one that takes no size: the CLI is built again without the
    links into it (see ``main``), since Lightning records a linked value only where a key exists."""


def checkpoint_filename(monitor: str) -> str:
    """The best checkpoint's file name, showing the metric that chose it: ``epoch07-val_loss0.0421``."""
    return "epoch{epoch:02d}-" + monitor.replace("/", "_") + "{" + monitor + ":.4f}"


COMMANDS = ("fit", "validate", "test", "predict")
"""Lightning's subcommands; without one, ``train.py`` fits and then tests the best checkpoint."""


class TrainCLI(LightningCLI):
    def __init__(
        self,
        *args: Any,
        in_process: bool = False,
        command: str | None = None,
        net_links: bool = True,
        **kwargs: Any,
    ) -> None:
        self.in_process = in_process  # called with `args` (tests, tune.py), not as `python train.py`
        self.restarted_run: Path | None = None  # the run that a restart of a SLURM job or torchrun continues
        self.notes: list[str] = []  # printed before the run starts
        self.claimed_run: Path | None = None  # a new run directory, removed again if the run is refused
        self.versioned = False  # the logger's version was set here (fix_run_version), not by the config
        self.command = command
        self.net_links = net_links  # links from the data into model.net (the shipped tasks have one)
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
        parser.add_argument(
            "--monitor",
            type=str,
            default="val/loss",
            help="The metric that picks the best checkpoint and names it, stops early, drives a plateau"
            " schedule and scores a tuning trial.",
        )
        parser.add_argument(
            "--monitor_mode", type=Literal["min", "max"], default="min", help="min: lower is better"
        )
        # Written once, read by every callback that watches a metric and by the task.
        parser.link_arguments("monitor", "trainer.callbacks.init_args.monitor")
        parser.link_arguments("monitor_mode", "trainer.callbacks.init_args.mode")
        parser.link_arguments(
            "monitor", "trainer.callbacks.init_args.filename", compute_fn=checkpoint_filename
        )
        parser.link_arguments("monitor", "model.init_args.monitor")
        parser.link_arguments("monitor_mode", "model.init_args.scheduler.init_args.mode")
        # Sizes that the data declares go to the task and its network by name, never typed twice.
        targets = [
            ("model", "model.init_args", partial(lambda cli: class_of(cli.config.model.class_path), self))
        ]
        if self.net_links:
            net = partial(lambda cli: class_of(cli.config.model.init_args.net.class_path), self)
            targets.append(("model.net", "model.init_args.net.init_args", net))
        for key, prefix, target in targets:
            for size in SIZES:
                compute = partial(size_for, size, key, target)
                parser.link_arguments("data", f"{prefix}.{size}", compute_fn=compute, apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        error = yaml_error(sys.argv[1:] if args is None else args) if isinstance(args, list | None) else None
        if error is not None:
            parser.error(f"config: {error}")
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        net = self.config.model.get("init_args", {}).get("net")
        takes_sizes = isinstance(net, Namespace) and any(takes(class_of(net.class_path), s) for s in SIZES)
        if self.net_links and not takes_sizes:
            raise NoSizesForNetError
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
        make_root_absolute(trainer)
        restart = None if self.evaluating else restart_point(experiment_dir(trainer))
        if restart is not None:  # SLURM's requeue, torchrun's restart: the same command, the same run
            self.restarted_run, newest = restart
            self.notes.append(f"Restart {restart_count()} of this job: continuing {self.restarted_run}")
            if newest is not None or ckpt_path == "last":
                ckpt_path = self.config.ckpt_path = None if newest is None else str(newest)
        if ckpt_path == "last":
            experiment = experiment_dir(trainer)
            newest = find_last(experiment)
            if newest is None and self.evaluating:
                self.parser.error(f"ckpt_path: 'last' found no last.ckpt or interrupted.ckpt in {experiment}")
            if newest is None:  # Lightning's own meaning: nothing to resume yet, so start
                self.notes.append(
                    f"ckpt_path: 'last' found no checkpoint in {experiment}; starting a new run"
                )
            self.config.ckpt_path = None if newest is None else str(newest)
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
            trainer.callbacks = [
                c for c in trainer.callbacks if not issubclass(class_of(c.class_path), switched_off)
            ]
        defaults = self.trainer_defaults["callbacks"]
        if trainer.get("enable_checkpointing") is False:  # the machinery's last.ckpt would clash with it
            self.trainer_defaults["callbacks"] = [c for c in defaults if not isinstance(c, ModelCheckpoint)]
        for callback in defaults:
            if isinstance(callback, StopOnNonFiniteLoss):
                callback.monitor = self.config.monitor
        trainer.plugins, refused = with_atomic_writer(trainer.plugins)
        if refused is not None:
            self.parser.error(refused)
        if self.config.collective_timeout is not None and self.config.collective_timeout < 1:
            self.parser.error(
                f"collective_timeout: must be at least 1 second, got {self.config.collective_timeout}"
            )
        precision_plugin = any(  # Lightning takes the precision from the plugin, refusing both
            isinstance(plugin, Namespace) and issubclass(class_of(plugin.class_path), Precision)
            for plugin in trainer.plugins
        )
        if trainer.precision is None and not precision_plugin:
            trainer.precision = auto_precision(trainer.accelerator)
        if trainer.benchmark is None:
            trainer.benchmark = auto_benchmark(trainer.accelerator, trainer.deterministic)
        self.tf32 = enable_tf32_if_supported(trainer.accelerator)
        if not self.evaluating:  # last: once no check here can stop the run (see instantiate_classes)
            try:
                if fix_run_dir_without_logger(trainer, self.config.ckpt_path, self.restarted_run):
                    self.claimed_run = Path(trainer.default_root_dir)
                run = fix_run_version(trainer, self.config.ckpt_path, self.restarted_run)
                self.versioned = run is not None
                if run is not None and unused(run):
                    self.claimed_run = run
            except OSError as error:
                self.parser.error(f"trainer.default_root_dir: cannot create a run directory in it ({error})")

    def instantiate_classes(self) -> None:
        """Turns a value that a constructor rejects into the same one-line error as a parse error;
        a run directory claimed for the run goes again if the run is refused (or the code fails)."""
        try:
            self.instantiate_checked_classes()
        except BaseException:
            if self.claimed_run is not None and unused(self.claimed_run):
                shutil.rmtree(self.claimed_run)
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer's own checks of its arguments, in one line naming the key: its code is not ours
        to debug, so any error it raises is about a value."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError) as error:
            named = re.search(r"`(\w+)(=|` )", str(error))
            key = f"trainer.{named[1]}" if named else "trainer"
            self.parser.error(f"{key}: {str(error).splitlines()[0]}")

    def instantiate_checked_classes(self) -> None:
        timeout = collective_timeout(self.config.collective_timeout, self.config.trainer.accelerator)
        try:
            with strategies_with_timeout(self.config.trainer.strategy, timeout):
                super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            cause = unwrap_link_error(error)  # a size the data lacks (sizes.size_for), or a bug of its own
            if not names_a_setting(cause):
                raise  # a bug in the code being built keeps its traceback (the rule: names_a_setting)
            self.parser.error(str(cause))
        if self.versioned:
            forget_run_version(self.config.trainer)
        record_model_config(self.model, self.config.model, self.datamodule)
        if self.config.ckpt_path is not None:
            checkpoint = Path(self.config.ckpt_path)
            misfit = checkpoint_misfit(checkpoint, self.trainer, self.model, self.datamodule, self.evaluating)
            if misfit is not None:
                self.parser.error(misfit)
        if not isinstance(self.datamodule, SeededDataModule):
            rank_zero_warn(
                f"{type(self.datamodule).__name__} is not a SeededDataModule: its batches are not seeded per"
                " (seed, epoch, batch), and a resumed run does not continue its data order exactly",
            )
        if self.in_process and starts_its_own_processes(self.trainer):
            self.parser.error(
                f"trainer.devices: {self.trainer.num_devices} processes would run this program's command"
                " line again (or be spawned), which an in-process call (a test, tune.py) does not hold;"
                " use one device (--trainer.devices 1) or run python train.py"
            )
