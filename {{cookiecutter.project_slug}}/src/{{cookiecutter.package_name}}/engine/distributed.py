"""Several processes: how long they wait for each other, and how they end. A collective runs only in a hook
that every process calls (never behind ``is_global_zero``), or all of them wait forever."""

import signal
import subprocess
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


def starts_its_own_processes(trainer: L.Trainer) -> bool:
    """Whether Lightning will start the other processes itself (running ``sys.argv`` again, or spawning),
    which a call from within Python (a test, tune.py) cannot hold; torchrun and SLURM start their own."""
    launcher = trainer.strategy.launcher
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (
        launcher is not None
        and not launcher.is_interactive_compatible
        and trainer.num_devices > 1
        and not (environment is not None and environment.creates_processes_externally)
    )


def collective_timeout(seconds: int | None, accelerator: object) -> timedelta:
    """``seconds``, else minutes on CPU (gloo); longer on GPUs, for a compiled model's first steps."""
    return timedelta(seconds=seconds or (1800 if uses_cuda(accelerator) else 300))


@contextmanager
def strategies_with_timeout(strategy: object, timeout: timedelta) -> Iterator[None]:
    """While the Trainer is built, each strategy that takes a ``timeout`` gets this one, not torch's 30
    minutes: in the config if given by class, else in Lightning's ``StrategyRegistry`` (``ddp``, ``auto``)."""
    if isinstance(strategy, Namespace) and takes(class_of(strategy.class_path), "timeout"):
        strategy.init_args = strategy.get("init_args") or Namespace()
        strategy.init_args.timeout = timeout
    registered = dict(StrategyRegistry)
    try:
        for name, entry in registered.items():
            if takes(entry["strategy"], "timeout"):
                params = {**entry["init_params"], "timeout": timeout}
                StrategyRegistry[name] = {**entry, "init_params": params}
        yield
    finally:
        StrategyRegistry.update(registered)


def timed_out_collective(error: BaseException) -> str | None:
    """The one-line error if ``error`` is a collective's time-out, naming the collective and the hook."""
    text = str(error).strip()
    if not isinstance(error, RuntimeError) or not ("timed out" in text.lower() or "Timeout" in text):
        return None
    frames = traceback.extract_tb(error.__traceback__)[::-1]
    collective = next((f.name for f in frames if f.filename.endswith("distributed_c10d.py")), "a collective")
    hook = next((f" in {f.name}" for f in frames if f.name.startswith("on_")), "")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return (
        f"collective {collective}{hook} did not complete within the timeout on rank {rank}: another process"
        " is stuck or died (raise --collective_timeout if it is only slow)"
        f" [{text.splitlines()[0] if text else type(error).__name__}]"
    )


def stop_started_processes(trainer: L.Trainer) -> None:
    """Kills the processes Lightning started (it does on Ctrl-C alone); torchrun's or SLURM's end the rest."""
    if trainer.strategy.launcher is not None:
        trainer.strategy.launcher.kill(signal.SIGKILL)


def end_process_group() -> None:
    """Leaves the process group, so that gloo's thread cannot abort the exit (7 of 32 two-node launches
    failed without it); Lightning does it for NCCL only. Never with a process stuck: it would wait."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def requeue_slurm_job(job: str) -> str:
    """``scontrol requeue``: SLURM runs the same command again, which continues the run; says how it went."""
    try:
        subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        reason = str(getattr(error, "stderr", None) or error).strip()
        return f"SLURM: could not requeue job {job} ({reason}); resubmit the command to continue"
    return f"SLURM: requeued job {job}; when it starts again it continues this run"
