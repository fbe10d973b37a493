"""A run's results as plain files beside its checkpoints, for any logger or none: ``epochs.csv``,
``summary.json``, ``summary.md`` and ``curves.png``."""

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerFn

from {{ cookiecutter.package_name }}.engine.callbacks import model_checkpoint
from {{ cookiecutter.package_name }}.engine.checkpoint_io import replacing
from {{ cookiecutter.package_name }}.engine.dashboards import learning_rates

STAGES = ("train", "val")
SPEED = ("train/epoch_time_s", "train/samples_per_s")  # dashboards.EpochThroughput's: not a learning curve
Row = dict[str, float]


def curve_names(rows: list[Row]) -> tuple[str, ...]:
    """One panel per ``train/NAME`` or ``val/NAME`` (or ``NAME_epoch``) in the rows: the loss first."""
    names = [
        name.partition("/")[2].removesuffix("_epoch")
        for row in rows
        for name in row
        if name.partition("/")[0] in STAGES and name not in SPEED
    ]
    return tuple(sorted(dict.fromkeys(names), key=lambda name: name != "loss"))  # stable sort


def draw_curves(rows: list[Row], panels: tuple[str, ...], path: Path) -> None:
    """A panel per metric against the epoch; a pyplot-free ``Figure`` needs no display, imported here
    to keep ``train.py --help`` fast."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for color, stage in enumerate(STAGES):  # a stage has one colour in every panel
            names = (stage + "/" + metric + "_epoch", stage + "/" + metric)
            points = [(row["epoch"], row[name]) for row in rows for name in names if name in row]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=stage, color="C" + str(color))
        axes.set(title=metric, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    with replacing(path) as file:
        figure.savefig(file, format="png", dpi=100)


class RunFiles(Callback):
    """Writes the files on rank 0 (none in fast_dev_run); the rows travel in each checkpoint for a resume."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.pending: Row | None = None  # the epoch that ended, until the module has logged its metrics
        self.rates: Row = {}
        self.validated = False
        self.directory: Path | None = None
        self.started = time.monotonic()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        directory = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: on every rank
        self.directory = directory if trainer.is_global_zero and not trainer.fast_dev_run else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.validated = False
        self.rates = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's last step: read once, not per step
            self.rates = learning_rates(trainer)  # where LearningRateMonitor reads them: before the step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rates and trainer.current_epoch in {row["epoch"] for row in self.rows}:
            return  # the end of a checkpoint's epoch, replayed on resume: its row is already kept
        rates = self.rates or learning_rates(trainer)  # an epoch cut short or without batches: as they are
        self.pending = {"epoch": trainer.current_epoch, "step": trainer.global_step, **rates}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.complete_epoch(trainer)  # saved after the module's epoch end: its metrics are in
        checkpoint["epochs_csv"] = [dict(row) for row in self.rows]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING or self.directory is None:  # not the test's best one
            return
        path = self.directory / "epochs.csv"  # in its own directory: rows a checkpoint in validation lacks
        with path.open(newline="", encoding="utf-8") if path.is_file() else io.StringIO() as file:
            on_disk = [
                {name: float(value) for name, value in row.items() if value} for row in csv.DictReader(file)
            ]
        by_epoch = {int(row["epoch"]): row for row in [*on_disk, *checkpoint.get("epochs_csv", [])]}
        self.rows = [  # the checkpoint's rows win
            {**by_epoch[epoch], "epoch": epoch, "step": int(by_epoch[epoch]["step"])}
            for epoch in sorted(by_epoch)
        ]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.write_summary(trainer)
        if self.directory is not None and self.rows:
            draw_curves(self.rows, curve_names(self.rows), self.directory / "curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_summary(trainer)

    def complete_epoch(self, trainer: L.Trainer) -> None:
        """Adds the ended epoch's row once the module's ``on_train_epoch_end`` (after ours) has logged."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        skipped = ("test/",) if self.validated else ("test/", "val/")  # not validated: stale val/ values
        metrics = {
            name: float(value)
            for name, value in sorted(trainer.callback_metrics.items())
            if not name.endswith("_step") and not name.startswith(skipped) and name not in pending
        }
        kept = [row for row in self.rows if row["epoch"] < pending["epoch"]]  # a resume trains the rest again
        self.rows = [*kept, {**pending, **metrics}]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=dict.fromkeys(name for row in self.rows for name in row))
        writer.writeheader()
        writer.writerows(self.rows)
        self.write("epochs.csv", text.getvalue())

    def write_summary(self, trainer: L.Trainer) -> None:
        if self.directory is None:
            return
        checkpoint = model_checkpoint(trainer) or ModelCheckpoint()  # none: an unused one's empty values
        saved = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)  # type: ignore[attr-defined]
        config = self.directory / saved.config_filename if saved else None
        score = checkpoint.best_model_score
        summary = {
            "run_directory": str(self.directory),
            "config": str(config) if config and config.is_file() else None,
            "config_files_given": [
                str(path) for path in (saved.config.get("config") if saved else None) or []
            ],
            "epochs": trainer.current_epoch,  # those before a resume too: last_epoch's epoch + 1
            "steps": trainer.global_step,
            "wall_time_s": round(time.monotonic() - self.started, 1),
            "best_checkpoint": checkpoint.best_model_path or None,
            "monitor": checkpoint.monitor,
            "best_score": float(score) if score is not None else None,
            "last_epoch": self.rows[-1] if self.rows else None,
            "test": {
                k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")
            },
        }
        self.write("summary.json", json.dumps(summary, indent=2) + "\n")
        self.write("summary.md", markdown(summary))

    def write(self, name: str, text: str) -> None:
        """Writes beside the file, then renames it: a Ctrl-C leaves the previous file whole."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            with replacing(self.directory / name) as file:
                file.write(text.encode("utf-8"))


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a short Markdown page, for a pull request or a lab notebook."""
    keys = ("run_directory", "config", "epochs", "steps", "wall_time_s", "best_checkpoint")
    run = {key: summary[key] for key in keys}
    if summary["monitor"] is not None:
        run["best " + summary["monitor"]] = summary["best_score"]
    lines = ["# Run summary", "", "| | |", "|---|---|"]
    for title, values in (("", run), ("Last epoch", summary["last_epoch"] or {}), ("Test", summary["test"])):
        if title and values:
            lines += ["", "## " + title, "", "| metric | value |", "|---|---|"]
        for name, value in values.items():
            text = format(value, ".4g") if isinstance(value, float) else "" if value is None else str(value)
            lines.append("| {} | {} |".format(name, text.replace("|", "\\|")))
    return "\n".join(lines) + "\n"
