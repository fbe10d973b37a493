"""What TensorBoard shows of any run beyond the logged metrics: its speed. Each task adds its own
dashboards (``tasks/dashboards.py``) through ``configure_callbacks``."""

import contextlib
import errno
import os
import time
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import loggers
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.data import extract_batch_size


def disk_full(error: BaseException) -> bool:
    """Whether a full disk is what went wrong, also under the errors that wrap it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class TensorBoardLogger(loggers.TensorBoardLogger):
    """Lightning's TensorBoard logger with the writer's two options spelled out, hyperparameters
    without the CLI's own keys, and a full disk reported as such.

    Lightning's passes ``**kwargs`` on to ``SummaryWriter``; the CLI would then read both sources
    to find the keys it accepts, at every start (measured: 0.15 s of 0.4 s of ``--help``).
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | Path | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
    ) -> None:
        super().__init__(
            save_dir, name, version, log_graph, default_hp_metric, prefix, sub_dir,
            max_queue=max_queue, flush_secs=flush_secs,
        )  # fmt: skip
        self.disk_full = False

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Raises a full disk as ``OSError(ENOSPC)`` naming the event file: Lightning reports any error
        of ``log_metrics`` as a value it cannot log (``you tried to log 0.22 ...``)."""
        try:
            yield
        except Exception as error:
            if not disk_full(error):
                raise
            self.disk_full = True
            events = sorted(Path(self.log_dir).glob("events.out.tfevents.*"), key=os.path.getmtime)
            path = events[-1] if events else Path(self.log_dir)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter``, made on first use: it writes the event file's first record."""
        with self.writing():
            return super().experiment

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        with self.writing():
            super().log_metrics(metrics, step)

    def log_graph(self, model: L.LightningModule, input_array: torch.Tensor | None = None) -> None:
        with self.writing():
            super().log_graph(model, input_array)

    def save(self) -> None:
        with self.writing():
            super().save()

    def finalize(self, status: str) -> None:
        if self.disk_full:  # Lightning finalizes after the error too: the last flush would fail again
            with contextlib.suppress(OSError, ValueError):
                super().finalize(status)
            return
        with self.writing():
            super().finalize(status)

    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        """Without the keys LightningCLI adds for itself (``_instantiator``, ``_class_path``): they are
        not choices of the run, and would show in hparams.yaml and the HParams tab as if they were."""
        given = vars(params) if isinstance(params, Namespace) else params
        choices = {name: value for name, value in given.items() if not name.startswith("_")}
        with self.writing():
            super().log_hyperparams(choices, metrics=metrics, step=step)


def tensorboard_logger(trainer: L.Trainer) -> loggers.TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one: with other loggers, or none, images are skipped."""
    return next((lg for lg in trainer.loggers if isinstance(lg, loggers.TensorBoardLogger)), None)


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning logs the epoch's metrics at, so that the images line up with the scalars.

    (The count of optimizer steps, ``global_step``, is one ahead at validation; Lightning's own
    ``LearningRateMonitor`` reads the same counter.)
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def wait_for(device: torch.device) -> None:
    """Lets queued GPU work finish, so that a clock reading includes it (once per epoch, not per step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(Callback):
    """Logs ``train/epoch_time_s`` and ``train/samples_per_s`` after every training epoch.

    The first is the wall time of the whole epoch, validation included: what each epoch costs. The
    second counts the samples of the batches actually trained on, over all processes, per second
    of training alone: the figure to compare across batch sizes, workers and hardware. Per step it
    only adds up batch sizes; the processes exchange their figures once per epoch. (Lightning's
    ``ThroughputMonitor`` waits for the GPU after every batch, which would slow training down.)
    """

    def __init__(self) -> None:
        self.start = self.validation_start = time.perf_counter()
        self.validation_s = 0.0
        self.samples = 0

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
