"""What `python train.py` prints: the hardware line, the summary, the bar and the results; no chatter."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from {{ cookiecutter.package_name }}.engine import callbacks
from {{ cookiecutter.package_name }}.engine.callbacks import RichProgressBar
from {{ cookiecutter.package_name }}.engine.console import CHATTER

from conftest import PROJECT_ROOT


def test_a_run_prints_what_matters_and_nothing_the_template_can_prevent(tmp_path: Path) -> None:
    command = [
        sys.executable, "train.py", "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "2",  # 10: log_every_n_steps
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    (hardware,) = [line for line in console.splitlines() if line.startswith("Hardware:")]
    assert f"cuDNN autotuner {'on' if torch.cuda.is_available() else 'off'}" in hardware  # on CUDA only
    assert not [line for line in console.splitlines() if line.strip().startswith(CHATTER)]
    for noise in ("LeafSpec", "site-packages", "v_num", "sync_dist", "Warning"):
        assert noise not in console, noise
    test_line = next(line for line in done.stdout.splitlines() if line.startswith("Test: "))
    assert re.fullmatch(r"Test: \S+ \S+(  \S+ \S+)*", test_line), test_line  # name value, two spaces apart
    words = test_line.removeprefix("Test: ").split()
    names, values = words[::2], words[1::2]
    assert "loss" in names and names == sorted(names), test_line  # every task's, then its own metrics
    assert all(math.isfinite(float(value)) for value in values), test_line
    mantissas = [value.lstrip("-").partition("e")[0].replace(".", "").lstrip("0") for value in values]
    assert all(0 < len(digits) <= 4 for digits in mantissas), test_line  # 4 significant digits
    assert "Logs: " in done.stdout and "Best checkpoint: " in done.stdout


def test_too_many_workers_are_named_once_with_the_key(tmp_path: Path) -> None:
    workers = str((os.cpu_count() or 1) + 2)
    command = [
        sys.executable, "train.py", "fit", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10",
        "--trainer.limit_val_batches", "1", "--data.num_workers", workers,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count(f"data.num_workers: {workers} workers") == 1
    assert "This DataLoader will create" not in done.stderr


def test_the_bar_shows_the_runs_time_and_what_is_left(monkeypatch) -> None:
    bar = RichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=10)  # type: ignore[assignment]
    clock = iter([100.0, 100.0, 160.0])
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(clock))
    bar.on_train_start(SimpleNamespace(current_epoch=0, is_global_zero=False), None)  # type: ignore[arg-type]
    assert bar._get_train_description(0).endswith("· 0:00 run")  # no pace yet
    # Two epochs took 60 s: the 8 left should take 4 minutes.
    assert bar._get_train_description(2) == "Epoch 2/9 · 1:00 run, ~4:00 left"
