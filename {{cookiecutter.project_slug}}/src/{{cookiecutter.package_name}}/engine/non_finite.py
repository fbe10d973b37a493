"""Stops the run at a NaN or infinite loss, naming the step, before the weights or a checkpoint take it,
without making the device or the other processes wait at every step."""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written after that step."""


class Step(NamedTuple):
    where: str  # "at epoch E, step S"
    loss: Tensor  # unscaled, still on the device
    finite: Tensor  # on the device: [the loss, the gradients (after DDP averaged them)]

    def error(self, loss_finite: bool = False) -> NonFiniteLossError:
        if loss_finite:
            loss = f"{self.loss.item():.4g} on this process"
            return NonFiniteLossError(f"the gradients are non-finite {self.where}, train/loss {loss}")
        return NonFiniteLossError(f"train/loss is {self.loss.item()} {self.where}")


class StopOnNonFiniteLoss(Callback):
    """Lightning has none (``EarlyStopping(check_finite=True)`` saves the bad checkpoints, exits 0). Where a
    read would wait for the device, bad gradients are zeroed on it and losses are read with the logs."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self._deferred = True
        self._unread: list[Step] = []
        self._where = ""  # of the step in flight, where its loss is read later
        self._gradients_finite: Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._deferred, self._unread = not reads_for_free(trainer), []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._deferred:
            self._where = at(trainer)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if not self._deferred and not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"train/loss is {loss.item()} {at(trainer)}")  # before the step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._deferred or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # read at once, or a scaler skips such steps itself
        gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if gradients:
            finite = torch.nn.utils.get_total_norm(gradients).isfinite()
            for gradient in gradients:  # on the device: nothing waits
                gradient.masked_fill_(~finite.to(gradient.device), 0.0)
            self._gradients_finite = finite

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        gradients, self._gradients_finite = self._gradients_finite, None
        if not self._deferred or not isinstance(loss, Tensor):
            return
        loss_finite = loss.detach().isfinite()
        gradients = torch.ones_like(loss_finite) if gradients is None else gradients.to(loss.device)
        self._unread.append(Step(self._where, loss.detach(), torch.stack([loss_finite, gradients])))
        if trainer.log_every_n_steps > 0 and trainer.global_step % trainer.log_every_n_steps == 0:
            self._check(trainer)  # where Lightning writes the step's logs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self._check(trainer)  # before interrupted.ckpt and step-based checkpoints too

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._check(trainer)
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(value):  # the same on every process: all raise
            raise NonFiniteLossError(f"{self.monitor} is {value.item()} {at(trainer)}")

    def _check(self, trainer: L.Trainer) -> None:
        """Reads the kept steps in one wait, in a hook that every process calls: they all stop together."""
        steps, self._unread = self._unread, []
        flags = zip(steps, read_flags(steps), strict=True)
        error = next(
            (step.error(loss) for step, (loss, gradients) in flags if not (loss and gradients)), None
        )
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(error is not None, all=False):
            where = at(trainer)
            raise error or NonFiniteLossError(f"train/loss is non-finite on another process (seen {where})")
        if error is not None:
            raise error


def at(trainer: L.Trainer) -> str:
    """Where the run is, for an error: "at epoch E, step S"."""
    return f"at epoch {trainer.current_epoch}, step {trainer.global_step}"


def reads_for_free(trainer: L.Trainer) -> bool:
    """One process on the CPU without a loss scaler: the loss can be read at once, waiting for nothing."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return trainer.world_size == 1 and trainer.strategy.root_device.type == "cpu" and scaler is None


def read_flags(steps: list[Step]) -> list[list[bool]]:
    """Whether each step's loss and gradients were finite, read back from the device in one wait."""
    return torch.stack([step.finite for step in steps]).tolist() if steps else []
