"""The callbacks that ``cli.py`` always adds (with ``non_finite.py``) and those the default config lists."""

import math
import os
import random
import shlex
import signal
import sys
import threading
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

from {{ cookiecutter.package_name }}.engine.checkpoint_fit import run_length
from {{ cookiecutter.package_name }}.engine.run_identity import launch, newest_in


class RichProgressBar(LightningRichProgressBar):
    """Shows the run's time and what is left; reads metrics and redraws ``refresh_rate`` times a second
    (Lightning's: a GPU sync every step, 100 redraws a second, 4% of a CPU run's time)."""

    drawn, start, first_epoch = -math.inf, 0.0, 0  # on time.monotonic(): the last redraw, the run's start
    end: float | None = None  # of the run, at the pace so far

    def __init__(self, refresh_rate: int = 4, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.start, self.first_epoch = time.monotonic(), trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now, done, epochs = time.monotonic(), trainer.current_epoch - self.first_epoch, trainer.max_epochs
        if done > 0 and epochs is not None and epochs > 0:
            self.end = now + (now - self.start) / done * (epochs - trainer.current_epoch)
        super().on_train_epoch_start(trainer, pl_module)
        self.drawn = -math.inf  # Rich needs each epoch's first batch for its it/s

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if batch_idx + 1 == self.total_train_batches or now - self.drawn >= 1 / max(self.refresh_rate, 1):
            self.drawn = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the run's directory is printed by name
        now = time.monotonic()
        metrics["run"] = clock(now - self.start)
        if self.end is not None:
            metrics["left"] = "~" + clock(max(self.end - now, 0))
        return metrics


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def model_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ``ModelCheckpoint`` that keeps the best checkpoint (by the monitored metric), else the first."""
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]  # type: ignore[attr-defined]
    return next((c for c in checkpoints if c.monitor), checkpoints[0] if checkpoints else None)


class RunStateInCheckpoint(Callback):
    """Keeps what Lightning does not in checkpoints: random states (for a resume's dropout), ``should_stop``
    (else each resume of a stopped run trains an epoch more), the run's length, the example inputs."""

    trainer: L.Trainer | None = None  # set up with the run
    resumed: dict[str, Any] | None = None  # from the checkpoint, until training starts

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer  # the example inputs: for the summary, the graph and export (their dtype)
        if pl_module.example_input_array is None and trainer.datamodule is not None:
            pl_module.example_input_array = getattr(trainer.datamodule, "example_input_array", None)

    def state_dict(self) -> dict[str, Any]:
        algorithm, keys, position, has_gauss, gauss = np.random.get_state()
        state = {  # tensors and plain values, for torch.load(weights_only=True)
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (algorithm, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }
        if self.trainer is not None:  # "horizon": read by checkpoint_fit.checkpoint_misfit
            state.update(should_stop=bool(self.trainer.should_stop), horizon=run_length(self.trainer))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed = state_dict

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if isinstance(pl_module.example_input_array, torch.Tensor):
            checkpoint["example_input_array"] = pl_module.example_input_array.detach().cpu()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put back here, after the set-up work (graph tracing, summary) that draws random numbers too."""
        state, self.resumed = self.resumed or {}, None
        trainer.should_stop = trainer.should_stop or bool(state.get("should_stop"))
        if "torch" in state:
            torch.set_rng_state(state["torch"])
            if state["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            algorithm, keys, position, has_gauss, gauss = state["numpy"]
            np.random.set_state((algorithm, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
            random.setstate(state["python"])


class InterruptCheckpoint(Callback):
    """On Ctrl-C, SIGTERM or SLURM's SIGUSR1, saves ``interrupted.ckpt`` if a step is unsaved, prints how to
    resume. Not Lightning's ``OnExceptionCheckpoint`` (any error) nor SLURM requeue (saves mid-step)."""

    path = Path("interrupted.ckpt")  # set up beside the run's checkpoints
    saved_step = 0
    job = ""  # the SLURM job's id, where SIGUSR1 stops the run
    requeue = False  # SLURM asked for a stop before its time limit: requeue the job

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``#SBATCH --signal=SIGUSR1@120``: set before Lightning's SLURM handler, which then stands aside."""
        job = (launch() or ("",))[0]
        if job.startswith("slurm-") and threading.current_thread() is threading.main_thread():
            self.job = job.removeprefix("slurm-")
            signal.signal(signal.SIGUSR1, self.time_nearly_up)

    def time_nearly_up(self, signum: int, frame: object) -> None:
        """Stops as SIGTERM does, which Lightning passes to every process at the same step; then requeues."""
        self.requeue = True
        os.kill(os.getpid(), signal.SIGTERM)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        configured = getattr(model_checkpoint(trainer), "dirpath", None)  # else where Lightning puts them
        folder = configured or Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.path = Path(folder) / "interrupted.ckpt"

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.saved_step = trainer.global_step  # a new run, or exactly the checkpoint it resumed from

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # One process: Lightning checks after the step, so a stop at an epoch's start would save a step.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return  # a bug or a non-finite loss: nothing worth resuming from was produced
        saved = trainer.training and trainer.global_step > self.saved_step  # not in validation: its metrics
        if saved:
            trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(self.what_to_do(trainer, exception, saved), file=sys.stderr, flush=True)

    def what_to_do(
        self, trainer: L.Trainer, exception: BaseException, saved: bool, tested: bool = False
    ) -> str:
        """What stopped, what is on disk, and the command that goes on (absolute and shell-quoted)."""
        cause = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        kept = self.path if saved else newest_in(self.path.parent)
        program = Path(sys.argv[0]).resolve()
        words = ["python", program.name if program.parent == Path.cwd() else str(program)]
        if (config := Path(trainer.log_dir or "") / "config.yaml").is_file():
            words += ["--config", str(config.resolve())]
        command = shlex.join([*words, "--ckpt_path", str(kept.resolve()) if kept else "last"])
        finished = trainer.should_stop or trainer.current_epoch >= (trainer.max_epochs or math.inf)
        if tested or trainer.testing or (finished and not saved):
            test = "stopped the final test" if trainer.testing else "the final test did not run"
            return f"\n{cause}: {test}; training had finished.\nTest with: {command}"
        during = "during validation " if trainer.validating else ""
        stopped = f"\n{cause}: stopped {during}at epoch {trainer.current_epoch}, step {trainer.global_step}"
        if kept is None:
            return f"{stopped}, before any checkpoint; start again"
        return f"{stopped}{'. Saved' if saved else '; kept'} {kept}\nResume with: {command}"


class FinalMetricsInHParams(Callback):
    """Logs the hyperparameters with the final metrics for TensorBoard's HParams tab (Lightning's: none)."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            name: value for name, value in trainer.callback_metrics.items() if name.startswith("test/")
        }
        checkpoint = model_checkpoint(trainer)
        if checkpoint is not None and checkpoint.best_model_score is not None:
            metrics["best_" + checkpoint.monitor] = checkpoint.best_model_score
        tags = {"hparams/" + name.replace("/", "_"): float(value) for name, value in metrics.items()}
        hparams = {**pl_module.hparams, **(trainer.datamodule.hparams if trainer.datamodule else {})}
        public = {name: value for name, value in hparams.items() if not name.startswith("_")}  # not the CLI's
        for logger in [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]:
            logger.log_hyperparams(public, metrics=tags)
