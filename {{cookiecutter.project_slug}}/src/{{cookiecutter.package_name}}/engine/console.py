"""What a run prints: the hardware line, the model summary, the progress bar and the results.

Lightning's start-up chatter (device availability, an advertisement, a note that the model
summary callback is already configured) and warnings about code outside this project that a user
cannot act on are left out; everything else Lightning says still shows.
"""

import errno
import logging
import threading
import warnings
from collections.abc import Callable, Mapping

from torch import Tensor

CHATTER = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    # Logged while the progress bar is live, which makes Rich print the bar a second time;
    # main() says how training ended once the bar is gone.
    "`Trainer.fit` stopped",
    # A task's dashboards, attached again for the test after fit: the same callbacks, not a clash.
    "The following callbacks returned in `LightningModule.configure_callbacks`",
)
"""Lines of Lightning's that say nothing the hardware line and main() do not say better."""

IGNORED_WARNINGS = (
    # Raised inside torch's own tracing (the TensorBoard graph, export) by newer torch versions.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Raised inside Lightning's all_gather by newer torch versions.
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
    # The tasks log epoch values that torchmetrics already reduced over the processes (tasks/base.py);
    # Lightning, which reads them after the hook, advises sync_dist, which would reduce them again.
    r"It is recommended to use `self\.log\('(train|val|test)/",
    # A SeededDataModule resumes mid-epoch itself, from its own state in the checkpoint; a plain
    # LightningDataModule gets a warning of train_cli.py's instead.
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # cli.main hands LightningCLI the command line without its subcommand, on purpose.
    r"LightningCLI's args parameter is intended to run from within Python",
)


class DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CHATTER)


class FullDiskInWriterThread:
    """TensorBoard's writing thread fails on a full disk, and the run's next write raises the same
    error, which ``main`` reports in one line; the thread's own traceback would bury that line."""

    def __init__(self, previous: Callable[[threading.ExceptHookArgs], object]) -> None:
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        full_disk = isinstance(args.exc_value, OSError) and args.exc_value.errno == errno.ENOSPC
        if not (full_disk and type(args.thread).__module__.startswith("tensorboard.")):
            self.previous(args)


def quiet_start_up() -> None:
    """Installs the filters; calling it again adds nothing (tune.py runs many trials in one process)."""
    if not isinstance(threading.excepthook, FullDiskInWriterThread):
        threading.excepthook = FullDiskInWriterThread(threading.excepthook)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropChatter) for existing in logger.filters):
            logger.addFilter(DropChatter())
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def results_line(stage: str, metrics: Mapping[str, Tensor | float]) -> str:
    """``Test: acc 0.9815  f1 0.9811  loss 0.0712``: the stage's metrics at 4 significant digits."""
    prefix = f"{stage}/"
    values = {name.removeprefix(prefix): float(v) for name, v in metrics.items() if name.startswith(prefix)}
    shown = "  ".join(f"{name} {value:.4g}" for name, value in sorted(values.items()))
    return f"{stage.capitalize()}: {shown}"
