"""A run's results as plain files next to its checkpoints, readable without TensorBoard.

``epochs.csv`` (one row per epoch), ``summary.json`` and ``summary.md`` (best checkpoint, test
metrics, epochs, wall time, config) and ``curves.png`` (each metric the module logs per epoch, the
loss first, against the epoch): what a notebook, a spreadsheet, a diff or a code review can read,
with any logger or none. (Not ``metrics.csv``: Lightning's ``CSVLogger`` writes its own file of
that name in the same directory.)

A row of ``epochs.csv`` holds ``epoch`` (from 0), ``step`` (optimizer steps done by the epoch's end),
one learning-rate column per optimizer, named as ``LearningRateMonitor`` names it in TensorBoard
(``lr-AdamW``; see ``learning_rates``) and valued as there at the epoch's last training step: the
rate that step used. Then every metric logged once per epoch. A resumed run keeps the rows of the
epochs before its checkpoint, whichever directory it resumes into: they travel in the checkpoint.

Each file is written beside its place and then renamed over it (``checkpoint_io.replacing``): a
Ctrl-C or a full disk leaves the previous complete file, never a half-written one.
"""

import csv
import io
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerFn

from {{ cookiecutter.package_name }}.engine.callbacks import model_checkpoint
from {{ cookiecutter.package_name }}.engine.checkpoint_io import replacing

STAGES = ("train", "val")
"""The stages drawn in ``curves.png``, each metric as ``STAGE/NAME`` (or ``STAGE/NAME_epoch``)."""
SPEED = ("train/epoch_time_s", "train/samples_per_s")
"""What ``dashboards.EpochThroughput`` logs per epoch: the run's speed, in ``epochs.csv`` but not a
learning curve."""
CHECKPOINT_KEY = "epochs_csv"
"""Where a checkpoint keeps the rows of ``epochs.csv`` so far, for a resumed run to go on with."""


def run_directory(trainer: L.Trainer) -> Path:
    """Where the run writes: the first logger's version directory, else ``default_root_dir``.

    ``trainer.log_dir`` says the same but broadcasts it from rank 0, a collective; this reads it
    locally, so that it is safe in a hook that only some processes reach.
    """
    logger = trainer.logger
    directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    return Path(directory or trainer.default_root_dir)


def epoch_metrics(trainer: L.Trainer, validated: bool) -> dict[str, float]:
    """What was logged once per epoch: not the per-step values, nor stale validation values, nor
    what ``LearningRateMonitor`` puts there: its values of the last step it logged (every
    ``log_every_n_steps``), not of the epoch's end (``learning_rates`` gives those)."""
    skipped = ("test/",) if validated else ("test/", "val/")
    monitored = {name for c in trainer.callbacks if isinstance(c, LearningRateMonitor) for name in c.lrs}  # type: ignore[attr-defined]
    return {
        name: float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if not name.endswith("_step") and not name.startswith(skipped) and name not in monitored
    }


def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """Each optimizer's current learning rate, named as ``LearningRateMonitor`` names it: ``lr-CLASS``,
    or the schedule's ``name`` where it has one; ``lr-CLASS-1``, ``lr-CLASS-2`` for more optimizers of
    one class; ``/pgN`` (or the group's ``name``) after it for each of several parameter groups."""
    named = {id(config.scheduler.optimizer): config.name for config in trainer.lr_scheduler_configs}
    scheduled_first = sorted(trainer.optimizers, key=lambda optimizer: id(optimizer) not in named)
    seen: Counter[type] = Counter()
    rates: dict[str, float] = {}
    for optimizer in scheduled_first:
        name = named.get(id(optimizer))
        if name is None:
            seen[type(optimizer)] += 1
            count = seen[type(optimizer)]
            name = "lr-" + type(optimizer).__name__ + (f"-{count - 1}" if count > 1 else "")
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            group_name = group.get("name", f"pg{index + 1}" if len(groups) > 1 else None)
            rates[f"{name}/{group_name}" if group_name else name] = float(group["lr"])
    return rates


def write_file(path: Path, content: bytes) -> None:
    """Writes ``content`` beside ``path``, then renames it there: never half-written, whatever stops
    the process; the file it replaces stays whole until then."""
    with replacing(path) as file:
        file.write(content)


def unwritable(path: Path) -> str | None:
    """Why no file can be written at ``path``, which is not a directory, or None: for a one-line error
    before the work. Makes the missing directories, as writing would, and tries a write beside it,
    which also finds a read-only place that the permissions do not tell (a read-only file system;
    root, whom they do not stop)."""
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


