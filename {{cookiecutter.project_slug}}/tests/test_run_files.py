"""Each run leaves its results as plain files (epochs.csv, summary.json and .md, curves.png)."""

import csv
import json
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningCLI
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine import run_files
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, NO_LOGGER, TINY_RUN, RunCLI, train

RUN_FILES = ("epochs.csv", "summary.json", "summary.md", "curves.png")
SHORT = ("--trainer.max_epochs", "2", *TINY_RUN)
SHORT += ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
SHORT += ("--trainer.limit_test_batches", "2")
CSV_LOGGER = ("--trainer.logger", "lightning.pytorch.loggers.CSVLogger")
NOT_METRICS = {"epoch", "step"}
"""The columns of epochs.csv that RunFiles adds to the logged metrics, besides the learning rates."""
SPEED = {"train/epoch_time_s", "train/samples_per_s"}
"""What EpochThroughput logs per epoch: in epochs.csv, but the run's speed, not a learning curve."""
PANEL_WIDTH, HEIGHT = 500, 400
"""Pixels of one panel of curves.png (5 x 4 inches at 100 dpi)."""


def read_rows(directory: Path) -> list[dict[str, float]]:
    with (directory / "epochs.csv").open(newline="") as file:
        return [{name: float(value) for name, value in row.items() if value} for row in csv.DictReader(file)]


def learning_rate_columns(row: Iterable[str]) -> set[str]:
    """The columns that are neither a metric nor the epoch and step: the learning rates."""
    return {
        name for name in row if not name.startswith(("train/", "val/", "test/")) and name not in NOT_METRICS
    }


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
    assert all(learning_rate_columns(row) == learning_rates for row in rows)  # one per optimizer

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


@pytest.mark.slow
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
    # Without a logger the run's directory is its version_N, as default_root_dir; a CSVLogger has its own.
    directory = Path(cli.trainer.logger.log_dir) if cli.trainer.logger else tmp_path / "version_0"
    assert Path(cli.trainer.log_dir) == directory
    assert all((directory / name).is_file() for name in RUN_FILES)
    rows = read_rows(directory)
    assert len(rows) == cli.trainer.current_epoch == 2
    # The learning rate without a LearningRateMonitor too, named as it would name it.
    optimizer = cli.trainer.optimizers[0]
    assert all(learning_rate_columns(row) == {f"lr-{type(optimizer).__name__}"} for row in rows)
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


@pytest.mark.slow
def test_fast_dev_run_writes_none_of_them(run_cli: RunCLI, tmp_path: Path) -> None:
    run_cli("--config", "configs/debug/fast_dev_run.yaml", *TINY_RUN)
    assert not [path for path in tmp_path.rglob("*") if path.name in RUN_FILES]


@pytest.mark.slow
def test_the_learning_rate_is_one_column_per_optimizer_at_the_epochs_last_step(run_cli: RunCLI) -> None:
    # The default schedule changes the rate every step; TensorBoard gets it before every step.
    cli = run_cli("fit", *SHORT, "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1")
    directory = Path(cli.trainer.log_dir)
    events = EventAccumulator(str(directory))
    events.Reload()
    logged = {tag for tag in events.Tags()["scalars"] if tag.startswith("lr-")}  # LearningRateMonitor's
    assert len(logged) == len(cli.trainer.optimizers)
    rows = read_rows(directory)
    for row in rows:
        assert learning_rate_columns(row) == logged, sorted(row)
        for tag in logged:  # what the epoch's last step used: TensorBoard counts the steps from 0
            (rate,) = [event.value for event in events.Scalars(tag) if event.step == row["step"] - 1]
            assert row[tag] == pytest.approx(rate, rel=1e-6), (tag, row["epoch"])
    assert len({row[tag] for row in rows for tag in logged}) == len(rows)  # it did change every epoch


TASK = class_of(yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["class_path"])
"""The LightningModule that the default config trains: a test stops a run inside its hooks."""
RESUMED = ("fit", *SHORT, *CONSTANT_LR, "--trainer.max_epochs", "4")


