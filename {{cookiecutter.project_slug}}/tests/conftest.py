"""Shared helpers: run the real CLI in-process, writing everything under a temporary directory."""

import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from {{ cookiecutter.package_name }}.cli import TrainCLI, main

PROJECT_ROOT = Path(__file__).parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"

TINY_RUN = ("--data.num_workers", "0")
"""Skips worker start-up where a test is not about workers."""


def train(root: Path, *args: str) -> TrainCLI:
    """Runs ``python train.py ARGS`` in this process, with its logs and checkpoints under ``root``."""
    with mock.patch.object(sys, "argv", ["train.py"]):  # pytest's own flags are not ours
        return main(DEFAULT_CONFIG, args=["--trainer.default_root_dir", str(root), *args])


RunCLI = Callable[..., TrainCLI]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    """A short real run shared by the tests that need a trained checkpoint: a narrow network after
    2 epochs, far above chance but not yet accurate. Its best checkpoint was tested."""
    return train(
        tmp_path_factory.mktemp("trained"),
        *("--trainer.max_epochs", "2", "--model.width", "8", "--model.lr", "0.01"),
        *("--trainer.enable_progress_bar", "false", *TINY_RUN),
    )


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCLI:
    """``run_cli("--trainer.max_epochs", "1")``: ``train`` into this test's temporary directory."""
    return lambda *args: train(tmp_path, *args)
