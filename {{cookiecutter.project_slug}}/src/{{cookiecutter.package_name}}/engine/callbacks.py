"""Callbacks of the Trainer: the ones ``cli.py`` always adds, and the ones the default config lists."""

import math
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.optim import Optimizer


class RichProgressBar(LightningRichProgressBar):
    """Lightning's Rich progress bar, fed at most ``refresh_rate`` times a second, with the time the
    whole run has taken and about how long it has left next to the epoch number.

    Lightning's own reads every progress-bar metric back from the device after each training
    batch (a GPU synchronisation per step, and for a small model a few percent of the step time),
    although it redraws only ``refresh_rate`` times a second. The last batch always updates it.
    """

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._last_update = -math.inf
        self._run_start = time.monotonic()
        self._first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._run_start, self._first_epoch = time.monotonic(), trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last_update = -math.inf  # the first batch of every epoch is drawn: Rich needs it for it/s

    def _get_train_description(self, current_epoch: int) -> str:
        """``Epoch 3/19 · 0:42 run, ~3:10 left``: Lightning's description (a private hook of its bar),
        then the run's elapsed time and, from the second epoch on, the remaining epochs at its pace."""
        elapsed = time.monotonic() - self._run_start
        description = f"{super()._get_train_description(current_epoch).rstrip()} · {clock(elapsed)} run"
        done, max_epochs = current_epoch - self._first_epoch, self.trainer.max_epochs
        if done > 0 and max_epochs is not None and max_epochs > 0:
            description += f", ~{clock(elapsed / done * (max_epochs - current_epoch))} left"
        return description

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        last_batch = batch_idx + 1 == self.total_train_batches
        if last_batch or now - self._last_update >= 1 / max(self.refresh_rate, 1):
            self._last_update = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        """Lightning's, without ``v_num``: the run's directory is printed at the end, by name."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``: hours only when there are any."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def model_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The first ``ModelCheckpoint``: the one that keeps the best and the last checkpoints."""
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)  # type: ignore[attr-defined]


