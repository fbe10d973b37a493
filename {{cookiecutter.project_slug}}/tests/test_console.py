"""What `python train.py` prints: the hardware line, the summary, the bar and the results; no chatter."""

import ast
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from {{ cookiecutter.package_name }}.engine import callbacks
from {{ cookiecutter.package_name }}.engine.callbacks import RichProgressBar
from {{ cookiecutter.package_name }}.engine.console import CHATTER

from conftest import PROJECT_ROOT, QUICK_MODEL, TINY_RUN, train


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_the_bar_redraws_at_most_4_times_a_second(monkeypatch, tmp_path: Path) -> None:
    """Lightning's thread redraws up to 100 times a second, ~1 ms each: 4% of a CPU run's time."""
    import rich.live

    redraws: list[str] = []
    draw = rich.live.Live.refresh

    def counted(live: rich.live.Live) -> None:
        redraws.append(threading.current_thread().name)
        draw(live)

    monkeypatch.setattr(rich.live.Live, "refresh", counted)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich draws as on a terminal, as a user sees it
    started = time.monotonic()
    train(tmp_path, "--trainer.max_epochs", "2", *QUICK_MODEL, *TINY_RUN)
    elapsed = time.monotonic() - started
    by_thread = [name for name in redraws if name != threading.main_thread().name]
    assert 1 <= len(by_thread) <= 4 * elapsed + 1, (len(by_thread), elapsed)


def test_the_bar_shows_the_runs_time_and_what_is_left(monkeypatch) -> None:
    bar = RichProgressBar()
    clock = iter([100.0, 100.0, 100.0, 160.0, 220.0])
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(callbacks.LightningRichProgressBar, "on_train_epoch_start", lambda *args: None)
    monkeypatch.setattr(callbacks.LightningRichProgressBar, "get_metrics", lambda *args: {"v_num": 3})
    trainer = SimpleNamespace(current_epoch=0, max_epochs=10, is_global_zero=False)
    bar.on_train_start(trainer, None)  # type: ignore[arg-type]
    bar.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    assert bar.get_metrics(trainer, None) == {"run": "0:00"}  # type: ignore[arg-type]  # no pace yet
    # Two epochs took 60 s: the 8 left should take 4 minutes, of which 1 has passed.
    trainer.current_epoch = 2
    bar.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    assert bar.get_metrics(trainer, None) == {"run": "2:00", "left": "~3:00"}  # type: ignore[arg-type]


SOURCES = sorted((PROJECT_ROOT / "src").rglob("*.py"))
PRIVATE_IMPORT = re.compile(
    r"^\s*(from\s+lightning\S*\s+import\s+\(?[^#\n]*\b_[A-Za-z]|import\s+lightning\S*\._)", re.M
)
PRIVATE_MODULE = re.compile(r"\blightning(\.\w+)*\._\w+")
PRIVATE_ATTRIBUTE = re.compile(r"(?<!\bself)(?<!\bcls)\._[a-z]\w*")


def test_no_code_uses_a_private_lightning_name() -> None:
    """A private name (``trainer._x``, ``lightning.*._module``, ``import _X``) can change in any
    minor release of Lightning without notice. The attributes of the project's own objects
    (``self._x``) are its own; every other ``._x`` counts, whoever's object it is."""
    found = [
        "{}:{}: {}".format(path.relative_to(PROJECT_ROOT), text.count("\n", 0, match.start()) + 1, match[0])
        for path in SOURCES
        for text in [path.read_text()]
        for pattern in (PRIVATE_IMPORT, PRIVATE_MODULE, PRIVATE_ATTRIBUTE)
        for match in pattern.finditer(text)
    ]
    assert SOURCES and not found, "\n".join(found)


@pytest.mark.slow
def test_importing_the_package_installs_no_warning_filter() -> None:
    """A filter added at import hides a warning from every program that imports the package. The
    libraries it imports, whose own filters are theirs, are imported before the count starts."""
    ours, theirs = set(), set()
    for path in SOURCES:
        ours.add(
            ".".join(path.relative_to(PROJECT_ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                theirs.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                theirs.add(node.module)
    theirs = {name for name in theirs if name.split(".")[0] != "{{ cookiecutter.package_name }}"}
    check = (
        "import importlib, sys, warnings\n"
        "names = sys.argv[1:]\n"
        "split = names.index('--')\n"
        "for name in names[:split]:\n"
        "    importlib.import_module(name)\n"
        "before = list(warnings.filters)\n"
        "for name in names[split + 1:]:\n"
        "    importlib.import_module(name)\n"
        "added = [f for f in warnings.filters if f not in before]\n"
        "assert not added, added\n"
    )
    command = [sys.executable, "-c", check, *sorted(theirs), "--", *sorted(ours)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
