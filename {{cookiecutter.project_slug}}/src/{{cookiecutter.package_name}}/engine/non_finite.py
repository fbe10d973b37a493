"""Stops the run at a NaN or infinite loss, with the step named, before the weights or a checkpoint take
it, without making the device or the other processes wait at every step."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written after that step."""


@dataclass
class _Step:
    epoch: int
    step: int
    loss: Tensor  # unscaled, still on the device
    gradient_finite: Tensor | None  # after DDP averaged the gradients; None: not checked


class StopOnNonFiniteLoss(Callback):
    """Raises at a non-finite training or ``monitor`` loss, before the step's checkpoints; Lightning has
    no such guard, and ``EarlyStopping(check_finite=True)`` saves the bad epoch's checkpoints and exits 0.

    Where a read of the loss would wait for the device (a GPU, several processes, a gradient scaler),
    a bad step's gradients are zeroed on the device (a scaler skips the step itself) and the losses
    are read where metrics are: every ``log_every_n_steps`` steps, before validation and checkpoints.
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self._deferred = True
        self._unread: list[_Step] = []
        self._at = (0, 0)
        self._gradient_finite: Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._deferred, self._unread = not reads_for_free(trainer), []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._at, self._gradient_finite = (trainer.current_epoch, trainer.global_step), None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if not self._deferred and not math.isfinite(loss.item()):
            raise NonFiniteLossError(describe(_Step(*self._at, loss.detach(), None), loss_finite=False))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._deferred or has_scaler(trainer):
            return
        gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if gradients:
            finite = torch.nn.utils.get_total_norm(gradients).isfinite()
            not_finite = ~finite
            for gradient in gradients:  # on the device: nothing waits for the result
                gradient.masked_fill_(not_finite.to(gradient.device), 0.0)
            self._gradient_finite = finite

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._deferred:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor):
            self._unread.append(_Step(*self._at, loss.detach(), self._gradient_finite))
        every = trainer.log_every_n_steps
        if every > 0 and trainer.global_step % every == 0:  # where Lightning writes the step's logs
            self._check(trainer, together=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._check(trainer, together=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, together=True)

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self._check(trainer, together=False)  # before interrupted.ckpt and step-based checkpoints too

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or math.isfinite(value):
            return  # (the value is the same on every process, so all of them raise together)
        where = f"at epoch {trainer.current_epoch}, step {trainer.global_step}"
        raise NonFiniteLossError(f"{self.monitor} is {value.item()} {where}")

    def _check(self, trainer: L.Trainer, together: bool) -> None:
        """Reads the kept steps in one wait; ``together``: in a hook that every process calls."""
        steps, self._unread = self._unread, []
        alone = trainer.world_size == 1
        strategy = trainer.strategy  # DDP averages the gradients: a bad one is bad on every process alike
        same_gradients = alone or (
            isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)
        )
        bad_loss: _Step | None = None
        for step, loss_finite, gradient_finite in zip(steps, *read_flags(steps), strict=True):
            if (same_gradients and not gradient_finite) or (alone and not loss_finite):
                raise NonFiniteLossError(describe(step, loss_finite))
            if not loss_finite and bad_loss is None:
                bad_loss = step
        if alone:
            return
        if not together:
            if bad_loss is not None:
                self._unread = steps  # for the processes to compare at the next joint check
            return
        if trainer.strategy.reduce_boolean_decision(bad_loss is not None, all=False):
            if bad_loss is not None:
                raise NonFiniteLossError(describe(bad_loss, loss_finite=False))
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
            raise NonFiniteLossError(f"train/loss is non-finite on another process (seen at {where})")


def reads_for_free(trainer: L.Trainer) -> bool:
    """One process on the CPU without a loss scaler: the loss can be read at once, waiting for nothing."""
    return trainer.world_size == 1 and trainer.strategy.root_device.type == "cpu" and not has_scaler(trainer)


def has_scaler(trainer: L.Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def read_flags(steps: list[_Step]) -> tuple[list[bool], list[bool]]:
    """Whether each step's loss and gradient were finite, read back from the device at once."""
    if not steps:
        return [], []
    losses = torch.stack([step.loss for step in steps]).isfinite()
    unchecked = torch.ones_like(losses[0])
    gradients = [unchecked if step.gradient_finite is None else step.gradient_finite for step in steps]
    loss_flags, gradient_flags = torch.stack([losses, torch.stack(gradients).to(losses.device)]).tolist()
    return loss_flags, gradient_flags


def describe(step: _Step, loss_finite: bool) -> str:
    where = f"at epoch {step.epoch}, step {step.step}"
    if not loss_finite:
        return f"train/loss is {step.loss.item()} {where}"
    return f"the gradients are non-finite {where}, train/loss {step.loss.item():.4g} on this process"