class RandomStateInCheckpoint(Callback):
    """Saves the global random states of torch (CPU and CUDA), NumPy and Python in every checkpoint.

    Lightning restores weights, optimizer, scheduler and loop counters but not these, so after a
    resume dropout (and anything else drawn on the main process) would take a different course
    than in a run that never stopped. The states are put back when training starts, after the
    set-up work (graph tracing, model summary) that draws from them too. Stored as tensors and
    plain numbers, so that checkpoints still load with ``torch.load(weights_only=True)``.
    """

    def __init__(self) -> None:
        self.resumed_states: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        algorithm, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (algorithm, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed_states = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self.resumed_states = self.resumed_states, None
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        algorithm, keys, position, has_gauss, gauss = states["numpy"]
        np.random.set_state((algorithm, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(states["python"])

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.resumed_states = None  # loaded by a test or predict run, which has no use for them


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; no checkpoint was written after that step."""


@dataclass
class _Step:
    """What ``StopOnNonFiniteLoss`` keeps of one training step until the host next reads it."""

    epoch: int
    step: int
    loss: Tensor  # as ``training_step`` returned it: unscaled, still on the device
    gradient_finite: Tensor | None  # after DDP averaged the gradients; None: not checked here


class StopOnNonFiniteLoss(Callback):
    """Stops training at a NaN or infinite loss, without waiting for the device at every step.

    Every step, on the device: a non-finite gradient is replaced with zeros before the optimizer
    step (under ``16-mixed`` the gradient scaler skips such a step instead), so the weights never
    take it, and the loss is kept aside. The host reads what was kept only where it reads metrics
    anyway: every ``log_every_n_steps`` steps, before validation, at the end of each epoch and
    before any checkpoint is written. So the run stops within ``log_every_n_steps`` steps of the
    first bad one, names that step and its (unscaled) loss, and writes no checkpoint after it: the
    last good ``last.ckpt`` stays as it was. The validation loss is checked too, before the
    epoch's checkpoints: weights that overflow only on unseen data have diverged just the same.

    Several processes stop together without a collective in any training step: DDP averages the
    gradients, so a non-finite loss on one process makes every process's gradient non-finite, and
    all of them see it at the same log step. A loss that the gradients do not show (under a
    gradient scaler, or with sharded gradients) is compared across processes, by one all-reduce,
    before validation and at the end of the epoch: hooks that every process calls.
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self._unread: list[_Step] = []
        self._at = (0, 0)
        self._gradient_finite: Tensor | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._at, self._gradient_finite = (trainer.current_epoch, trainer.global_step), None

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # the scaler skips the step of a non-finite gradient (and lowers its scale)
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

        ``together``: in a hook that every process calls, where they compare their losses.
        Elsewhere each process decides alone, so only on what is the same on all of them.
        """
        several = trainer.world_size > 1
        steps, self._unread = self._unread, []
        loss_ok, gradient_ok = read_flags(steps)
        bad_loss = loss_ok.index(False) if False in loss_ok else None
        if False in gradient_ok and (not several or replicates_gradients(trainer.strategy)):
            first = min(gradient_ok.index(False), len(steps) if bad_loss is None else bad_loss)
            raise NonFiniteLossError(describe(steps[first], loss_ok[first]))  # on every process alike
        if bad_loss is not None and not several:
            raise NonFiniteLossError(describe(steps[bad_loss], False))
        if not several:
            return
        if not together:
            if bad_loss is not None:
                self._unread = steps[bad_loss:]  # for the processes to compare at the next joint check
            return
        if trainer.strategy.reduce_boolean_decision(bad_loss is not None, all=False):
            if bad_loss is not None:
                raise NonFiniteLossError(describe(steps[bad_loss], False))
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
            raise NonFiniteLossError(f"train/loss is non-finite on another process (seen at {where})")


def read_flags(steps: list[_Step]) -> tuple[list[bool], list[bool]]:
    """Whether each step's loss and gradient were finite, read back from the device at once."""
    if not steps:
        return [], []
    loss_ok = torch.stack([step.loss for step in steps]).isfinite()
    unchecked = torch.ones_like(loss_ok[0])
    gradient_ok = [unchecked if step.gradient_finite is None else step.gradient_finite for step in steps]
    loss_flags, gradient_flags = torch.stack([loss_ok, torch.stack(gradient_ok).to(loss_ok.device)]).tolist()
    return loss_flags, gradient_flags


def replicates_gradients(strategy: Strategy) -> bool:
    """DDP: after each backward pass every process holds the same, averaged, gradients."""
    return isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)


def describe(step: _Step, loss_finite: bool) -> str:
    where = f"at epoch {step.epoch}, step {step.step}"
    if not loss_finite:
        return f"train/loss is {step.loss.item()} {where}"
    return f"the gradients are non-finite {where}, train/loss {step.loss.item():.4g} on this process"


class InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM (a cluster's preemption), saves ``interrupted.ckpt`` next to the others.

    Lightning only looks at SIGTERM between epochs when it runs in one process; this checks
    before every batch, so a preempted job stops within one step. Resume with
    ``--ckpt_path last``, which picks the newest of ``last.ckpt`` and ``interrupted.ckpt``.
    (Lightning's ``OnExceptionCheckpoint`` would also turn every ``fit()`` into a resume attempt.)
    Only a stop during a training epoch is saved: a checkpoint taken during validation lacks the
    epoch's metrics (early stopping could never resume from it), and one taken during the final
    test would hold the best epoch's weights; there, the ``last.ckpt`` of the epoch before is kept.
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        checkpoint = model_checkpoint(trainer)
        if checkpoint is not None and checkpoint.dirpath is not None:
            self.path = Path(checkpoint.dirpath) / self.filename
        else:
            self.path = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / self.filename

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # With several processes, Lightning's own per-step check broadcasts the signal to all ranks.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self.path is None or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return  # a bug or a non-finite loss: nothing worth resuming from was produced
        if trainer.training:
            trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(self.what_to_do(trainer, exception), file=sys.stderr, flush=True)

    def what_to_do(self, trainer: L.Trainer, exception: BaseException) -> str:
        """What was stopped, what is on disk, and the command that continues the run, as printed."""
        assert self.path is not None
        cause = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        config = Path(trainer.log_dir or "") / "config.yaml"
        run = f"python train.py{f' --config {config}' if config.is_file() else ''} --ckpt_path"
        last = self.path.with_name("last.ckpt")
        if trainer.testing:
            return f"\n{cause}: stopped the final test; training had finished.\nTest with: {run} {last}"
        if trainer.training:
            return f"\n{cause}: stopped at {where}. Saved {self.path}\nResume with: {run} {self.path}"
        if not last.is_file():
            return f"\n{cause}: stopped during validation at {where}, before any checkpoint; start again"
        return f"\n{cause}: stopped during validation at {where}; kept {last}\nResume with: {run} {last}"


class FinalMetricsInHParams(Callback):
    """After the test, records the hyperparameters with the run's final metrics (TensorBoard's HParams tab).

    Lightning logs hyperparameters at the start of a run, when no metric is known yet; this adds
    the best validation score and the test metrics so that runs can be compared side by side.
    Only TensorBoard has such a tab: other loggers already hold both from the run itself.
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        metrics = {
            f"hparams/{name.replace('/', '_')}": float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("test/")
        }
        checkpoint = model_checkpoint(trainer)
        if checkpoint is not None and checkpoint.best_model_score is not None:
            best_name = f"hparams/best_{checkpoint.monitor.replace('/', '_')}"
            metrics[best_name] = float(checkpoint.best_model_score)
        hparams = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            hparams.update(trainer.datamodule.hparams)
        hparams = {
            name: value for name, value in hparams.items() if not name.startswith("_")
        }  # the CLI's own
        for logger in loggers:
            logger.log_hyperparams(hparams, metrics=metrics)
