"""The default project's own test suite passes, and `python train.py` does what the README promises."""

import re
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run


def test_generated_test_suite_passes(default_project: Path) -> None:
    # About 3 to 6 minutes on 2 cores (real runs, DDP, torchrun, signals); the limit leaves room.
    result = run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=default_project, timeout=1500
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary


def test_train_py_trains_to_97_percent_and_leaves_logs_and_checkpoints(default_project: Path) -> None:
    result = run(sys.executable, "train.py", cwd=default_project)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"precision (32-true|bf16-mixed|16-mixed)", result.stdout)  # what the hardware allows
    run_dir = Path(re.search(r"Logs: (\S+)", result.stdout).group(1))
    best = Path(re.search(r"Best checkpoint: (\S+)", result.stdout).group(1))
    run_dir, best = default_project / run_dir, default_project / best
    assert best.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "lr-AdamW"):
        assert tag in scalars, tag
    test_accuracy = events.Scalars("test/acc")[-1].value
    assert test_accuracy >= 0.97, test_accuracy
