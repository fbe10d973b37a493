"""Each run leaves its results as plain files (epochs.csv, summary.json and .md, curves.png)."""

import csv
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.cli import LightningCLI
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine import run_files

from conftest import TINY_RUN, RunCLI

RUN_FILES = ("epochs.csv", "summary.json", "summary.md", "curves.png")
SHORT = ("--trainer.max_epochs", "2", *TINY_RUN)
SHORT += ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
SHORT += ("--trainer.limit_test_batches", "2")
NO_LOGGER = ("--trainer.logger", "false")  # the default callbacks stay (the CLI drops the LR monitor)
CSV_LOGGER = ("--trainer.logger", "lightning.pytorch.loggers.CSVLogger")
NOT_METRICS = {"epoch", "step", "lr"}
"""The columns of epochs.csv that RunFiles adds to the logged metrics."""
SPEED = {"train/epoch_time_s", "train/samples_per_s"}
"""What EpochThroughput logs per epoch: in epochs.csv, but the run's speed, not a learning curve."""
PANEL_WIDTH, HEIGHT = 500, 400
"""Pixels of one panel of curves.png (5 x 4 inches at 100 dpi)."""


def read_rows(directory: Path) -> list[dict[str, float]]:
    with (directory / "epochs.csv").open(newline="") as file:
        return [{name: float(value) for name, value in row.items() if value} for row in csv.DictReader(file)]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header, which must be a real one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def per_epoch(names: Iterable[str]) -> set[str]:
    """The names among ``names`` that were logged once per training epoch: under train/ or val/,
    not per step (Lightning adds ``_step`` and ``_epoch`` to a value logged both ways)."""
    return {name for name in names if name.startswith(("train/", "val/")) and not name.endswith("_step")}


def curves_of(names: Iterable[str]) -> set[str]:
    """The panels that curves.png should have for these logged names: one per metric, any task's."""
    return {name.split("/", 1)[1].removesuffix("_epoch") for name in per_epoch(names) - SPEED}


def test_a_run_writes_its_metrics_summary_and_curves_next_to_its_logs(trained_run: LightningCLI) -> None:
    trainer = trained_run.trainer
    directory = Path(trainer.log_dir)
    rows = read_rows(directory)
    # What the run logged, read back from TensorBoard: the task's own metrics, whichever task it is.
    events = EventAccumulator(str(directory))
    events.Reload()
    tags = events.Tags()["scalars"]
    logged = per_epoch(tags)
    assert {"train/loss_epoch", "val/loss", trained_run.config.monitor} <= logged  # what every task logs

    # One row per epoch, with every metric logged per epoch and the learning rate; no per-step
    # values, no test values, and no metric that the run did not log (another task's).
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["step"] for row in rows] == [trainer.global_step / 2, trainer.global_step]
    learning_rates = {tag for tag in tags if tag.startswith("lr-")}  # the LR monitor's, per step
    for row in rows:
        assert per_epoch(row) == logged and set(row) - logged <= NOT_METRICS | learning_rates, sorted(row)
    # The values TensorBoard received, epoch by epoch (it counts the steps from 0: one less).
    for name in logged:
        values = [(event.step + 1, event.value) for event in events.Scalars(name)]
        assert values == [(row["step"], pytest.approx(row[name])) for row in rows], name
    assert rows[-1]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]

    summary = json.loads((directory / "summary.json").read_text())
    best = trainer.checkpoint_callback
    monitor, mode = trained_run.config.monitor, trained_run.config.monitor_mode
    assert summary["best_checkpoint"] == best.best_model_path and Path(best.best_model_path).is_file()
    assert summary["monitor"] == monitor
    assert summary["best_score"] == pytest.approx(best.best_model_score.item())
    best_of = min if mode == "min" else max
    assert summary["best_score"] == pytest.approx(best_of(row[monitor] for row in rows))
    tested = {name: value.item() for name, value in trainer.callback_metrics.items() if "test/" in name}
    # Every metric the test logged, and only those.
    assert set(summary["test"]) == {tag for tag in tags if tag.startswith("test/")} == set(tested)
    assert "test/loss" in summary["test"] and summary["test"] == pytest.approx(tested)
    assert (summary["epochs"], summary["steps"]) == (2, trainer.global_step) and summary["wall_time_s"] > 0
    assert summary["config"] == str(directory / "config.yaml")
    assert summary["last_epoch"] == pytest.approx(rows[-1])

    page = (directory / "summary.md").read_text()
    assert page.startswith("# Run summary")
    assert f"| best {monitor} | {summary['best_score']:.4g} |" in page
    assert all(f"| {name} | {value:.4g} |" in page for name, value in summary["test"].items())
    # One panel per metric that the task logs per epoch: e.g. loss, acc and f1, or loss, mae, rmse and r2.
    assert png_size(directory / "curves.png") == (PANEL_WIDTH * len(curves_of(tags)), HEIGHT)
    assert (directory / "curves.png").stat().st_size > 10_000  # drawn, not blank


