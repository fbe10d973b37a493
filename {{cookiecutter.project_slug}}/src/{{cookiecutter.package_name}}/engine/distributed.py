"""Several processes: how long they wait for each other, and how they end.

The rule that keeps processes in step (each must issue the same collectives in the same order,
or all of them wait forever): a collective (all-reduce, all-gather, barrier, torchmetrics'
``compute``) runs only in a hook that every process calls, never behind ``is_global_zero`` or in
a callback that works on rank 0 alone (the progress bar, a logger). Whatever is logged is already
the same on every process, so reading logged metrics never starts a collective: hence no
``sync_dist=True`` (see ``Task.log_epoch`` in ``tasks/base.py``).
"""

import signal
import traceback
from datetime import timedelta

import lightning as L
import torch.distributed as dist
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

DEFAULT_TIMEOUT_S = {"cpu": 300, "cuda": 1800}
"""How long one collective may wait: minutes on CPU (gloo); on GPUs (NCCL) longer, for the first
steps of a compiled model and the checkpoints of a large one."""


class CollectiveTimeoutError(RuntimeError):
    """A collective did not complete in time: another process is stuck, or died."""


def launches_this_command_again(trainer: L.Trainer) -> bool:
    """Whether Lightning will start the other processes by running ``sys.argv`` again.

    That is how it launches DDP on several local devices; a program run by ``torchrun`` or SLURM
    already has its processes, and ``ddp_spawn`` starts them from a function.
    """
    launcher = trainer.strategy.launcher
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and trainer.num_devices > 1
        and not (environment is not None and environment.creates_processes_externally)
    )


def set_collective_timeout(trainer: L.Trainer, seconds: int | None) -> None:
    """Bounds every collective of the run's process group, so that a hang ends with an error.

    Lightning's DDP and FSDP strategies take the timeout as a constructor argument, which a
    strategy chosen by name (``ddp``, ``auto``) leaves at torch's 30 minutes; it is read when the
    process group starts, at the beginning of ``fit``.
    """
    if seconds is not None and seconds < 1:
        raise ValueError(f"collective_timeout must be at least 1 second, got {seconds}")
    if hasattr(trainer.strategy, "_timeout"):
        device = trainer.strategy.root_device.type
        trainer.strategy._timeout = timedelta(seconds=seconds or DEFAULT_TIMEOUT_S.get(device, 1800))


def timed_out_collective(error: BaseException) -> CollectiveTimeoutError | None:
    """The error to report if ``error`` is a collective's time-out, naming the collective and the hook."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not any(
        word in text for word in ("Timed out", "timed out", "Timeout")
    ):
        return None
    frames = traceback.extract_tb(error.__traceback__)
    collective = next(
        (frame.name for frame in reversed(frames) if frame.filename.endswith("distributed_c10d.py")),
        "a collective",
    )
    hooks = [frame.name for frame in frames if frame.name.startswith("on_")]
    where = f" in {hooks[-1]}" if hooks else ""
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return CollectiveTimeoutError(
        f"collective {collective}{where} did not complete within the timeout on rank"
        f" {dist.get_rank() if dist.is_initialized() else 0}: another process is stuck or died"
        f" (raise --collective_timeout if it is only slow) [{first_line}]"
    )


def stop_started_processes(trainer: L.Trainer) -> None:
    """Kills the processes that Lightning started for this run (not those of torchrun or SLURM, whose
    agents end the rest of a job when one process fails). Lightning does it on Ctrl-C alone."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _SubprocessScriptLauncher):  # it knows only the processes it started
        launcher.kill(signal.SIGKILL)


def end_process_group() -> None:
    """Leaves the process group cleanly, so that every process exits with status 0.

    Without it, gloo's worker thread may still be releasing the last collective's tensors when the
    interpreter shuts down: the process aborts (``terminate called without an active exception``)
    and the scheduler marks the job failed (7 of 32 two-node ``torchrun`` launches; 0 of 28 with
    it). Lightning destroys the group at exit for NCCL only. Called where every process stops
    together; never with a process stuck, whose pending collective it would wait for.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
