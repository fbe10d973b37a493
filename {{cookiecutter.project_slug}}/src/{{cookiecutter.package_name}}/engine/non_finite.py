"""The guard against a NaN or infinite loss: the run stops with the bad step named, before the weights
or a checkpoint take it, without making the device or the other processes wait at every step."""

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
from torch.optim import Optimizer


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written after that step."""


@dataclass
class _Step:
    """What the guard keeps of one training step until the host next reads it."""

    epoch: int
    step: int
    loss: Tensor  # as ``training_step`` returned it: unscaled, still on the device
    gradient_finite: Tensor | None  # after DDP averaged the gradients; None: not checked here


class StopOnNonFiniteLoss(Callback):
    """Stops training at a NaN or infinite loss, before the weights or a checkpoint take it.

    Where reading the loss costs nothing (one process on the CPU, no gradient scaler), it is read
    before each backward pass, and a bad one stops the run there.

    Elsewhere that read would make the host wait for the device at every step, and under several
    processes for the others too, so the step's work stays on the device: a non-finite gradient is
    replaced with zeros before the optimizer step (a gradient scaler, as ``16-mixed`` has on GPUs,
    skips that step instead), and the loss, unscaled, is kept. The host reads what was kept where
    it reads metrics anyway: every ``log_every_n_steps`` steps, before validation, at the end of
    each epoch and before any checkpoint is written. So the run stops within ``log_every_n_steps``
    steps of the bad one, with that step named. Several processes stop together without a
    collective in any training step: DDP averages the gradients, so a non-finite loss on one
    process makes the gradient non-finite on all of them alike. A loss that the gradients do not
    show (under a scaler, or with sharded gradients) is compared across the processes, in one
    all-reduce, before validation and at the end of the epoch: hooks that every process calls.

    Either way no checkpoint is written after the bad step: the last good ``last.ckpt`` stays as it
    was. The validation loss is checked too, before the epoch's checkpoints: weights that overflow
    only on unseen data have diverged just the same.
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self._deferred = True
        self._unread: list[_Step] = []
        self._at = (0, 0)
        self._gradient_finite: Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._deferred, self._unread = not reads_for_free(trainer), []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._at, self._gradient_finite = (trainer.current_epoch, trainer.global_step), None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if not self._deferred and not math.isfinite(loss.item()):
            raise NonFiniteLossError(describe(_Step(*self._at, loss.detach(), None), loss_finite=False))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self._deferred or has_scaler(trainer):
            return  # the loss was read already; or the scaler skips a step with non-finite gradients
        gradients = [
            p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
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

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer, together=False)  # before interrupted.ckpt and step-based checkpoints too

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or math.isfinite(value):
            return  # (the value is the same on every process, so all of them raise together)
        raise NonFiniteLossError(
            f"{self.monitor} is {value.item()} at epoch {trainer.current_epoch}, step {trainer.global_step}"
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._unread = []

    def _check(self, trainer: L.Trainer, together: bool) -> None:
        """Reads the steps kept since the last check (one wait for the device); raises at the first bad one.

        ``together``: in a hook that every process calls, where the processes compare their losses.
        Elsewhere each process decides alone, so only on what is the same on all of them.
        """
        several = trainer.world_size > 1
        steps, self._unread = self._unread, []
        loss_ok, gradient_ok = read_flags(steps)
        bad_loss = loss_ok.index(False) if False in loss_ok else None
        if False in gradient_ok and (not several or replicates_gradients(trainer)):
            first = min(gradient_ok.index(False), len(steps) if bad_loss is None else bad_loss)
            raise NonFiniteLossError(describe(steps[first], loss_ok[first]))  # on every process alike
        if not several:
            if bad_loss is not None:
                raise NonFiniteLossError(describe(steps[bad_loss], loss_finite=False))
            return
        if not together:
            if bad_loss is not None:
                self._unread = steps[bad_loss:]  # for the processes to compare at the next joint check
            return
        if trainer.strategy.reduce_boolean_decision(bad_loss is not None, all=False):
            if bad_loss is not None:
                raise NonFiniteLossError(describe(steps[bad_loss], loss_finite=False))
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
            raise NonFiniteLossError(f"train/loss is non-finite on another process (seen at {where})")


def reads_for_free(trainer: L.Trainer) -> bool:
    """One process on the CPU without a loss scaler: the loss can be read at once, waiting for nothing."""
    return trainer.world_size == 1 and trainer.strategy.root_device.type == "cpu" and not has_scaler(trainer)


def has_scaler(trainer: L.Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def replicates_gradients(trainer: L.Trainer) -> bool:
    """DDP: after each backward pass every process holds the same, averaged, gradients."""
    strategy = trainer.strategy
    return isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)


def read_flags(steps: list[_Step]) -> tuple[list[bool], list[bool]]:
    """Whether each step's loss and gradient were finite, read back from the device at once."""
    if not steps:
        return [], []
    loss_ok = torch.stack([step.loss for step in steps]).isfinite()
    unchecked = torch.ones_like(loss_ok[0])
    gradient_ok = [unchecked if step.gradient_finite is None else step.gradient_finite for step in steps]
    loss_flags, gradient_flags = torch.stack([loss_ok, torch.stack(gradient_ok).to(loss_ok.device)]).tolist()
    return loss_flags, gradient_flags


def describe(step: _Step, loss_finite: bool) -> str:
    where = f"at epoch {step.epoch}, step {step.step}"
    if not loss_finite:
        return f"train/loss is {step.loss.item()} {where}"
    return f"the gradients are non-finite {where}, train/loss {step.loss.item():.4g} on this process"
