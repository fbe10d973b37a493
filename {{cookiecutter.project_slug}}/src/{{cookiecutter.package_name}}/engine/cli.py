"""The command line: ``configs/default.yaml``, then any ``--config`` files, then ``--key value`` flags.

Built on LightningCLI, so every argument of the DataModule, the model and the Trainer is a config
key and a flag; ``--help`` lists them and ``--print_config`` shows the resolved result.
"""

import importlib
import re
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelSummary, ProgressBar
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
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule
from {{ cookiecutter.package_name }}.engine.distributed import (
    end_process_group,
    launches_this_command_again,
    set_collective_timeout,
    stop_started_processes,
    timed_out_collective,
)
from {{ cookiecutter.package_name }}.engine.hardware import auto_precision, enable_tf32_if_supported
from {{ cookiecutter.package_name }}.engine.predict import predict_to_csv
from {{ cookiecutter.package_name }}.engine.sizes import DATA_SIZES, drop_sizes_not_taken, size_from_data
from {{ cookiecutter.package_name }}.module import Classifier


def concise(message: str) -> str:
    """One line out of jsonargparse's multi-line report: the full key, then the first real reason.

    A failed match against ``Optional[...]`` or a class path lists every alternative it tried;
    the reader needs the key and what was wrong with the value, not the list.
    """
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = [
        line.removeprefix("- ")
        for line in lines
        if not line.startswith(("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value"))
        and "NoneType" not in line
        and not line.removeprefix("- ").startswith("Problem with given class_path")
    ]
    given = next((line for line in lines if line.startswith("Given value:")), None)
    reason = reasons[0] if reasons else lines[-1]
    if given and reason.startswith("Expected") and "value" not in reason:
        reason = f"{reason} ({given[0].lower()}{given[1:]})"
    return f"{'.'.join(keys)}: {reason}" if keys else reason


class ConciseErrorParser(LightningArgumentParser):
    """Reports a bad key or value in one line instead of the usage text and a nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {concise(message)}\n(for every key and its type: {self.prog} --help)\n")
        raise SystemExit(2)


def class_of(component: Namespace) -> type:
    """The class that a ``class_path`` entry of the config names."""
    module, _, name = component.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class TrainCLI(LightningCLI):
    def __init__(self, *args: Any, in_process: bool = False, **kwargs: Any) -> None:
        self.in_process = in_process  # called with `args` (tests, tune.py), not as `python train.py`
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Checkpoint to resume from: a file path, or 'last' for the newest last.ckpt or"
            " interrupted.ckpt under trainer.default_root_dir.",
        )
        parser.add_argument(
            "--predict_path",
            type=str | None,
            default=None,
            help="Instead of training: predict the DataModule's predict split with the --ckpt_path"
            " checkpoint and write a CSV file here (index, prediction, probability, label).",
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

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        ckpt_path = self.config.ckpt_path
        predict_path = self.config.predict_path
        if predict_path is not None and ckpt_path is None:
            self.parser.error("predict_path: needs --ckpt_path, the checkpoint to predict with (or 'last')")
        if predict_path is not None and Path(predict_path).is_dir():
            self.parser.error(f"predict_path: '{predict_path}' is a directory; name the CSV file to write")
        if ckpt_path == "last":
            root = Path(trainer.default_root_dir)
            candidates = [
                *root.glob("**/checkpoints/last.ckpt"),
                *root.glob("**/checkpoints/interrupted.ckpt"),
            ]
            newest = max(candidates, key=lambda p: p.stat().st_mtime, default=None)
            if newest is None:
                self.parser.error(f"ckpt_path: 'last' found no last.ckpt or interrupted.ckpt under '{root}'")
            self.config.ckpt_path = str(newest)
        elif ckpt_path is not None and not Path(ckpt_path).exists():  # (FSDP saves folders)
            self.parser.error(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
        # The flags switch off the Rich progress bar and summary of the default config, as they
        # would Lightning's own, instead of clashing with them.
        switched_off = tuple(
            kind
            for flag, kind in (("enable_progress_bar", ProgressBar), ("enable_model_summary", ModelSummary))
            if trainer.get(flag) is False
        )
        if trainer.get("overfit_batches"):  # validation sees the training batches: nothing to stop on
            switched_off += (EarlyStopping,)
        if switched_off and trainer.callbacks:
            trainer.callbacks = [c for c in trainer.callbacks if not issubclass(class_of(c), switched_off)]
        if trainer.precision is None:
            trainer.precision = auto_precision(trainer.accelerator)
        self.tf32 = enable_tf32_if_supported(trainer.accelerator)

    def instantiate_classes(self) -> None:
        """Turns a value that a constructor rejects into the same one-line error as a parse error."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            self.parser.error(str(error))
        net_class = class_of(self.config.model.net)
        drop_sizes_not_taken(net_class, self.config.model.net.init_args)  # the config.yaml of the run
        drop_sizes_not_taken(net_class, self.model.hparams["net"]["init_args"])  # the checkpoints
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


