"""A run's results as plain files next to its checkpoints, readable without TensorBoard.

``epochs.csv`` (one row per epoch), ``summary.json`` and ``summary.md`` (best checkpoint, test
metrics, epochs, wall time, config) and ``curves.png`` (each metric the module logs per epoch, the
loss first, against the epoch): what a notebook, a spreadsheet, a diff or a code review can read,
with any logger or none. (Not ``metrics.csv``: Lightning's ``CSVLogger`` writes its own file of
that name in the same directory.)
"""

import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback

from {{ cookiecutter.package_name }}.engine.callbacks import model_checkpoint

STAGES = ("train", "val")
"""The stages drawn in ``curves.png``, each metric as ``STAGE/NAME`` (or ``STAGE/NAME_epoch``)."""
SPEED = ("train/epoch_time_s", "train/samples_per_s")
"""What ``dashboards.EpochThroughput`` logs per epoch: the run's speed, in ``epochs.csv`` but not a
learning curve."""


def run_directory(trainer: L.Trainer) -> Path:
    """Where the run writes: the first logger's version directory, else ``default_root_dir``.

    ``trainer.log_dir`` says the same but broadcasts it from rank 0, a collective; this reads it
    locally, so that it is safe in a hook that only some processes reach.
    """
    logger = trainer.logger
    directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    return Path(directory or trainer.default_root_dir)


def epoch_metrics(trainer: L.Trainer, validated: bool) -> dict[str, float]:
    """What was logged once per epoch: not the per-step values, nor stale validation values."""
    skipped = ("test/",) if validated else ("test/", "val/")
    return {
        name: float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if not name.endswith("_step") and not name.startswith(skipped)
    }


def curve_names(rows: list[dict[str, float]]) -> tuple[str, ...]:
    """The metrics logged per epoch as ``train/NAME`` or ``val/NAME``, whatever the task: one panel
    each, the loss first, then in the order of ``epochs.csv``. ``NAME_epoch`` is ``NAME``: a metric
    that is also logged per step (the training loss) gets that suffix per epoch."""
    names = [
        name.partition("/")[2].removesuffix("_epoch")
        for row in rows
        for name in row
        if name.partition("/")[0] in STAGES and name not in SPEED
    ]
    ordered = list(dict.fromkeys(names))
    return tuple(sorted(ordered, key=lambda name: name != "loss"))  # stable: the rest keep their order


def draw_curves(rows: list[dict[str, float]], panels: Sequence[str], path: Path) -> None:
    """One panel per metric, training and validation against the epoch, as a PNG file.

    matplotlib is imported here, not at the top, so that ``python train.py --help`` stays fast.
    ``Figure`` with the Agg canvas draws without pyplot: no display, no global state.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for color, stage in enumerate(STAGES):  # a stage has one colour in every panel
            names = (f"{stage}/{metric}_epoch", f"{stage}/{metric}")  # the loss is also logged per step
            name = next((name for name in names if any(name in row for row in rows)), None)
            if name is not None:
                points = [(row["epoch"], row[name]) for row in rows if name in row]
                axes.plot(*zip(*points, strict=True), marker="o", label=stage, color=f"C{color}")
        axes.set(title=metric, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
    figure.savefig(path, dpi=100)


class RunFiles(Callback):
    """Writes ``epochs.csv``, ``summary.json``, ``summary.md`` and ``curves.png`` in the run's directory.

    ``epochs.csv`` is rewritten after every epoch, so it is there while a run trains and after one
    is stopped; the curves are drawn after training, the summaries written then and again after the
    test. Only rank 0 writes, and only from values that are already the same on every process
    (logged epoch metrics, the checkpoint's best score): no collective runs here. ``fast_dev_run``
    writes nothing.
    """

    def __init__(self, curves: Sequence[str] | None = None) -> None:
        # The metrics drawn in curves.png, each as `train/NAME` and `val/NAME`; None: every one
        # that the run logs per epoch (curve_names).
        self.curves = tuple(curves) if curves is not None else None
        self.rows: list[dict[str, float]] = []
        self.pending: dict[str, float] | None = None  # the epoch that just ended, not yet complete
        self.validated = False
        self.test_metrics: dict[str, float] = {}
        self.directory: Path | None = None
        self.started = math.nan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if math.isnan(self.started):
            self.started = time.monotonic()
        self.directory = None if trainer.fast_dev_run else run_directory(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.pending = {"epoch": trainer.current_epoch, "step": trainer.global_step}  # steps done
        if optimizer is not None:
            self.pending["lr"] = optimizer.param_groups[0]["lr"]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.write_summary(trainer)
        if self.directory is not None and self.rows and trainer.is_global_zero:
            panels = self.curves if self.curves is not None else curve_names(self.rows)
            if panels:
                draw_curves(self.rows, panels, self.directory / "curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = sorted(trainer.callback_metrics.items())
        self.test_metrics = {name: float(value) for name, value in metrics if name.startswith("test/")}
        self.write_summary(trainer)

    def complete_epoch(self, trainer: L.Trainer) -> None:
        """Adds the epoch that ended to ``epochs.csv``.

        The LightningModule logs its epoch metrics in its own ``on_train_epoch_end``, which
        Lightning calls after this callback's; they are all in by the next epoch's start, or the
        end of training.
        """
        if self.pending is None:
            return
        row, self.pending = {**self.pending, **epoch_metrics(trainer, self.validated)}, None
        self.rows.append(row)
        if self.directory is None or not trainer.is_global_zero:
            return
        names = list(dict.fromkeys(name for row in self.rows for name in row))
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "epochs.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.rows)

    def write_summary(self, trainer: L.Trainer) -> None:
        if self.directory is None or not trainer.is_global_zero:
            return
        summary = self.summary(trainer)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (self.directory / "summary.md").write_text(markdown(summary), encoding="utf-8")

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        checkpoint = model_checkpoint(trainer)
        score = checkpoint.best_model_score if checkpoint is not None else None
        saved = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)  # type: ignore[attr-defined]
        config_file = self.directory / saved.config_filename if saved is not None else None
        given = saved.config.get("config") if saved is not None else None
        return {
            "run_directory": str(self.directory),
            "config": str(config_file) if config_file is not None and config_file.is_file() else None,
            "config_files_given": [str(path) for path in given or []],
            "epochs": trainer.current_epoch,  # completed, also those before a resume
            "steps": trainer.global_step,
            "wall_time_s": round(time.monotonic() - self.started, 1),
            "best_checkpoint": (checkpoint.best_model_path or None) if checkpoint is not None else None,
            "monitor": checkpoint.monitor if checkpoint is not None else None,
            "best_score": float(score) if score is not None else None,
            "last_epoch": self.rows[-1] if self.rows else None,
            "test": self.test_metrics,
        }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a short Markdown page, for a pull request or a lab notebook."""

    def cell(value: object) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)
        return text.replace("|", "\\|")

    lines = ["# Run summary", "", "| | |", "|---|---|"]
    for key in ("run_directory", "config", "epochs", "steps", "wall_time_s", "best_checkpoint"):
        lines.append(f"| {key} | {cell(summary[key])} |")
    if summary["monitor"] is not None:
        lines.append(f"| best {summary['monitor']} | {cell(summary['best_score'])} |")
    for title, metrics in (("Last epoch", summary["last_epoch"] or {}), ("Test", summary["test"])):
        if metrics:
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {name} | {cell(value)} |" for name, value in metrics.items()]
    return "\n".join(lines) + "\n"
