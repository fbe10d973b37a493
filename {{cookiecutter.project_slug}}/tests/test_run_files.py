"""Each run leaves its results as plain files (epochs.csv, summary.json and .md, curves.png)."""

import csv
import json
import struct
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_RUN, RunCLI

RUN_FILES = ("epochs.csv", "summary.json", "summary.md", "curves.png")
SHORT = ("--trainer.max_epochs", "2", *TINY_RUN)
SHORT += ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
SHORT += ("--trainer.limit_test_batches", "2")
NO_LOGGER = ("--trainer.logger", "false")  # the default callbacks stay (the CLI drops the LR monitor)
CSV_LOGGER = ("--trainer.logger", "lightning.pytorch.loggers.CSVLogger")


def read_rows(directory: Path) -> list[dict[str, float]]:
    with (directory / "epochs.csv").open(newline="") as file:
        return [{name: float(value) for name, value in row.items() if value} for row in csv.DictReader(file)]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header, which must be a real one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_a_run_writes_its_metrics_summary_and_curves_next_to_its_logs(trained_run: LightningCLI) -> None:
    trainer = trained_run.trainer
    directory = Path(trainer.log_dir)
    rows = read_rows(directory)

    # One row per epoch, with the epoch-level metrics and the learning rate; no per-step values.
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["step"] for row in rows] == [trainer.global_step / 2, trainer.global_step]
    for name in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1", "lr"):
        assert all(name in row for row in rows), name
    assert not any(name.endswith("_step") or name.startswith("test/") for row in rows for name in row)
    # The values TensorBoard received, epoch by epoch (it counts the steps from 0: one less).
    events = EventAccumulator(str(directory))
    events.Reload()
    for name in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1"):
        logged = [(event.step + 1, event.value) for event in events.Scalars(name)]
        assert logged == [(row["step"], pytest.approx(row[name])) for row in rows], name
    assert rows[-1]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]

    summary = json.loads((directory / "summary.json").read_text())
    best = trainer.checkpoint_callback
    assert summary["best_checkpoint"] == best.best_model_path and Path(best.best_model_path).is_file()
    assert summary["monitor"] == "val/loss"
    assert summary["best_score"] == pytest.approx(best.best_model_score.item())
    assert summary["best_score"] == pytest.approx(min(row["val/loss"] for row in rows))
    tested = {name: value.item() for name, value in trainer.callback_metrics.items() if "test/" in name}
    assert set(summary["test"]) == {"test/loss", "test/acc", "test/f1"}
    assert summary["test"] == pytest.approx(tested)
    assert (summary["epochs"], summary["steps"]) == (2, trainer.global_step) and summary["wall_time_s"] > 0
    assert summary["config"] == str(directory / "config.yaml")
    assert summary["last_epoch"] == pytest.approx(rows[-1])

    page = (directory / "summary.md").read_text()
    assert page.startswith("# Run summary") and f"| best val/loss | {summary['best_score']:.4g} |" in page
    assert f"| test/acc | {summary['test']['test/acc']:.4g} |" in page
    assert png_size(directory / "curves.png") == (1000, 400)  # two panels: loss and accuracy
    assert (directory / "curves.png").stat().st_size > 10_000  # drawn, not blank


@pytest.mark.parametrize("logger", [NO_LOGGER, CSV_LOGGER], ids=["none", "csv"])
def test_any_logger_or_none(run_cli: RunCLI, tmp_path: Path, logger: tuple[str, ...]) -> None:
    cli = run_cli("--config", "configs/debug/limit_batches.yaml", *SHORT, *logger)
    # Without a logger the run's directory is default_root_dir; a CSVLogger has a version directory.
    directory = Path(cli.trainer.logger.log_dir) if cli.trainer.logger else tmp_path
    assert all((directory / name).is_file() for name in RUN_FILES)
    assert len(read_rows(directory)) == cli.trainer.current_epoch == 2
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["run_directory"] == str(directory)
    assert summary["config_files_given"] == ["configs/debug/limit_batches.yaml"]
    assert summary["test"]["test/acc"] == pytest.approx(cli.trainer.callback_metrics["test/acc"].item())


def test_fast_dev_run_writes_none_of_them(run_cli: RunCLI, tmp_path: Path) -> None:
    run_cli("--config", "configs/debug/fast_dev_run.yaml", *TINY_RUN)
    assert not [path for path in tmp_path.rglob("*") if path.name in RUN_FILES]