def drawn_epochs(monkeypatch: pytest.MonkeyPatch) -> list[list[float]]:
    """Records the epochs of every line that the next curves.png draws."""
    lines: list[list[float]] = []
    save = Figure.savefig

    def record_and_save(figure: Figure, *args: Any, **kwargs: Any) -> None:
        lines.extend(list(line.get_xdata()) for axes in figure.axes for line in axes.lines)
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record_and_save)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["after epoch 1", "after epoch 1, saved in validation", "during epoch 2"])
def test_a_resumed_run_keeps_the_epochs_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """Stopped with Ctrl-C, then resumed from its checkpoint into its own directory and into another
    one: epochs.csv, curves.png and the summary hold every epoch of the run, each once. A checkpoint
    saved during validation (val_check_interval) lacks its epoch's row: only its own directory has it."""
    in_validation = "validation" in stop
    resumed = (*RESUMED, "--trainer.val_check_interval", "3") if in_validation else RESUMED
    if stop.startswith("after epoch 1"):  # at the start of epoch 2: last.ckpt holds epochs 0 and 1 (or 0)

        def on_train_epoch_start(self: L.LightningModule) -> None:
            if self.current_epoch == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(TASK, "on_train_epoch_start", on_train_epoch_start)
        name = "last.ckpt"
    else:  # after a step of epoch 2: interrupted.ckpt
        training_step = TASK.training_step

        def interrupted(self: L.LightningModule, batch: object, batch_idx: int) -> torch.Tensor:
            if self.current_epoch == 2 and batch_idx == 1:
                raise KeyboardInterrupt
            return training_step(self, batch, batch_idx)

        monkeypatch.setattr(TASK, "training_step", interrupted)
        name = "interrupted.ckpt"
    with pytest.raises(SystemExit):
        train(tmp_path / "runs", *resumed)
    monkeypatch.undo()
    stopped = tmp_path / "runs" / "version_0"
    before = read_rows(stopped)
    assert [row["epoch"] for row in before] == [0, 1]
    checkpoint = stopped / "checkpoints" / name
    elsewhere = shutil.copy(checkpoint, tmp_path / "stopped.ckpt")  # not of the experiment: a new directory

    own = (tmp_path / "runs", checkpoint)
    resumes = [own] if in_validation else [(tmp_path / "other", elsewhere), own]
    for root, ckpt_path in resumes:
        lines = drawn_epochs(monkeypatch)
        cli = train(root, *resumed, "--ckpt_path", str(ckpt_path))
        monkeypatch.undo()
        directory = Path(cli.trainer.log_dir)
        assert directory == (stopped if root == tmp_path / "runs" else root / "version_0")
        rows = read_rows(directory)
        assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
        assert rows[:2] == [pytest.approx(row) for row in before]  # the epochs before, as they were
        assert [row["step"] for row in rows] == [3, 6, 9, 12]
        assert all(per_epoch(row) == per_epoch(rows[0]) for row in rows)  # every metric, every epoch
        assert lines and all(line == [0, 1, 2, 3] for line in lines)
        summary = json.loads((directory / "summary.json").read_text())
        assert summary["epochs"] == len(rows) == summary["last_epoch"]["epoch"] + 1 == 4


def early_stopping_config(path: Path) -> Path:
    """The default callbacks, with early stopping after one epoch without a gain of 1000."""
    callbacks = yaml.safe_load(DEFAULT_CONFIG.read_text())["trainer"]["callbacks"]
    for callback in callbacks:
        if issubclass(class_of(callback["class_path"]), EarlyStopping):
            callback["init_args"] = {**callback.get("init_args", {}), "patience": 1, "min_delta": 1000.0}
    path.write_text(yaml.safe_dump({"trainer": dict(callbacks=callbacks)}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("end", ["max_epochs", "early stopping"])
def test_the_summary_counts_the_epochs_trained(run_cli: RunCLI, tmp_path: Path, end: str) -> None:
    stopping = ("--config", str(early_stopping_config(tmp_path / "stop.yaml"))) if end != "max_epochs" else ()
    cli = run_cli(*stopping, *SHORT, "--trainer.max_epochs", "3" if end == "max_epochs" else "10")
    stopper = next(c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping))
    trained = 3 if end == "max_epochs" else stopper.stopped_epoch + 1
    assert (stopper.stopped_epoch > 0) == (end != "max_epochs") and trained < 10
    directory = Path(cli.trainer.log_dir)
    rows = read_rows(directory)
    summary = json.loads((directory / "summary.json").read_text())  # written again after the test
    assert summary["epochs"] == len(rows) == summary["last_epoch"]["epoch"] + 1 == trained
    assert f"| epochs | {trained} |" in (directory / "summary.md").read_text()
