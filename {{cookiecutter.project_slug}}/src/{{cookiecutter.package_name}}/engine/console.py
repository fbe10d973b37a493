"""What train.py prints: Lightning's own lines, less start-up chatter and warnings a user cannot act on;
the short ``--help``."""

import errno
import json
import logging
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from torch import Tensor

# Lines of Lightning's that the hardware line and main() say better.
CHATTER = (
    "GPU available:", "TPU available:", "HPU available:", "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    "`Trainer.fit` stopped",  # logged under the live bar, which Rich then draws twice; main() says it after
    "The following callbacks returned in `LightningModule.configure_callbacks`",  # the same, again for test
)  # fmt: skip
IGNORED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside torch's own tracing
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",  # inside Lightning's all_gather
    r"It is recommended to use `self\.log\('(train|val|test)/",  # torchmetrics already synced them
    r"You're resuming from a checkpoint that ended before the epoch ended",  # SeededDataModule resumes
    r"LightningCLI's args parameter is intended to run from within Python",  # cli.main's, on purpose
)
# Ours because LightningCLI's --help is about a thousand lines of Trainer options; it stays as --help all.
HELP = """usage: python {prog} [fit|validate|test|predict] [--config FILE] [--KEY VALUE ...] [--print_config]
No command: fit, then test the best checkpoint. validate, test and predict use --ckpt_path (a file, or last);
predict writes --predict_path FILE. Each --config FILE is layered on configs/default.yaml.

Keys set by configs/default.yaml, as resolved here:
{keys}

--model.net.help CLASS (or model.optimizer, data) lists a class's arguments; --help all lists every key."""


def drop_chatter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(CHATTER)


class FullDiskInWriterThread:
    """Hides TensorBoard's writer thread's full-disk traceback: the run's next write raises it again."""

    def __init__(self, previous: Callable[[threading.ExceptHookArgs], object]) -> None:
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        full_disk = isinstance(args.exc_value, OSError) and args.exc_value.errno == errno.ENOSPC
        if not (full_disk and type(args.thread).__module__.startswith("tensorboard.")):
            self.previous(args)


def quiet_start_up() -> None:
    """Installs the filters once, however often it runs (tune.py runs many trials in one process)."""
    if not isinstance(threading.excepthook, FullDiskInWriterThread):
        threading.excepthook = FullDiskInWriterThread(threading.excepthook)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(drop_chatter)  # (addFilter skips a filter already there)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # (replaces an equal filter)


def results_line(stage: str, metrics: Mapping[str, Tensor | float]) -> str:
    """``Test: acc 0.9815  f1 0.9811  loss 0.0712``: the stage's metrics at 4 significant digits."""
    shown = sorted(
        (name.split("/", 1)[1], float(v)) for name, v in metrics.items() if name.startswith(stage + "/")
    )
    return f"{stage.capitalize()}: " + "  ".join(f"{name} {value:.4g}" for name, value in shown)


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            keys |= flat(value, f"{prefix}{key}.")
        else:
            keys[prefix + key] = value
    return keys


def short_help(default_config: str, resolved_config: str, prog: str) -> str:
    """The keys that the default config sets, each with its value in the resolved one."""
    resolved, lines = flat(yaml.safe_load(resolved_config)), []
    for key in flat(yaml.safe_load(default_config)):
        value = resolved[key]
        many = isinstance(value, list) and value and isinstance(value[0], dict)
        lines.append(f"  --{key} " + (f"({len(value)} entries)" if many else json.dumps(value, default=str)))
    return HELP.format(prog=prog, keys="\n".join(lines))
