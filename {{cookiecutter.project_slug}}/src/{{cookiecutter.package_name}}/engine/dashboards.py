"""What TensorBoard shows of any run beyond the task's metrics: its speed, and the learning rates' names
(each task adds its own dashboards through ``configure_callbacks``)."""

import errno
import functools
import os
import time
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import loggers
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.data import extract_batch_size

Base = loggers.TensorBoardLogger


def naming_the_event_file(write: Callable[..., Any]) -> Callable[..., Any]:
    """Raises a full disk as ``OSError(ENOSPC)`` naming the event file: Lightning reports an error of
    ``log_metrics`` as a value it cannot log."""

    @functools.wraps(write)
    def writing(self: "TensorBoardLogger", *args: Any, **kwargs: Any) -> Any:
        try:
            return write(self, *args, **kwargs)
        except Exception as error:
            cause: BaseException | None = error
            while cause is not None and not (isinstance(cause, OSError) and cause.errno == errno.ENOSPC):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            self.stopped_by_full_disk = True
            events = sorted(Path(self.log_dir).glob("events.out.tfevents.*"), key=os.path.getmtime)
            path = str(events[-1] if events else self.log_dir)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None

    return writing


class TensorBoardLogger(Base):
    """Lightning's, naming a full disk, without the CLI's keys among the hyperparameters, and without
    ``**kwargs``, which make the CLI read ``SummaryWriter`` at every start (measured: 100-230 ms, not 35)."""

    stopped_by_full_disk = False

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
    ) -> None:
        super().__init__(save_dir, name, version, log_graph, default_hp_metric)

    experiment = property(naming_the_event_file(Base.experiment.fget))  # its first use writes the file
    log_metrics = naming_the_event_file(Base.log_metrics)
    log_graph = naming_the_event_file(Base.log_graph)
    save = naming_the_event_file(Base.save)

    @naming_the_event_file
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Without LightningCLI's ``_instantiator``, ``_class_path``: not choices of the run."""
        given = vars(params) if isinstance(params, Namespace) else params
        super().log_hyperparams({k: v for k, v in given.items() if not k.startswith("_")}, *args, **kwargs)

    @naming_the_event_file
    def finalize(self, status: str) -> None:
        try:
            super().finalize(status)
        except (OSError, ValueError):
            if not self.stopped_by_full_disk:  # Lightning finalizes after it too: its flush fails again
                raise


def tensorboard_logger(trainer: L.Trainer) -> loggers.TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one: with other loggers, or none, images are skipped."""
    return next((lg for lg in trainer.loggers if isinstance(lg, loggers.TensorBoardLogger)), None)


def logging_step(trainer: L.Trainer) -> int:
    """The step of the scalars Lightning logs now, for images to line up with: in a fit, its latest."""
    return trainer.global_step - (trainer.state.fn == "fit")


def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """Each optimizer's rate, named as ``LearningRateMonitor`` names it (``lr-AdamW``, ``lr-AdamW-1``,
    ``lr-AdamW/pg2``): its naming is private and needs a logger."""
    named = {id(config.scheduler.optimizer): config.name for config in trainer.lr_scheduler_configs}
    seen: Counter[str] = Counter()
    rates: dict[str, float] = {}
    for optimizer in sorted(trainer.optimizers, key=lambda optimizer: id(optimizer) not in named):
        name = named.get(id(optimizer))
        if name is None:
            kind = type(optimizer).__name__
            name = "lr-" + kind + ("-" + str(seen[kind]) if seen[kind] else "")
            seen[kind] += 1
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            group_name = group.get("name", "pg" + str(index + 1) if len(groups) > 1 else None)
            rates[name + "/" + group_name if group_name else name] = float(group["lr"])
    return rates


def wait_for(device: torch.device) -> None:
    """Lets queued GPU work finish, so that a clock reading includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(Callback):
    """Logs ``train/epoch_time_s`` and ``train/samples_per_s`` (all processes, training alone) per epoch:
    Lightning's ``ThroughputMonitor`` waits for the GPU after every batch, this once per epoch."""

    start = validation_start = validation_s = 0.0
    samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.samples, self.validation_s = 0, 0.0
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.samples += extract_batch_size(batch)  # shapes only: no wait for the device

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wait_for(pl_module.device)
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation_s += time.perf_counter() - self.validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wait_for(pl_module.device)
        epoch_s = time.perf_counter() - self.start
        mine = torch.tensor([self.samples, epoch_s - self.validation_s, epoch_s], device=pl_module.device)
        everyone = trainer.strategy.all_gather(mine).view(-1, 3).cpu()  # (processes, 3)
        samples, train_s, epoch_s = everyone[:, 0].sum().item(), *everyone[:, 1:].amax(dim=0).tolist()
        pl_module.log("train/epoch_time_s", epoch_s, batch_size=1)
        pl_module.log("train/samples_per_s", samples / max(train_s, 1e-9), batch_size=1)