@rank_zero_only
def report(message: str) -> None:
    print(message, flush=True)


def main(default_config: Path, args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> TrainCLI:
    """Train with early stopping and checkpoints, then test the best checkpoint; or, with
    ``--predict_path``, only predict with the ``--ckpt_path`` checkpoint and write a CSV file.

    Exit status: 0 done, 1 non-finite loss or Ctrl-C, 2 bad configuration, 143 SIGTERM; the last
    two leave a checkpoint to resume from. ``callbacks`` join the Trainer's own: the hyperparameter
    search (``tune.py``) passes its pruning hook here, an object no config file can hold.
    """
    cli = TrainCLI(
        Classifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=args,
        in_process=args is not None,
        auto_configure_optimizers=False,  # the optimizer and schedule are the model's arguments
        parser_class=ConciseErrorParser,
        parser_kwargs={"default_config_files": [str(default_config)]},
        # Each run logs to a new version directory; fit and test of one run share it.
        save_config_kwargs={"overwrite": True},
        # Added to whatever trainer.callbacks lists: the guarantees of resume and of a clean stop
        # must not depend on a config file that replaces the list.
        trainer_defaults={
            "callbacks": [RandomStateInCheckpoint(), InterruptCheckpoint(), StopOnNonFiniteLoss(), *callbacks]
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
    try:
        if cli.config.predict_path is not None:
            model_class, ckpt_path = type(cli.model), cli.config.ckpt_path
            writer = predict_to_csv(trainer, model_class, ckpt_path, cli.datamodule, cli.config.predict_path)
            end_process_group()
            report(writer.summary())
            return cli
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    except MisconfigurationException as error:  # settings that only clash once the Trainer runs
        cli.parser.error(str(error))
    except NonFiniteLossError as error:
        saved = Path(checkpoint.dirpath).glob("*.ckpt") if checkpoint and checkpoint.dirpath else []
        last = max(saved, key=lambda path: path.stat().st_mtime, default=None)
        kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint had been written yet"
        sys.stderr.write(f"error: {error}. Training stopped before the update{kept}\n")
        raise SystemExit(1) from None
    except SIGTERMException:
        raise SystemExit(143) from None  # 128 + SIGTERM, what schedulers expect of a terminated job
    except RuntimeError as error:
        timed_out = timed_out_collective(error)
        if timed_out is None:
            raise
        stop_started_processes(trainer)  # one of them is stuck: it would never exit
        sys.stderr.write(f"error: {timed_out}\n")
        raise SystemExit(1) from None
    end_process_group()
    if trainer.log_dir is not None and trainer.logger is not None:
        report(f"Logs: {trainer.log_dir}  (view with: tensorboard --logdir {trainer.logger.save_dir})")
    if best:
        score = checkpoint.best_model_score
        scored = f"  ({checkpoint.monitor} = {score:.4f})" if score is not None else ""
        report(f"Best checkpoint: {best}{scored}")
    return cli
