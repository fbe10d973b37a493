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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import lightning as L
import torch.distributed as dist
from jsonargparse import Namespace
from lightning.pytorch.strategies import StrategyRegistry

from {{ cookiecutter.package_name }}.engine.hardware import uses_cuda
from {{ cookiecutter.package_name }}.engine.sizes import class_of, takes

DEFAULT_TIMEOUT_S = {"cpu": 300, "cuda": 1800}
"""How long one collective may wait: minutes on CPU (gloo); on GPUs (NCCL) longer, for the first
steps of a compiled model and the checkpoints of a large one."""


class CollectiveTimeoutError(RuntimeError):
    """A collective did not complete in time: another process is stuck, or died."""


def starts_its_own_processes(trainer: L.Trainer) -> bool:
    """Whether Lightning will start the other processes itself, by running ``sys.argv`` again or
    by spawning them: neither suits a call from within Python (a test, tune.py).

    That is how it launches DDP on several local devices; a program run by ``torchrun`` or SLURM
    already has its processes. A launcher that cannot work in an interactive session (the
    launcher's public ``is_interactive_compatible``) is one of these two.
    """
    launcher = trainer.strategy.launcher
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (
        launcher is not None
        and not launcher.is_interactive_compatible
        and trainer.num_devices > 1
        and not (environment is not None and environment.creates_processes_externally)
    )


def collective_timeout(seconds: int | None, accelerator: object) -> timedelta:
    """How long one collective may wait: ``seconds``, else the default for the device."""
    return timedelta(seconds=seconds or DEFAULT_TIMEOUT_S["cuda" if uses_cuda(accelerator) else "cpu"])


@contextmanager
def strategies_with_timeout(strategy: object, timeout: timedelta) -> Iterator[None]:
    """While the Trainer is built, every strategy that takes a ``timeout`` gets this one, so that a
    hung process ends the run with an error instead of torch's 30 minutes of waiting.

    A strategy given by class (``configs/distributed/fsdp.yaml``) gets it in the config, as its
    constructor argument. One given by name (``ddp``, or the one ``auto`` picks) Lightning builds
    from its ``StrategyRegistry``: each such name is registered again with the timeout among its
    arguments, and restored afterwards. The process group reads it at the beginning of ``fit``.
    """
    if isinstance(strategy, Namespace) and takes(class_of(strategy.class_path), "timeout"):
        strategy.init_args = strategy.get("init_args") or Namespace()
        strategy.init_args.timeout = timeout
    registered = {name: dict(StrategyRegistry[name]) for name in StrategyRegistry.available_strategies()}
    timed = {name: entry for name, entry in registered.items() if takes(entry["strategy"], "timeout")}
    try:
        for name, entry in timed.items():
            arguments = {**entry["init_params"], "timeout": timeout}
            StrategyRegistry.register(
                name, entry["strategy"], entry["description"], override=True, **arguments
            )
        yield
    finally:
        for name, entry in timed.items():
            StrategyRegistry.register(
                name, entry["strategy"], entry["description"], override=True, **entry["init_params"]
            )


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
    if launcher is not None:  # it knows only the processes it started
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
