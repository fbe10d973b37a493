"""The callbacks that ``cli.py`` always adds (with ``non_finite.py``) and those the default config lists."""

import math
import os
import random
import shlex
import signal
import subprocess
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

from {{ cookiecutter.package_name }}.engine.run_identity import launch, newest_in, run_length


class RichProgressBar(LightningRichProgressBar):
    """Lightning's, with the run's time and an estimate of what is left; it reads the metrics only when
    it redraws: Lightning's reads them from the device after every batch (a GPU sync per step)."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.last_drawn = -math.inf
        self.run_start = time.monotonic()
        self.first_epoch = 0
        self.run_end: float | None = None  # on time.monotonic(), at the pace so far

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.run_start, self.first_epoch = time.monotonic(), trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        done, max_epochs = trainer.current_epoch - self.first_epoch, trainer.max_epochs
        if done > 0 and max_epochs is not None and max_epochs > 0:
            self.run_end = now + (now - self.run_start) / done * (max_epochs - trainer.current_epoch)
        super().on_train_epoch_start(trainer, pl_module)
        self.last_drawn = -math.inf  # Rich needs each epoch's first batch for its it/s

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        last_batch = batch_idx + 1 == self.total_train_batches
        if last_batch or now - self.last_drawn >= 1 / max(self.refresh_rate, 1):
            self.last_drawn = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        """Without ``v_num`` (the run's directory is printed by name), with ``run: 0:42 left: ~3:10``."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        now = time.monotonic()
        metrics["run"] = clock(now - self.run_start)
        if self.run_end is not None:
            metrics["left"] = f"~{clock(max(self.run_end - now, 0))}"
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
    """Gives the module the data's example inputs (summary, graph) and keeps them in every checkpoint,
    so that export traces the network with real inputs of the right dtype."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if pl_module.example_input_array is None and trainer.datamodule is not None:
            pl_module.example_input_array = getattr(trainer.datamodule, "example_input_array", None)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if isinstance(pl_module.example_input_array, torch.Tensor):
            checkpoint["example_input_array"] = pl_module.example_input_array.detach().cpu()


class RandomStateInCheckpoint(Callback):
    """Keeps torch's, NumPy's and Python's random states in checkpoints: Lightning does not, so a resumed
    run's dropout would differ. Stored as tensors and numbers, for ``torch.load(weights_only=True)``."""

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
        """Put back here, after the set-up work (graph tracing, summary) that draws from them too."""
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


class RunEndInCheckpoint(Callback):
    """Keeps the run's length settings (``run_identity.changed_horizon``) and ``should_stop`` in checkpoints:
    Lightning does not restore ``should_stop``, so each resume of a stopped run would train one more epoch."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.resumed_stopped = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        return {"should_stop": bool(self.trainer.should_stop), "horizon": run_length(self.trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed_stopped = bool(state_dict.get("should_stop"))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = trainer.should_stop or self.resumed_stopped
        self.resumed_stopped = False


class InterruptCheckpoint(Callback):
    """On Ctrl-C, SIGTERM or SLURM's time-limit SIGUSR1 (then requeues), saves ``interrupted.ckpt`` if a
    training step is unsaved, and prints the command that resumes. Not Lightning's ``OnExceptionCheckpoint``
    (saves on any error, in validation or test too, and makes every ``fit()`` resume from ``last``) nor its
    SLURM requeue (saves ``hpc_ckpt_N.ckpt`` mid-step, outside the run directory)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.saved_step = 0
        self.job = ""
        self.requeue = False  # SLURM asked for a stop before its time limit: requeue the job

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``#SBATCH --signal=SIGUSR1@120``: set before Lightning's SLURM handler, which then stands aside."""
        started = launch()
        job = started[0] if started else ""
        if job.startswith("slurm-") and threading.current_thread() is threading.main_thread():
            self.job = job.removeprefix("slurm-")
            signal.signal(signal.SIGUSR1, self.time_nearly_up)

    def time_nearly_up(self, signum: int, frame: object) -> None:
        """Stops as SIGTERM does, which Lightning passes to every process at the same step; then requeues."""
        self.requeue = True
        os.kill(os.getpid(), signal.SIGTERM)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        checkpoint = model_checkpoint(trainer)
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        if checkpoint is not None and checkpoint.dirpath is not None:
            folder = Path(checkpoint.dirpath)
        self.path = folder / "interrupted.ckpt"

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.saved_step = trainer.global_step  # a new run, or exactly the checkpoint it resumed from

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # One process: Lightning checks after the step, so a stop at an epoch's start would save a step.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if self.path is None or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return  # a bug or a non-finite loss: nothing worth resuming from was produced
        # Before an epoch's first step or in validation it would resume without that epoch's metrics.
        saved = trainer.training and trainer.global_step > self.saved_step
        if saved:
            trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(self.what_to_do(trainer, exception, saved), file=sys.stderr, flush=True)

    def what_to_do(
        self, trainer: L.Trainer, exception: BaseException, saved: bool, tested: bool = False
    ) -> str:
        """What stopped, what is on disk, and the command that goes on, as printed."""
        assert self.path is not None
        cause = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        kept = self.path if saved else newest_in(self.path.parent)
        command = resume_command(trainer, kept)
        finished = trainer.should_stop or trainer.current_epoch >= (trainer.max_epochs or math.inf)
        if tested or trainer.testing or (finished and not saved):
            test = "stopped the final test" if trainer.testing else "the final test did not run"
            return f"\n{cause}: {test}; training had finished.\nTest with: {command}"
        during = "during validation " if trainer.validating else ""
        stopped = f"\n{cause}: stopped {during}at epoch {trainer.current_epoch}, step {trainer.global_step}"
        if saved:
            return f"{stopped}. Saved {kept}\nResume with: {command}"
        if kept is None:
            return f"{stopped}, before any checkpoint; start again"
        return f"{stopped}; kept {kept}\nResume with: {command}"

    def requeue_job(self) -> str:
        """``scontrol requeue``: the same command runs again and continues this run. Returns what happened."""
        command = ["scontrol", "requeue", self.job]
        try:
            subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as error:
            reason = str(getattr(error, "stderr", None) or error).strip()
            return f"SLURM: could not requeue job {self.job} ({reason}); resubmit the command to continue"
        return f"SLURM: requeued job {self.job}; when it starts again it continues this run"


def resume_command(trainer: L.Trainer, checkpoint: Path | None) -> str:
    """``python train.py --config <the run's> --ckpt_path <checkpoint>``, absolute and shell-quoted."""
    program = Path(sys.argv[0]).resolve()
    words = ["python", program.name if program.parent == Path.cwd() else str(program)]
    config = Path(trainer.log_dir or "") / "config.yaml"
    if config.is_file():
        words += ["--config", str(config.resolve())]
    return shlex.join([*words, "--ckpt_path", str(checkpoint.resolve()) if checkpoint else "last"])


class FinalMetricsInHParams(Callback):
    """After the test, logs the hyperparameters with the best validation score and the test metrics, for
    TensorBoard's HParams tab: Lightning logs them at the start, when no metric is known yet."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        metrics = {
            "hparams/" + name.replace("/", "_"): float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("test/")
        }
        checkpoint = model_checkpoint(trainer)
        if checkpoint is not None and checkpoint.best_model_score is not None:
            best = "hparams/best_" + checkpoint.monitor.replace("/", "_")
            metrics[best] = float(checkpoint.best_model_score)
        hparams = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            hparams.update(trainer.datamodule.hparams)
        public = {name: value for name, value in hparams.items() if not name.startswith("_")}  # not the CLI's
        for logger in loggers:
            logger.log_hyperparams(public, metrics=metrics)