def number(text: str) -> float:
    """A value of ``epochs.csv`` as it was written: ``epoch`` and ``step`` as integers."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def read_epochs(path: Path) -> list[dict[str, float]]:
    """The rows of an ``epochs.csv`` file, without the columns that a row leaves empty."""
    with path.open(newline="", encoding="utf-8") as file:
        return [{name: number(value) for name, value in row.items() if value} for row in csv.DictReader(file)]


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
    with replacing(path) as file:
        figure.savefig(file, format="png", dpi=100)


class RunFiles(Callback):
    """Writes ``epochs.csv``, ``summary.json``, ``summary.md`` and ``curves.png`` in the run's directory.

    ``epochs.csv`` is rewritten after every epoch, so it is there while a run trains and after one
    is stopped; the curves are drawn after training, the summaries written then and again after the
    test. Only rank 0 writes, and only from values that are already the same on every process
    (logged epoch metrics, the checkpoint's best score): no collective runs here. ``fast_dev_run``
    writes nothing.

    Every checkpoint holds the rows so far (``CHECKPOINT_KEY``); one saved at an epoch's end, once
    the module logged that epoch's metrics (``ModelCheckpoint`` saves then), holds that epoch's row
    too. A run resumed from it starts from those rows and, when it resumes into the directory
    that it stopped in, from the rows of its ``epochs.csv`` that the checkpoint lacks (one saved
    during validation, before the epoch's training metrics were in); the epochs that it trains
    again replace theirs.
    """

    def __init__(self, curves: Sequence[str] | None = None) -> None:
        # The metrics drawn in curves.png, each as `train/NAME` and `val/NAME`; None: every one
        # that the run logs per epoch (curve_names).
        self.curves = tuple(curves) if curves is not None else None
        self.rows: list[dict[str, float]] = []
        self.pending: dict[str, float] | None = None  # the epoch that just ended, not yet complete
        self.rates: dict[str, float] = {}  # the learning rates of the epoch's latest training step
        self.resumed = False  # rows from a checkpoint, to be joined with epochs.csv's at the first epoch
        self.validated = False
        self.test_metrics: dict[str, float] = {}
        self.directory: Path | None = None
        self.started = math.nan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if math.isnan(self.started):
            self.started = time.monotonic()
        self.directory = None if trainer.fast_dev_run else run_directory(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.resumed:
            self.resumed = False
            self.rows = self.earlier_rows(trainer.current_epoch)
        self.complete_epoch(trainer)
        self.validated = False
        self.rates = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.rates = learning_rates(trainer)  # read where LearningRateMonitor reads them: before the step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rates = self.rates or learning_rates(trainer)  # an epoch without a batch: the current ones
        self.pending = {"epoch": trainer.current_epoch, "step": trainer.global_step, **rates}  # steps done

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # A pending epoch is complete by now: its checkpoint is saved after the module's epoch end.
        self.complete_epoch(trainer)
        checkpoint[CHECKPOINT_KEY] = [dict(row) for row in self.rows]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # not the best checkpoint that the test loads
            self.rows = [dict(row) for row in checkpoint.get(CHECKPOINT_KEY, [])]
            self.resumed = True

    def earlier_rows(self, first_epoch: int) -> list[dict[str, float]]:
        """The rows of the epochs before ``first_epoch``, the first that the resumed run trains: the
        checkpoint's, and those that only the ``epochs.csv`` of the directory has."""
        path = self.directory / "epochs.csv" if self.directory is not None else None
        on_disk = read_epochs(path) if path is not None and path.is_file() else []
        by_epoch = {row["epoch"]: row for row in [*on_disk, *self.rows] if row["epoch"] < first_epoch}
        return [by_epoch[epoch] for epoch in sorted(by_epoch)]

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
        Lightning calls after this callback's; they are all in by the epoch's checkpoint (saved
        after it), the next epoch's start, or the end of training, whichever comes first.
        """
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        logged = epoch_metrics(trainer, self.validated).items()
        metrics = {name: value for name, value in logged if name not in pending}  # the epoch's rates win
        self.rows.append({**pending, **metrics})  # epoch, step and the rates first
        if self.directory is None or not trainer.is_global_zero:
            return
        names = list(dict.fromkeys(name for row in self.rows for name in row))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=names)
        writer.writeheader()
        writer.writerows(self.rows)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_file(self.directory / "epochs.csv", text.getvalue().encode("utf-8"))

    def write_summary(self, trainer: L.Trainer) -> None:
        if self.directory is None or not trainer.is_global_zero:
            return
        summary = self.summary(trainer)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_file(self.directory / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
        write_file(self.directory / "summary.md", markdown(summary).encode("utf-8"))

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
            # Epochs trained, those before a resume too: the rows of epochs.csv, last_epoch's epoch + 1.
            "epochs": trainer.current_epoch,
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