@pytest.mark.parametrize("logger", [NO_LOGGER, CSV_LOGGER], ids=["none", "csv"])
def test_any_logger_or_none(
    run_cli: RunCLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: tuple[str, ...]
) -> None:
    drawn: list[dict[str, Any]] = []
    save = Figure.savefig

    def record_and_save(figure: Figure, *args: Any, **kwargs: Any) -> None:
        """What each panel of curves.png shows: its title and the stages drawn in it."""
        for axes in figure.axes:
            drawn.append({"title": axes.get_title(), "stages": [line.get_label() for line in axes.lines]})
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record_and_save)
    cli = run_cli("--config", "configs/debug/limit_batches.yaml", *SHORT, *logger)
    # Without a logger the run's directory is default_root_dir; a CSVLogger has a version directory.
    directory = Path(cli.trainer.logger.log_dir) if cli.trainer.logger else tmp_path
    assert all((directory / name).is_file() for name in RUN_FILES)
    rows = read_rows(directory)
    assert len(rows) == cli.trainer.current_epoch == 2
    if cli.trainer.logger:  # the CSVLogger's own file: every value logged, an independent record
        with (directory / "metrics.csv").open(newline="") as file:
            logged = per_epoch(next(csv.reader(file)))
        assert per_epoch(rows[-1]) == logged
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["run_directory"] == str(directory)
    assert summary["config_files_given"] == ["configs/debug/limit_batches.yaml"]
    tested = {name: value.item() for name, value in cli.trainer.callback_metrics.items() if "test/" in name}
    assert "test/loss" in tested and summary["test"] == pytest.approx(tested)

    # curves.png: the loss first, then each other metric the run logged per epoch, with the stages
    # it was logged for; whatever the task, nothing it did not log.
    titles = [panel["title"] for panel in drawn]
    assert titles[0] == "loss" and len(titles) == len(set(titles))
    assert set(titles) == curves_of(name for row in rows for name in row)
    for panel in drawn:
        stages = [
            s
            for s in ("train", "val")
            if {f"{s}/{panel['title']}", f"{s}/{panel['title']}_epoch"} & set(rows[-1])
        ]
        assert panel["stages"] == stages, panel


@pytest.mark.parametrize(
    ("logged", "panels"),
    [
        (["train/acc", "train/loss_epoch", "val/acc", "val/f1", "val/loss"], ("loss", "acc", "f1")),
        (
            ["train/loss_epoch", "train/mae", "val/loss", "val/mae", "val/r2", "val/rmse"],
            ("loss", "mae", "r2", "rmse"),
        ),
        (["train/loss_epoch", "train/perplexity", "val/bleu"], ("loss", "perplexity", "bleu")),
    ],
    ids=["classification", "regression", "any"],
)
def test_the_curves_are_whatever_the_run_logs_per_epoch(
    tmp_path: Path, logged: list[str], panels: tuple[str, ...]
) -> None:
    rows = [
        {"epoch": epoch, "step": 10 * epoch, "lr": 0.1, **dict.fromkeys([*logged, *SPEED], 1.0 / (epoch + 1))}
        for epoch in range(3)
    ]
    assert run_files.curve_names(rows) == panels
    run_files.draw_curves(rows, panels, tmp_path / "curves.png")
    assert png_size(tmp_path / "curves.png") == (PANEL_WIDTH * len(panels), HEIGHT)


def test_fast_dev_run_writes_none_of_them(run_cli: RunCLI, tmp_path: Path) -> None:
    run_cli("--config", "configs/debug/fast_dev_run.yaml", *TINY_RUN)
    assert not [path for path in tmp_path.rglob("*") if path.name in RUN_FILES]
