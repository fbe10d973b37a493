"""Callbacks of the Trainer: the ones ``cli.py`` always adds (with ``non_finite.py``), and the ones the
default config lists."""

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException


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
    """The ``ModelCheckpoint`` that keeps the best checkpoint (by the monitored metric), else the first."""
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]  # type: ignore[attr-defined]
    return next((c for c in checkpoints if c.monitor), checkpoints[0] if checkpoints else None)


class ExampleInputsInCheckpoint(Callback):
    """Gives any module the data's example inputs (for the summary and the graph) and keeps them in
    every checkpoint: export traces and checks the network with real inputs of the right dtype."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if pl_module.example_input_array is None and trainer.datamodule is not None:
            pl_module.example_input_array = getattr(trainer.datamodule, "example_input_array", None)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if isinstance(pl_module.example_input_array, torch.Tensor):
            checkpoint["example_input_array"] = pl_module.example_input_array.detach().cpu()


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


class InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM (a cluster's preemption), saves ``interrupted.ckpt`` next to the others.

    Lightning only looks at SIGTERM between epochs when it runs in one process; this checks
    before every batch, so a preempted job stops within one step. Resume with
    ``--ckpt_path last``, which picks the newest of ``last.ckpt`` and ``interrupted.ckpt``.
    (Lightning's ``OnExceptionCheckpoint`` would also turn every ``fit()`` into a resume attempt.)
    Only a stop during a training epoch, after a step that no checkpoint holds yet, is saved: one
    taken before the epoch's first step or during validation would resume into an epoch without
    its validation metrics (early stopping could never continue from it), and one taken during the
    final test would hold the best epoch's weights; there, the newest checkpoint on disk is kept.
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.path: Path | None = None
        self.unsaved_steps = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        checkpoint = model_checkpoint(trainer)
        if checkpoint is not None and checkpoint.dirpath is not None:
            self.path = Path(checkpoint.dirpath) / self.filename
        else:
            self.path = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / self.filename

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.unsaved_steps = False  # a new run, or exactly the checkpoint it resumed from

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.unsaved_steps = True

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.unsaved_steps = False

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
        saved = trainer.training and self.unsaved_steps
        if saved:
            trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(self.what_to_do(trainer, exception, saved), file=sys.stderr, flush=True)

    def what_to_do(self, trainer: L.Trainer, exception: BaseException, saved: bool) -> str:
        """What was stopped, what is on disk, and the command that continues the run, as printed."""
        assert self.path is not None
        cause = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        config = Path(trainer.log_dir or "") / "config.yaml"
        run = f"python train.py{f' --config {config}' if config.is_file() else ''} --ckpt_path"
        kept = newest_checkpoint(self.path.parent)
        if trainer.testing:
            return f"\n{cause}: stopped the final test; training had finished.\nTest with: {run} {kept}"
        if saved:
            return f"\n{cause}: stopped at {where}. Saved {self.path}\nResume with: {run} {self.path}"
        stopped = f"{cause}: stopped {'during validation ' if trainer.validating else ''}at {where}"
        if kept is None:
            return f"\n{stopped}, before any checkpoint; start again"
        return f"\n{stopped}; kept {kept}\nResume with: {run} {kept}"


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest of ``last.ckpt`` and ``interrupted.ckpt`` in ``directory``: what ``last`` resumes."""
    saved = [path for path in (directory / "last.ckpt", directory / "interrupted.ckpt") if path.is_file()]
    return max(saved, key=lambda path: path.stat().st_mtime_ns, default=None)


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
