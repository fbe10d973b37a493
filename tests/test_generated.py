"""The default project's own test suite passes, and `python train.py` does what the README promises."""

import re
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import bake, run

REGRESSION_QUALITY = 0.30
"""What 4 epochs of the team's default config reach on val/r2 (an untrained model: about 0)."""


def test_generated_test_suite_passes(default_project: Path) -> None:
    # About 7 minutes on 2 cores, spread over them by pytest-xdist (real runs, DDP, torchrun, signals).
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


TEAM_DATA = '''"""A team's own regression data: 8 measurements per sample and one real-valued target."""

import torch
from torch.utils.data import TensorDataset

from {package}.engine.datamodule import SeededDataModule, split_indices


class WavesDataModule(SeededDataModule):
    """1,200 samples made from a seed: the target mixes a sine, a product and a straight line."""

    num_features = 8
    num_outputs = 1

    def __init__(self, batch_size: int = 64, num_workers: int = 0, persistent_workers: bool = False) -> None:
        super().__init__(batch_size, num_workers, persistent_workers)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1200, 8, generator=generator)
        noise = 0.1 * torch.randn(1200, generator=generator)
        y = torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] + noise
        y = (y - y.mean()) / y.std()
        for name, rows in split_indices(len(y), 0.15, 0.15, seed=0).items():
            self.splits[name] = TensorDataset(x[rows], y[rows])
'''
TEAM_MODEL = """model:
  class_path: {package}.tasks.Regression
  init_args:
    net:
      class_path: {package}.models.MLP
      init_args:
        hidden: 64
    optimizer:
      class_path: torch.optim.AdamW
      init_args:
        lr: 0.003
    scheduler:
      class_path: {package}.tasks.schedules.OneCycleLR

data:
  class_path: {package}.data.waves.WavesDataModule
  init_args:
    batch_size: 64
"""
TEAM_FACTS = """INPUT_SHAPE = (8,)
SPLIT_SIZES = {"train": 840, "val": 180, "test": 180}
QUICK_MODEL = ("--model.net.hidden", "16")
QUALITY = ("val/r2", QUALITY_BOUND)
"""


def swap_to_regression(project: Path, package: str, quality_bound: float) -> set[str]:
    """What a regression team does to a fresh bake: one data file, the model and data of the default
    config, the fact block of tests/conftest.py, and the digits-only experiment dropped.
    Returns the files it touched, relative to the project."""
    (project / "src" / package / "data" / "waves.py").write_text(TEAM_DATA.format(package=package))
    config = project / "configs" / "default.yaml"
    text = config.read_text()
    config.write_text(text[: text.index("model:\n")] + TEAM_MODEL.format(package=package))
    conftest = project / "tests" / "conftest.py"
    text = conftest.read_text()
    start = text.index("INPUT_SHAPE = ")
    end = text.index("# ----", start)
    facts = TEAM_FACTS.replace("QUALITY_BOUND", repr(quality_bound))
    conftest.write_text(text[:start] + facts + text[end:])
    (project / "configs" / "experiments" / "wide.yaml").unlink()  # an experiment on the digits' CNN
    return {
        f"src/{package}/data/waves.py",
        "configs/default.yaml",
        "tests/conftest.py",
        "configs/experiments/wide.yaml",
    }


def test_a_regression_team_changes_one_data_file_one_config_and_conftest(tmp_path: Path) -> None:
    """The measure of "any task, one structure": no machinery edit, no test but conftest's facts."""
    fresh = bake(tmp_path / "fresh", project_name="Waves Regression")
    project = bake(tmp_path / "team", project_name="Waves Regression")
    touched = swap_to_regression(project, "waves_regression", quality_bound=REGRESSION_QUALITY)
    changed = {
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file()
        and (fresh / path.relative_to(project)).is_file()
        and path.read_bytes() != (fresh / path.relative_to(project)).read_bytes()
    }
    added = {
        str(p.relative_to(project))
        for p in project.rglob("*")
        if not (fresh / p.relative_to(project)).exists()
    }
    removed = {
        str(p.relative_to(fresh)) for p in fresh.rglob("*") if not (project / p.relative_to(fresh)).exists()
    }
    assert changed | added | removed == touched
    assert not any(
        name.startswith(f"src/waves_regression/{part}") for name in touched for part in ("engine", "tasks")
    )
    result = run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        cwd=project, pythonpath=project / "src", timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
