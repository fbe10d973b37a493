"""What both benchmarks share: baking the default project, quiet output, the machine, overrides."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Sends file descriptor 1 to /dev/null, so that child processes and Rich are silenced too."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def bake(output_dir: Path) -> Path:
    """Generates the default project into ``output_dir``; returns its directory."""
    from cookiecutter.main import cookiecutter

    with quiet_stdout():  # the post-generation hook prints the next steps
        return Path(cookiecutter(str(REPO), no_input=True, output_dir=str(output_dir)))


def machine(device: str = "cpu") -> str:
    """The processor, its cores, the GPU on ``device="cuda"`` and the library versions, for the results."""
    import lightning
    import torch

    model = platform.processor() or "unknown processor"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gpu = ""
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        gpu = f"; GPU {torch.cuda.get_device_name()} (compute capability {major}.{minor})"
    return (
        f"machine: {model}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()},"
        f" torch {torch.__version__}, lightning {lightning.__version__}"
    )


def to_flags(overrides: list[str]) -> list[str]:
    """``KEY=VALUE`` pairs as the project's ``--KEY=VALUE`` flags."""
    flags = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise SystemExit(f"--override expects KEY=VALUE, got {override!r}")
        flags.append(f"--{key.removeprefix('--')}={value}")
    return flags
