"""Callbacks of the Trainer: the ones ``cli.py`` always adds (with ``non_finite.py``), and the ones the
default config lists."""

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
    """Lightning's Rich progress bar, fed at most ``refresh_rate`` times a second, with the time the
    whole run has taken (``run``) and about how long it has left (``left``) among its metrics.

    Lightning's own reads every progress-bar metric back from the device after each training
    batch (a GPU synchronisation per step, and for a small model a few percent of the step time),
    although it redraws only ``refresh_rate`` times a second. The last batch always updates it.
    """

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.last_drawn = -math.inf
        self.run_start = time.monotonic()
        self.first_epoch = 0
        self.run_end: float | None = None  # when the run should end at its pace so far, on time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.run_start, self.first_epoch = time.monotonic(), trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From the second epoch on: the remaining epochs at the pace of those this run has done."""
        now = time.monotonic()
        done, max_epochs = trainer.current_epoch - self.first_epoch, trainer.max_epochs
        if done > 0 and max_epochs is not None and max_epochs > 0:
            self.run_end = now + (now - self.run_start) / done * (max_epochs - trainer.current_epoch)
        super().on_train_epoch_start(trainer, pl_module)
        self.last_drawn = -math.inf  # the first batch of every epoch is drawn: Rich needs it for it/s

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        last_batch = batch_idx + 1 == self.total_train_batches
        if last_batch or now - self.last_drawn >= 1 / max(self.refresh_rate, 1):
            self.last_drawn = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        """Lightning's, without ``v_num`` (the run's directory is printed at the end, by name), with
        ``run`` and ``left``: ``run: 0:42 left: ~3:10``."""
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


class RunEndInCheckpoint(Callback):
    """Saves in every checkpoint what decides where its run ends: the Trainer's length settings,
    which a resumed learning-rate schedule was planned for (``run_identity.changed_horizon``), and
    whether the run was told to stop. A run resumed from a stopped one stops again before any step:
    Lightning restores early stopping's counters but not ``trainer.should_stop``, so each rerun or
    requeue would train one more epoch."""

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
        if self.resumed_stopped:
            trainer.should_stop = True
        self.resumed_stopped = False


class InterruptCheckpoint(Callback):
    """On Ctrl-C, SIGTERM (a cluster's preemption) or SLURM's time-limit signal, saves
    ``interrupted.ckpt`` next to the others; under SLURM the signal also requeues the job.

    Lightning only looks at SIGTERM between epochs when it runs in one process; this checks
    before every batch, so a preempted job stops within one step. Resume with
    ``--ckpt_path last``, which picks the newest of ``last.ckpt`` and ``interrupted.ckpt``; a
    requeued job or a torchrun restart resumes its own run by itself (``run_identity.restart_point``).
    Lightning's ``OnExceptionCheckpoint`` would also turn every ``fit()`` into a resume attempt, and
    its SLURM requeue saves ``hpc_ckpt_N.ckpt`` at any point of a step, outside the run directory.
    Only a stop during a training epoch, after a step that no checkpoint holds yet, is saved: one
    taken before the epoch's first step or during validation would resume into an epoch without
    its validation metrics (early stopping could never continue from it), and one taken during the
    final test would hold the best epoch's weights; there, the newest checkpoint on disk is kept.
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.path: Path | None = None
        self.unsaved_steps = False
        self.requeue = False  # SLURM asked for a stop before its time limit: requeue the job

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `#SBATCH --signal=SIGUSR1@120`: the job's time is nearly up. Registered before Lightning
        # registers its own SLURM handler, which then stands aside.
        started = launch()
        if (
            started
            and started[0].startswith("slurm-")
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGUSR1, self.time_nearly_up)

    def time_nearly_up(self, signum: int, frame: object) -> None:
        """Stops as on SIGTERM, which Lightning passes to every process at the same step; then requeues."""
        self.requeue = True
        os.kill(os.getpid(), signal.SIGTERM)

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

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.received_sigterm and trainer.world_size == 1:  # several: the test runs to its end
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

    def what_to_do(
        self, trainer: L.Trainer, exception: BaseException, saved: bool, tested: bool = False
    ) -> str:
        """What was stopped, what is on disk, and the command that continues the run, as printed
        (absolute paths, quoted for a shell: it works from any directory)."""
        assert self.path is not None
        cause = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        kept = newest_in(self.path.parent)
        finished = trainer.should_stop or trainer.current_epoch >= (trainer.max_epochs or math.inf)
        if tested or trainer.testing or (finished and not saved):
            test = "stopped the final test" if trainer.testing else "the final test did not run"
            return f"\n{cause}: {test}; training had finished.\nTest with: {self.command(trainer, kept)}"
        if saved:
            resume = self.command(trainer, self.path)
            return f"\n{cause}: stopped at {where}. Saved {self.path}\nResume with: {resume}"
        stopped = f"{cause}: stopped {'during validation ' if trainer.validating else ''}at {where}"
        if kept is None:
            return f"\n{stopped}, before any checkpoint; start again"
        return f"\n{stopped}; kept {kept}\nResume with: {self.command(trainer, kept)}"

    @staticmethod
    def command(trainer: L.Trainer, checkpoint: Path | None) -> str:
        """``python train.py --config <the run's config> --ckpt_path <checkpoint>``, ready to paste."""
        program = Path(sys.argv[0]).resolve()
        words = ["python", program.name if program.parent == Path.cwd() else str(program)]
        config = Path(trainer.log_dir or "") / "config.yaml"
        if config.is_file():
            words += ["--config", str(config.resolve())]
        words += ["--ckpt_path", str(checkpoint.resolve()) if checkpoint else "last"]
        return shlex.join(words)

    def requeue_job(self) -> str:
        """Puts this SLURM job back in the queue (``scontrol requeue``): the same command then runs
        again and continues this run. Returns what happened, as printed."""
        started = launch()
        job = started[0].removeprefix("slurm-") if started else os.environ.get("SLURM_JOB_ID", "")
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"SLURM: could not requeue job {job} ({error}); resubmit the same command to continue"
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            return f"SLURM: could not requeue job {job} ({reason}); resubmit the same command to continue"
        return f"SLURM: requeued job {job}; when it starts again it continues this run"


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
