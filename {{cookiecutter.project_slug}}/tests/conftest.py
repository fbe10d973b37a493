"""Shared helpers: run the real CLI in-process, writing everything under a temporary directory.

The tests of the machinery run whatever ``configs/default.yaml`` names and rely only on the facts
in the block below: a team that swaps the default data, network or task edits that block and no
other test. (The tests of a shipped task or example name their own config and sit with it.)
"""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import torch

from {{ cookiecutter.package_name }}.engine.cli import COMMANDS, TrainCLI, main
from {{ cookiecutter.package_name }}.engine.hardware import auto_precision

PROJECT_ROOT = Path(__file__).parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"

# --- What configs/default.yaml trains: the digits, SmallCNN, the Classification task ---------------
INPUT_SHAPE = (1, 8, 8)
"""One sample's input, as the default DataModule delivers it."""
SPLIT_SIZES = {"train": 1257, "val": 270, "test": 270}
"""The default DataModule's splits."""
QUICK_MODEL = ("--model.net.width", "8")
"""Flags that make the default network small and quick to train (the shared trained run)."""
QUALITY = ("val/acc", 0.90)
"""A metric the default task logs where higher is better, and what 4 epochs of the default config
reach on it (chance is 0.10; a full run reaches about 0.98)."""
# ------------------------------------------------------------------------------------------------

TINY_RUN = ("--data.num_workers", "0")
"""Skips worker start-up where a test is not about workers."""
NO_LOGGER = ("--trainer.logger", "false")
"""For the tests of a run without a logger: the default callbacks stay."""
CONSTANT_LR = ("--model.scheduler", "null")
"""A run that may be extended past its planned epochs: no schedule with a horizon."""
PRECISION = auto_precision("auto")
"""What the automatic choice gives on this machine: 32-true on CPU, mixed precision on GPUs."""


def pytest_configure() -> None:
    """Under ``-n auto`` (pyproject's addopts) the workers share the cores: each worker, and each
    ``train.py`` it starts, takes its share of torch's threads (2 cores, -m "not slow": 92-100 s, not 145)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def train(root: Path, *args: str) -> TrainCLI:
    """Runs ``python train.py ARGS`` in this process, with its logs and checkpoints under ``root``.

    One device, unless ``args`` say otherwise: with ``devices: auto`` on a machine with several
    GPUs, Lightning would start the other processes by running pytest's own command line again.
    """
    command = list(args[:1]) if args[:1] and args[0] in COMMANDS else []  # a subcommand comes first
    pinned = ["--trainer.devices", "1", "--trainer.default_root_dir", str(root)]
    with mock.patch.object(sys, "argv", ["train.py"]):  # pytest's own flags are not ours
        return main(DEFAULT_CONFIG, args=[*command, *pinned, *args[len(command) :]])


def process_env() -> dict[str, str]:
    """The environment of a ``train.py`` these tests start: it can load callbacks defined in these
    tests, and still finds the package where this process found it (installed or on PYTHONPATH)."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def run_train_py(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python train.py ARGS`` in a new process."""
    command = [sys.executable, "train.py", *args]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(), capture_output=True, text=True, timeout=timeout
    )


RunCLI = Callable[..., TrainCLI]


def refusal(run_cli: RunCLI, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``train.py ARGS`` prints on stderr as it refuses to run (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    """A short real run shared by the tests that need a trained checkpoint: a quick network after
    2 epochs, better than chance but not yet good. Its best checkpoint was tested."""
    return train(
        tmp_path_factory.mktemp("trained"),
        *("--trainer.max_epochs", "2", *QUICK_MODEL, "--model.optimizer.lr", "0.01"),
        *TINY_RUN,
    )


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCLI:
    """``run_cli("--trainer.max_epochs", "1")``: ``train`` into this test's temporary directory."""
    return lambda *args: train(tmp_path, *args)
