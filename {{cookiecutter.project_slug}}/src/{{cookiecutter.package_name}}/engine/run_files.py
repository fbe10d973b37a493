"""A run's results as plain files beside its checkpoints, for any logger or none: ``epochs.csv`` (one
row per epoch), ``summary.json``, ``summary.md`` and ``curves.png`` (not ``metrics.csv``: CSVLogger's)."""

import csv
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerFn

from {{ cookiecutter.package_name }}.engine.callbacks import model_checkpoint
from {{ cookiecutter.package_name }}.engine.checkpoint_io import replacing

STAGES = ("train", "val")
SPEED = ("train/epoch_time_s", "train/samples_per_s")  # dashboards.EpochThroughput's: not a learning curve
Row = dict[str, float]


def learning_rates(trainer: L.Trainer) -> Row:
    """Each optimizer's rate, named as ``LearningRateMonitor`` names it in TensorBoard (``lr-AdamW``,
    ``-1`` for a second of a class, ``/pgN`` per group): its naming is private and needs a logger."""
    named = {id(config.scheduler.optimizer): config.name for config in trainer.lr_scheduler_configs}
    seen: Counter[type] = Counter()
    rates: Row = {}
    for optimizer in sorted(trainer.optimizers, key=lambda optimizer: id(optimizer) not in named):
        name = named.get(id(optimizer))
        if name is None:
            count = seen[type(optimizer)]
            seen[type(optimizer)] += 1
            name = "lr-" + type(optimizer).__name__ + (f"-{count}" if count else "")
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            group_name = group.get("name", f"pg{index + 1}" if len(groups) > 1 else None)
            rates[f"{name}/{group_name}" if group_name else name] = float(group["lr"])
    return rates


def unwritable(path: Path) -> str | None:
    """Why no file can be written at ``path``, or None: a one-line error before the work. Tries a write,
    which also finds a read-only file system, or one that root's permissions do not tell."""
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"cannot be written: '{blocking}' is a file, not a directory"
    probe = path.with_name(f".{path.name}.partial")  # where checkpoint_io.replacing writes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as error:
        return f"cannot be written ({error.strerror or error})"
    return None


def read_epochs(path: Path) -> list[Row]:
    """The rows of an ``epochs.csv`` without its empty cells; ``epoch`` and ``step`` as integers."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = [{name: float(value) for name, value in row.items() if value} for row in csv.DictReader(file)]
    return [{**row, "epoch": int(row["epoch"]), "step": int(row["step"])} for row in rows]


def curve_names(rows: list[Row]) -> tuple[str, ...]:
    """One panel per ``train/NAME`` or ``val/NAME`` (``NAME_epoch`` too: logged also per step) that
    the rows hold, whatever the task: the loss first, then in the order of ``epochs.csv``."""
    names = [
        name.partition("/")[2].removesuffix("_epoch")
        for row in rows
        for name in row
        if name.partition("/")[0] in STAGES and name not in SPEED
    ]
    return tuple(sorted(dict.fromkeys(names), key=lambda name: name != "loss"))  # stable sort


def draw_curves(rows: list[Row], panels: tuple[str, ...], path: Path) -> None:
    """Training and validation against the epoch, a panel per metric; a ``Figure`` without pyplot draws
    without a display, and the import here keeps ``train.py --help`` fast."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for color, stage in enumerate(STAGES):  # a stage has one colour in every panel
            names = (f"{stage}/{metric}_epoch", f"{stage}/{metric}")  # the loss is also logged per step
            points = [(row["epoch"], row[name]) for row in rows for name in names if name in row]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=stage, color=f"C{color}")
        axes.set(title=metric, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    with replacing(path) as file:  # written beside, then renamed: never half a file
        figure.savefig(file, format="png", dpi=100)


class RunFiles(Callback):
    """Writes ``epochs.csv`` after every epoch, the curves after training, the summaries then and after
    the test: on rank 0, from values equal on every rank, no collective; none in fast_dev_run.

    The rows so far travel in every checkpoint, so that a resumed run keeps the epochs before it in any
    directory; in its own, also those of ``epochs.csv`` that a checkpoint saved during validation lacks.
    """

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.pending: Row | None = None  # the epoch that ended, until the module has logged its metrics
        self.rates: Row = {}
        self.validated = False
        self.directory: Path | None = None
        self.started = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.started = self.started or time.monotonic()
        directory = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: on every rank
        self.directory = directory if trainer.is_global_zero and not trainer.fast_dev_run else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.validated = False
        self.rates = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.rates = learning_rates(trainer)  # where LearningRateMonitor reads them: before the step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rates and trainer.current_epoch in {row["epoch"] for row in self.rows}:
            return  # the end of a checkpoint's epoch, replayed on resume: its row is already kept
        rates = self.rates or learning_rates(trainer)  # an epoch without a batch: the current ones
        self.pending = {"epoch": trainer.current_epoch, "step": trainer.global_step, **rates}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.complete_epoch(trainer)  # saved after the module's epoch end: its metrics are in
        checkpoint["epochs_csv"] = [dict(row) for row in self.rows]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self.directory is not None:  # not the test's best one
            path = self.directory / "epochs.csv"
            on_disk = read_epochs(path) if path.is_file() else []
            by_epoch = {row["epoch"]: row for row in [*on_disk, *checkpoint.get("epochs_csv", [])]}
            self.rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]  # the checkpoint's rows win

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.complete_epoch(trainer)
        self.write_summary(trainer)
        if self.directory is not None and self.rows:
            draw_curves(self.rows, curve_names(self.rows), self.directory / "curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_summary(trainer)

    def complete_epoch(self, trainer: L.Trainer) -> None:
        """Adds the ended epoch's row once the module has logged its metrics (its ``on_train_epoch_end``
        runs after ours): at the checkpoint, the next epoch's start or the end of training."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        skipped = ("test/",) if self.validated else ("test/", "val/")  # not validated: stale val/ values
        metrics = {  # per epoch; pending's rates are the epoch's, LearningRateMonitor's of its last log
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
        score = checkpoint.best_model_score
        saved = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)  # type: ignore[attr-defined]
        config = self.directory / saved.config_filename if saved is not None else None
        given = saved.config.get("config") if saved is not None else None
        metrics = sorted(trainer.callback_metrics.items())
        summary = {
            "run_directory": str(self.directory),
            "config": str(config) if config is not None and config.is_file() else None,
            "config_files_given": [str(path) for path in given or []],
            "epochs": trainer.current_epoch,  # those before a resume too: last_epoch's epoch + 1
            "steps": trainer.global_step,
            "wall_time_s": round(time.monotonic() - self.started, 1),
            "best_checkpoint": checkpoint.best_model_path or None,
            "monitor": checkpoint.monitor,
            "best_score": float(score) if score is not None else None,
            "last_epoch": self.rows[-1] if self.rows else None,
            "test": {name: float(value) for name, value in metrics if name.startswith("test/")},
        }
        self.write("summary.json", json.dumps(summary, indent=2) + "\n")
        self.write("summary.md", markdown(summary))

    def write(self, name: str, text: str) -> None:
        """Writes beside the file, then renames it there: a Ctrl-C leaves the previous file whole."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            with replacing(self.directory / name) as file:
                file.write(text.encode("utf-8"))


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
