"""LightningCLI as this project configures it: its extra keys, the links from the data to the network,
and the checks that stop a bad run in one line before any work."""

import re
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
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
from lightning.pytorch.utilities import rank_zero_warn

from {{ cookiecutter.package_name }}.engine import run_identity as runs
from {{ cookiecutter.package_name }}.engine.checkpoint_fit import checkpoint_misfit
from {{ cookiecutter.package_name }}.engine.checkpoint_io import (
    checkpoint_problem,
    missing_path,
    with_atomic_writer,
)
from {{ cookiecutter.package_name }}.engine.config_errors import names_a_setting, unwrap_link_error, yaml_error
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule
from {{ cookiecutter.package_name }}.engine.distributed import (
    collective_timeout,
    starts_its_own_processes,
    strategies_with_timeout,
)
from {{ cookiecutter.package_name }}.engine.hardware import fill_in_hardware
from {{ cookiecutter.package_name }}.engine.non_finite import StopOnNonFiniteLoss
from {{ cookiecutter.package_name }}.engine.sizes import SIZES, class_of, record_model_config, size_for, takes


class NoSizesForNetError(Exception):
    """The model has no ``net`` that takes a size: ``main`` builds the CLI again without links into it."""


def checkpoint_filename(monitor: str) -> str:
    """The best checkpoint's name shows the metric that chose it: ``epoch07-val_loss0.0421``."""
    return "epoch{epoch:02d}-" + monitor.replace("/", "_") + "{" + monitor + ":.4f}"


COMMANDS = ("fit", "validate", "test", "predict")
"""Lightning's subcommands; without one, ``train.py`` fits and then tests the best checkpoint."""


OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "ckpt_path": (str | None, None, "Checkpoint to resume or evaluate; 'last': this experiment's newest"),
    "predict_path": (str | None, None, "Instead of training: write --ckpt_path's predictions to this CSV"),
    "predict_overwrite": (bool, False, "Replace an existing --predict_path file"),
    "collective_timeout": (PositiveInt | None, None, "Seconds a collective waits; null: 300 CPU, 1800 GPU"),
    "monitor": (str, "val/loss", "The metric that picks the best checkpoint, stops early, scores a trial"),
    "monitor_mode": (Literal["min", "max"], "min", "min: lower is better"),
}
"""The keys this project adds to Lightning's: (type, default, help)."""


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
        self.command = command
        self.net_links = net_links  # links from the data into model.net (the shipped tasks have one)
        self.notes: list[str] = []  # printed before the run starts
        self.run_dir: Path | None = None  # the version_N that run_identity.fix_run_dir chose
        super().__init__(*args, **kwargs)

    @property
    def evaluating(self) -> bool:
        """Validate, test or predict with a checkpoint: nothing is trained, nothing is logged."""
        return self.command in ("validate", "test", "predict") or self.config.predict_path is not None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name, (kind, default, text) in OPTIONS.items():
            parser.add_argument(f"--{name}", type=kind, default=default, help=text)
        # One directory for everything a run writes; the monitor, written once, for all that watch it.
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")
        parser.link_arguments("monitor", "trainer.callbacks.init_args.monitor")
        parser.link_arguments("monitor_mode", "trainer.callbacks.init_args.mode")
        parser.link_arguments(
            "monitor", "trainer.callbacks.init_args.filename", compute_fn=checkpoint_filename
        )
        parser.link_arguments("monitor", "model.init_args.monitor")
        parser.link_arguments("monitor_mode", "model.init_args.scheduler.init_args.mode")
        # Sizes that the data declares go to the task and its network by name, never typed twice.
        for target in ["model", "model.init_args.net"] if self.net_links else ["model"]:
            target_class = partial(lambda at: class_of(self.config[at]), f"{target}.class_path")
            for size in SIZES:
                compute = partial(size_for, size, target.replace(".init_args", ""), target_class)
                parser.link_arguments(
                    "data", f"{target}.init_args.{size}", compute_fn=compute, apply_on="instantiate"
                )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        error = yaml_error(sys.argv[1:] if args is None else args) if isinstance(args, list | None) else None
        if error is not None:
            parser.error(f"config: {error}")
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """The checks, then the defaults they leave open; the run directory last, once none can refuse."""
        net = self.config.model.get("init_args", {}).get("net")
        takes_sizes = isinstance(net, Namespace) and any(takes(class_of(net.class_path), s) for s in SIZES)
        if self.net_links and not takes_sizes:
            raise NoSizesForNetError
        config, error = self.config, self.parser.error
        trainer, ckpt_path, predict_path = config.trainer, config.ckpt_path, config.predict_path
        if problem := missing_path(self.command, ckpt_path, predict_path):
            error(problem)
        if not self.evaluating and 0 in (trainer.max_epochs, trainer.max_steps):
            error("trainer.max_epochs: 0 would test an untrained model; train at least 1 epoch")
        try:
            ckpt_path, self.run_dir, notes = runs.resolve_ckpt_path(trainer, ckpt_path, self.evaluating)
        except ValueError as problem:
            error(str(problem))
        self.notes += notes
        config.ckpt_path = ckpt_path
        if problem := checkpoint_problem(ckpt_path, predict_path, config.predict_overwrite, self.evaluating):
            error(problem)
        trainer.plugins, refused = with_atomic_writer(trainer.plugins)
        if refused is not None:
            error(refused)
        # Off as the flags switch off Lightning's own: the progress bar and summary; early stopping
        # where validation sees the training batches; the learning-rate monitor without a logger.
        switched_off = {
            ProgressBar: trainer.get("enable_progress_bar") is False,
            ModelSummary: trainer.get("enable_model_summary") is False,
            EarlyStopping: bool(trainer.get("overfit_batches")),
            LearningRateMonitor: trainer.get("logger") is False,
        }
        off = tuple(kind for kind, is_off in switched_off.items() if is_off)
        if off and trainer.callbacks:
            trainer.callbacks = [c for c in trainer.callbacks if not issubclass(class_of(c.class_path), off)]
        defaults = self.trainer_defaults["callbacks"]
        if trainer.get("enable_checkpointing") is False:  # the machinery's last.ckpt would clash with it
            self.trainer_defaults["callbacks"] = [c for c in defaults if not isinstance(c, ModelCheckpoint)]
        for callback in defaults:
            if isinstance(callback, StopOnNonFiniteLoss):
                callback.monitor = config.monitor
        self.tf32 = fill_in_hardware(trainer)
        if not self.evaluating:
            try:
                self.run_dir = runs.fix_run_dir(trainer, ckpt_path, self.run_dir)
            except OSError as problem:
                error(f"trainer.default_root_dir: cannot create a run directory in it ({problem})")

    def instantiate_classes(self) -> None:
        """A new run directory goes again if the run is refused (or the code fails)."""
        try:
            self.instantiate_checked_classes()
        except BaseException:
            if self.run_dir is not None and runs.unused(self.run_dir):
                shutil.rmtree(self.run_dir)
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Any error the Trainer raises about its arguments, in one line naming the key."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError) as error:
            named = re.search(r"`(\w+)(=|` )", str(error))
            key = f"trainer.{named[1]}" if named else "trainer"
            self.parser.error(f"{key}: {str(error).splitlines()[0]}")

    def instantiate_checked_classes(self) -> None:
        """A value a constructor rejects stops in one line, as a parse error does; then the checks of the
        built objects against the checkpoint and the launch."""
        timeout = collective_timeout(self.config.collective_timeout, self.config.trainer.accelerator)
        try:
            with strategies_with_timeout(self.config.trainer.strategy, timeout):
                super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            cause = unwrap_link_error(error)  # a size the data lacks (sizes.size_for), or a bug of its own
            if not names_a_setting(cause):
                raise  # a bug in the code being built keeps its traceback
            self.parser.error(str(cause))
        if self.run_dir is not None and isinstance(logger := self.config.trainer.logger, Namespace):
            logger.init_args.version = None  # config.yaml given again starts a new run, not this one
        record_model_config(self.model, self.config.model, self.datamodule)
        ckpt_path = self.config.ckpt_path
        if misfit := checkpoint_misfit(ckpt_path, self.trainer, self.model, self.datamodule, self.evaluating):
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
