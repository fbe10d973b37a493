"""Per-epoch cost of the generated project's Lightning fit loop against a hand-written PyTorch loop.

Bakes the default project, then, in one process, round after round, three loops over the same
data (the project's training split tiled ``--repeat`` times, the project's validation split):

A. the project's Trainer exactly as ``python train.py`` builds it (its ``engine.cli.main`` with the
   default config: callbacks, TensorBoard logger, Rich progress bar, both checkpoints, early
   stopping, the learning-rate monitor, the dashboards), fitting its ``Classification`` task;
B. the loop of every PyTorch tutorial (zero_grad, forward, loss, backward, step, scheduler step),
   built from the project's resolved config alone: the network class and arguments that
   ``model.net`` names (``SmallCNN(10, in_channels=1, width=32, dropout=0.1)`` by default), loaded
   with A's initial weights; the optimizer class and arguments of ``model.optimizer`` (AdamW, lr
   0.003, weight decay 1e-4); for the default ``model.scheduler``, torch's ``OneCycleLR`` peaking at
   the optimizer's lr over A's total number of optimizer steps, stepped after each step (another
   class is built as the project builds it, with ``(optimizer, total_steps)``; ``null``: none);
   a ``DataLoader`` over the same dataset objects with A's batch size;
C. Lightning's floor: a bare ``Trainer`` (``logger=False``, no progress bar, model summary,
   checkpoints or callbacks but the measuring one that A carries too) fitting the project's
   ``Classification`` task around a new network built as B's, with the optimizer and schedule that A's
   config built, on a DataModule of A's class over the same dataset objects.

All three run one validation pass over the validation split per epoch, on one device, in A's
precision. ``--device cuda`` runs them on the first GPU, where the project picks bf16-mixed
(compute capability 8 or more) or else 16-mixed and turns TF32 matmuls on for the whole process; B
then runs under ``torch.autocast`` with the same dtype, and with a ``GradScaler`` for float16, as
Lightning does. Without a CUDA device that option stops at once with a one-line message.

B alternates with A and with C epoch by epoch: one epoch of B runs at the start of each of their
epochs, and after their last one, so that every epoch of A and of C lies between two of B and a
machine whose speed drifts (a shared or virtual machine) slows them alike. Each round fits A and C
once, each with its own B, in alternating order. An epoch of A (or C) is the time from one
``on_train_epoch_start`` to the next (the last one to the first ``on_train_end`` hook), less the epoch
of B inside it: it includes the validation, logging, progress bar and checkpoint writes. What runs
once per fit, the set-up (sanity check, model summary, graph tracing) and the tear-down after the
last epoch (``curves.png``, ``summary.json``), is reported apart. After each fit, the
optimizer and schedule of B are checked against the fitted loop's: same hyperparameters, same
number of scheduler steps, same final learning rate (B's extra epoch after the fitted loop's last
runs at the schedule's final learning rate). The script prints each loop's median epoch time, the
training images per second that makes, the split of each epoch into its training steps (median
step, from one batch's end to the next) and the rest (validation, epoch ends, checkpoints), the
epoch's work outside its steps timed at the batch ends (target: A's at most twice C's), the
ratios A/B, C/B and A/C, and last the ratio of A's and B's median epoch times as
``overhead ratio: X.XX``. Many short fits (6 rounds of 2 epochs) rather than a few long ones:
on a virtual machine the speed of a whole fit can differ from the next by several percent (where
its memory landed, what the host ran), which only more fits average out.

The progress bar renders as it would on a terminal, into /dev/null: piped to a file, Rich would
skip drawing and the figure would hide its cost (``--no-tty`` measures that case).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import inspect
import itertools
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from common import bake, machine, quiet_stdout, to_flags

TARGET_A_OVER_C = 1.05  # the project adds at most 5% to Lightning's own loop, per epoch
TARGET_REST_OVER_C = 2.0  # A's work per epoch outside its steps, at most twice C's

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""The Trainer precisions that B mirrors with ``torch.autocast``; 32-true runs B as it is."""


def bake_project(output_dir: Path) -> tuple[Path, str]:
    """Generates the default project; returns its directory and its package name."""
    project = bake(output_dir)
    context = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    return project, context["package_name"]


def import_cli(project: Path, package: str) -> ModuleType:
    """Imports the baked package's CLI module from its ``src`` folder, ahead of any installed copy."""
    sys.path.insert(0, str(project / "src"))
    cli = importlib.import_module(f"{package}.engine.cli")
    origin = Path(cli.__file__ or "").resolve()
    if project.resolve() not in origin.parents:
        raise RuntimeError(f"{package} was imported from {origin}, not from the baked project")
    return cli


def resolve(class_path: str) -> Any:
    """The class (or function) that a config's ``class_path`` names."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Mirror:
    """What the three loops share, taken from the project's CLI object before it fits (A)."""

    net: dict[str, Any]  # ``class_path`` and ``init_args``, the sizes linked from the data included
    optimizer: Any  # the parsed ``model.optimizer`` entry: ``class_path`` and ``init_args``
    scheduler: Any  # the parsed ``model.scheduler`` entry, or None
    initial_state: dict[str, torch.Tensor]  # A's network at its initial weights
    num_classes: int
    batch_size: int
    num_workers: int
    persistent_workers: bool
    train_set: Dataset
    val_set: Dataset
    device: torch.device
    precision: str
    compile: bool
    max_epochs: int
    trainer_settings: dict[str, Any] = field(default_factory=dict)  # what C takes over from A

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.precision)

    def build_net(self) -> nn.Module:
        """A new network of the class and arguments the config names, at A's initial weights."""
        net: nn.Module = resolve(self.net["class_path"])(**self.net["init_args"])
        net.load_state_dict(self.initial_state)
        return net


class PlainLoop:
    """The hand-written loop (B), built from the project's config alone; one epoch per call.

    Its schedule spans the fitted loop's total number of optimizer steps, ``steps_per_epoch`` times
    ``epochs``. B runs one epoch more than that (after the fitted loop's last); that epoch trains at
    the schedule's final learning rate.
    """

    def __init__(self, mirror: Mirror, workers: int) -> None:
        self.device = device = mirror.device
        self.net = mirror.build_net().to(device)
        if mirror.compile:  # model.compile: true compiles A's and C's network in place, so B's too
            self.net.compile()
        pin = device.type == "cuda"  # as the project's DataModule does
        self.train_loader = DataLoader(
            mirror.train_set, batch_size=mirror.batch_size, shuffle=True, num_workers=workers, pin_memory=pin
        )
        self.val_loader = DataLoader(
            mirror.val_set, batch_size=mirror.batch_size, num_workers=workers, pin_memory=pin
        )
        optimizer_class = resolve(mirror.optimizer.class_path)
        self.optimizer: torch.optim.Optimizer = optimizer_class(
            self.net.parameters(), **vars(mirror.optimizer.init_args)
        )
        self.total_steps = mirror.max_epochs * len(self.train_loader)
        self.scheduler = make_scheduler(mirror.scheduler, self.optimizer, self.total_steps)
        self.dtype = mirror.autocast_dtype
        # float16 needs loss scaling; bfloat16 does not (as Lightning's 16-mixed and bf16-mixed).
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.steps = 0
        self.times: list[float] = []
        self.step_times: list[float] = []  # each training step after an epoch's first, in seconds

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)  # as Lightning's

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        net, optimizer, scaler, device = self.net, self.optimizer, self.scaler, self.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        with self.autocast():
            loss = F.cross_entropy(net(x), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # as Lightning's 16-mixed does before each step
            scaler.step(optimizer)  # skipped when the gradients overflowed
            scaler.update()
        if self.scheduler is not None and self.steps < self.total_steps:
            self.scheduler.step()
        self.steps += 1

    def run_epoch(self) -> float:
        """Trains one epoch and validates; returns and records its wall time."""
        net, device = self.net, self.device
        synchronize(device)
        start = time.perf_counter()
        net.train()
        stamps = []
        for x, y in self.train_loader:
            self.train_step(x, y)
            stamps.append(time.perf_counter())
        self.step_times += [end - start for start, end in itertools.pairwise(stamps)]
        net.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        total_loss = torch.zeros((), device=device)
        with torch.no_grad(), self.autocast():
            for x, y in self.val_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = net(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(dim=-1) == y).sum()
        self.val_loss, self.val_correct = total_loss.item(), correct.item()  # one read-back per epoch
        synchronize(device)
        self.times.append(time.perf_counter() - start)
        return self.times[-1]


def make_scheduler(
    entry: Any, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """B's schedule for the config's ``model.scheduler`` entry.

    The project's ``OneCycleLR`` is torch's with the optimizer's lr as the peak: B builds torch's,
    as a tutorial would. Any other class gets the run's length by its own horizon keyword where the
    config leaves it unset, as the project's tasks pass it.
    """
    if entry is None:
        return None
    scheduler_class, init_args = resolve(entry.class_path), dict(vars(entry.init_args))
    if issubclass(scheduler_class, torch.optim.lr_scheduler.OneCycleLR):
        peak = init_args.pop("max_lr", None)
        init_args.pop("total_steps", None)
        if peak is None:
            peak = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total_steps, **init_args
        )
    horizon = next((k for k in ("total_steps", "T_max", "total_iters") if init_args.get(k, 0) is None), None)
    return scheduler_class(optimizer, **init_args, **({horizon: total_steps} if horizon else {}))


def check_same_optimisation(name: str, trainer: L.Trainer, plain: PlainLoop) -> None:
    """Fails unless B ended with the optimizer settings and schedule position of the loop it ran beside."""
    fitted, ours = trainer.optimizers[0], plain.optimizer
    problems = []
    if type(fitted) is not type(ours):
        problems.append(f"optimizer {type(fitted).__name__} vs {type(ours).__name__}")
    settings = [{k: v for k, v in group.items() if k != "params"} for group in fitted.param_groups]
    our_settings = [{k: v for k, v in group.items() if k != "params"} for group in ours.param_groups]
    if settings != our_settings:
        problems.append(f"parameter groups {settings} vs {our_settings}")
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    if len(schedulers) != (plain.scheduler is not None):
        problems.append(f"{len(schedulers)} schedulers vs {int(plain.scheduler is not None)}")
    elif schedulers:
        theirs = schedulers[0]
        for attribute in ("last_epoch", "total_steps"):
            if getattr(theirs, attribute, None) != getattr(plain.scheduler, attribute, None):
                problems.append(
                    f"scheduler {attribute} {getattr(theirs, attribute, None)}"
                    f" vs {getattr(plain.scheduler, attribute, None)}"
                )
    if problems:
        raise RuntimeError(f"B does not mirror {name}: " + "; ".join(problems))


class Interleave(Callback):
    """Runs an epoch of B before each epoch of the fitted loop and after its last; stamps its epochs."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.marks: list[float] = []
        self.inside: list[float] = []  # seconds of B that ran inside each interval of the fitted loop
        self.batch_ends: list[list[float]] = []  # per epoch of the fitted loop

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batch_ends[-1].append(time.perf_counter())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.plain.device)  # the fitted loop's queued work belongs to its previous epoch
        took = self.plain.run_epoch()
        if self.marks:  # B ran inside the interval of the previous epoch, which ends now
            self.inside.append(took)
        self.marks.append(time.perf_counter())
        self.batch_ends.append([])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.plain.device)
        self.marks.append(time.perf_counter())
        self.inside.append(0.0)
        self.plain.run_epoch()  # the last epoch, too, is followed by one of B

    def epoch_seconds(self) -> list[float]:
        """The fitted loop's epochs: each interval between stamps, less the epoch of B inside it."""
        intervals = itertools.pairwise(self.marks)
        return [end - start - b for (start, end), b in zip(intervals, self.inside, strict=True)]

    def edge_seconds(self) -> list[float]:
        """Each epoch's time around its steps: from its start to its first batch's end, and from its last
        batch's end to its end (less the epoch of B there): validation, epoch ends, checkpoints."""
        intervals = itertools.pairwise(self.marks)
        return [
            (ends[0] - start) + (end - ends[-1] - b)
            for (start, end), ends, b in zip(intervals, self.batch_ends, self.inside, strict=True)
        ]

    def step_seconds(self) -> list[float]:
        """Each training step after an epoch's first: from one ``on_train_batch_end`` to the next."""
        return [end - start for ends in self.batch_ends for start, end in itertools.pairwise(ends)]


def build_cli(cli_module: ModuleType, default_config: Path, args: list[str]) -> Any:
    """The project's CLI object as ``python train.py ARGS`` builds it, before it fits or tests."""
    with (
        mock.patch.object(sys, "argv", [str(default_config.parents[1] / "train.py")]),
        mock.patch.object(L.Trainer, "fit", autospec=True),
        mock.patch.object(L.Trainer, "test", autospec=True),
    ):
        return cli_module.main(default_config, args)


def tile_train_split(datamodule: Any, repeat: int) -> Dataset:
    """Replaces the DataModule's training split with its samples repeated ``repeat`` times.

    An in-memory split (``images``, ``labels``, ``augment``, as the digits') is rebuilt from its
    tensors repeated; any other is concatenated with itself.
    """
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    if all(hasattr(train, name) for name in ("images", "labels", "augment")):
        tiled: Dataset = type(train)(
            train.images.repeat(repeat, *[1] * (train.images.dim() - 1)),
            train.labels.repeat(repeat),
            augment=train.augment,
        )
    else:
        tiled = ConcatDataset([train] * repeat)
    datamodule.splits["train"] = tiled
    return tiled


def prepare_lightning(
    cli_module: ModuleType, default_config: Path, args: list[str], repeat: int
) -> tuple[Any, Mirror]:
    """The project's CLI object for one fit (A), and what B and C copy from it."""
    with quiet_stdout():
        cli = build_cli(cli_module, default_config, args)
    datamodule, model, trainer = cli.datamodule, cli.model, cli.trainer
    mirror = Mirror(
        # The network as the checkpoints record it (sizes filled in from the data); the optimizer
        # and schedule as parsed (its values keep their types, tuples included).
        net=model.hparams["net"],
        optimizer=cli.config.model.init_args.optimizer,
        scheduler=cli.config.model.init_args.scheduler,
        initial_state=copy.deepcopy(model.net.state_dict()),  # before fit touches the weights
        num_classes=model.hparams["num_classes"],
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        persistent_workers=datamodule.persistent_workers,
        train_set=tile_train_split(datamodule, repeat),
        val_set=datamodule.splits["val"],
        device=trainer.strategy.root_device,
        precision=str(trainer.precision),
        compile=bool(model.hparams.get("compile", False)),
        max_epochs=trainer.max_epochs,
        trainer_settings={
            "accelerator": cli.config.trainer.accelerator,
            "devices": cli.config.trainer.devices,
            "precision": str(trainer.precision),
            "max_epochs": trainer.max_epochs,
            "deterministic": cli.config.trainer.deterministic,
            "log_every_n_steps": trainer.log_every_n_steps,
            "default_root_dir": cli.config.trainer.default_root_dir,
        },
    )
    return cli, mirror


def lightning_floor(
    cli: Any, mirror: Mirror, interleave: Interleave
) -> tuple[L.Trainer, L.LightningModule, Any]:
    """C: a bare Trainer, the project's ``Classification`` task around a copy of A's initial network, the
    optimizer and schedule that A's config built, and a DataModule of A's class over A's splits."""
    model = cli.model
    module = type(model)(
        net=mirror.build_net(),
        num_classes=mirror.num_classes,
        optimizer=model.make_optimizer,
        scheduler=model.make_scheduler,
        compile=mirror.compile,
    )
    datamodule = cli.datamodule
    accepted = inspect.signature(type(datamodule)).parameters
    datamodule_c = type(datamodule)(**{k: v for k, v in datamodule.hparams.items() if k in accepted})
    datamodule_c.splits = dict(datamodule.splits)  # the same dataset objects, the tiled one included
    trainer = L.Trainer(
        **mirror.trainer_settings,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[interleave],  # the measurement alone, which A carries too
    )
    return trainer, module, datamodule_c


@dataclass
class Fit:
    """One fit of A or C with its B: the epoch times and the set-up outside the epochs."""

    epochs: list[float]
    plain: list[float]
    setup: float
    steps: list[float]  # the fitted loop's training steps
    plain_steps: list[float]  # B's
    edges: list[float]  # the fitted loop's time around its steps, per epoch

    def by_epoch(self) -> list[float]:
        """Each epoch against the mean of the two epochs of B around it."""
        around = [(b_k + b_next) / 2 for b_k, b_next in itertools.pairwise(self.plain)]
        return [t / b for t, b in zip(self.epochs, around, strict=True)]


def run_fit(name: str, trainer: L.Trainer, module: Any, datamodule: Any, plain: PlainLoop) -> Fit:
    """One fit with B's epochs in between."""
    interleave = next(c for c in trainer.callbacks if isinstance(c, Interleave))  # type: ignore[attr-defined]
    start = time.perf_counter()
    with quiet_stdout():
        trainer.fit(module, datamodule=datamodule)
    end = time.perf_counter()
    epochs = interleave.epoch_seconds()
    if len(epochs) != trainer.max_epochs:
        raise RuntimeError(f"{name} ran {len(epochs)} epochs, not {trainer.max_epochs} (stopped early?)")
    check_same_optimisation(name, trainer, plain)
    setup = (end - start) - sum(epochs) - sum(plain.times)
    return Fit(
        epochs, plain.times, setup, interleave.step_seconds(), plain.step_times, interleave.edge_seconds()
    )


def run_round(cli: Any, mirror: Mirror, workers: int, c_first: bool) -> dict[str, Fit]:
    """A and C, each with its own B, in the given order."""
    fits: dict[str, Fit] = {}
    for name in ("C", "A") if c_first else ("A", "C"):
        plain = PlainLoop(mirror, workers)
        interleave = Interleave(plain)
        if name == "A":
            cli.trainer.callbacks.insert(0, interleave)  # its on_train_end before the once-per-fit work
            fits[name] = run_fit(name, cli.trainer, cli.model, cli.datamodule, plain)
        else:
            trainer, module, datamodule = lightning_floor(cli, mirror, interleave)
            fits[name] = run_fit(name, trainer, module, datamodule, plain)
            del trainer, module, datamodule
        del plain, interleave
        gc.collect()
    return fits


def warm_up(mirror: Mirror, workers: int, steps: int) -> None:
    """A few untimed steps of B, so that one-time costs (kernel selection, allocator) land in no round."""
    plain = PlainLoop(mirror, workers)
    plain.net.train()
    for x, y in itertools.islice(plain.train_loader, steps):
        plain.train_step(x, y)
    synchronize(mirror.device)


def project_args(options: argparse.Namespace, root: Path) -> list[str]:
    """The command line of A: the defaults on one device, a scratch log directory, the epochs, and
    the overrides."""
    args = [f"--config={path}" for path in options.config]
    args += [f"--trainer.accelerator={options.device}", "--trainer.devices=1"]
    args += [f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={options.epochs}"]
    return args + to_flags(options.override)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 short round, smaller data (smoke test)")
    parser.add_argument(
        "--rounds", type=int, help="rounds, each one fit of A and one of C (default 6, --quick 1)"
    )
    parser.add_argument("--epochs", type=int, help="epochs per fit (default 2, --quick 2)")
    parser.add_argument(
        "--repeat", type=int, help="copies of the training split per epoch (default 12, --quick 4)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where all three loops run (one device); cuda: A's automatic precision, mirrored by B and C",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the project's CLI, e.g. data.init_args.batch_size=256; B and C follow (repeatable)",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="extra YAML config for A (repeatable)"
    )
    parser.add_argument(
        "--plain-workers",
        default="0",
        help="DataLoader workers of B: a number (default 0, as in the tutorials), or 'same' as A's",
    )
    parser.add_argument(
        "--no-tty", action="store_true", help="let Rich see a pipe, as in a batch job's log, not a terminal"
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads for all loops (default: torch's, one per core)"
    )
    options = parser.parse_args()
    options.rounds = options.rounds or (1 if options.quick else 6)
    options.epochs = options.epochs or 2
    options.repeat = options.repeat or (4 if options.quick else 12)
    return options


def print_step_split(
    fits: dict[str, list[Fit]], epoch_medians: dict[str, float], steps_per_epoch: int, device: str
) -> None:
    """Splits each loop's epoch into its training steps and the rest: validation, epoch ends,
    checkpoints. A step is the time from one batch's end to the next's, an epoch's first excluded."""
    steps = {
        "A": [t for fit in fits["A"] for t in fit.steps],
        "B": [t for name in ("A", "C") for fit in fits[name] for t in fit.plain_steps],
        "C": [t for fit in fits["C"] for t in fit.steps],
    }
    step = {name: statistics.median(times) for name, times in steps.items()}
    note = " (host time: on cuda the device may run behind)" if device == "cuda" else ""
    ratios = ", ".join(f"{top}/{bottom} {step[top] / step[bottom]:.3f}" for top, bottom in ("AB", "CB", "AC"))
    times = ", ".join(f"{name} {seconds * 1000:.3f} ms" for name, seconds in step.items())
    print(f"per training step, median{note}: {times}; {ratios}")
    besides = {name: epoch_medians[name] - steps_per_epoch * seconds for name, seconds in step.items()}
    rest = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in besides.items())
    print(
        "per epoch besides its training steps (validation, epoch ends, checkpoints, slower steps),"
        f" median epoch less {steps_per_epoch} median steps: {rest}"
    )
    # The epoch's work alone, timed at the batch ends: the slower steps (logging) stay with the steps.
    edges = {
        name: statistics.median(t for fit in fits[name] for t in fit.edges) - step[name] for name in "AC"
    }
    ratio = edges["A"] / edges["C"] if edges["C"] > 0 else math.inf
    print(
        "per epoch outside its training steps, from the epoch's start and end to the nearest batch end"
        f" less one median step: A {edges['A'] * 1000:.0f} ms, C {edges['C'] * 1000:.0f} ms; A/C {ratio:.2f}"
        f" (target <= {TARGET_REST_OVER_C:.0f}: {verdict(ratio, TARGET_REST_OVER_C)})"
    )


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "not met"


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's start-up notes (once per fit) and B's one scheduler warning under float16 loss scaling."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # GradScaler skips the optimizer step of a step whose gradients overflowed; torch then
        # warns that the scheduler stepped first. Lightning's 16-mixed does the same.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        yield


def main() -> None:
    options = parse_options()
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "overhead.py: --device cuda needs a CUDA device, and torch sees none"
            f" (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"
        )
    if not options.no_tty:
        os.environ["TTY_COMPATIBLE"] = "1"  # Rich draws as on a terminal (into /dev/null)
    if options.threads:
        torch.set_num_threads(options.threads)
    print(machine(options.device), flush=True)
    with tempfile.TemporaryDirectory(prefix="overhead-") as scratch, quiet_lightning():
        project, package = bake_project(Path(scratch))
        cli_module = import_cli(project, package)
        default_config = project / "configs" / "default.yaml"
        args = project_args(options, Path(scratch) / "logs")
        fits: dict[str, list[Fit]] = {"A": [], "C": []}
        train_images = steps_per_epoch = 0
        for round_ in range(1, options.rounds + 1):
            cli, mirror = prepare_lightning(cli_module, default_config, args, options.repeat)
            workers = mirror.num_workers if options.plain_workers == "same" else int(options.plain_workers)
            if round_ == 1:
                train_images = len(mirror.train_set)  # type: ignore[arg-type]
                steps = steps_per_epoch = -(-train_images // mirror.batch_size)
                print(
                    f"data: {train_images} training images per epoch ({steps} steps of"
                    f" {mirror.batch_size}), {len(mirror.val_set)} validation images;"  # type: ignore[arg-type]
                    f" {options.epochs} epochs per fit; {torch.get_num_threads()} torch threads;"
                    f" device {mirror.device}, precision {mirror.precision}"
                )
                print(f"A: python train.py {' '.join(args)}")
                print(
                    f"B: hand-written loop, DataLoader(shuffle=True, num_workers={workers});"
                    f" A's loader has num_workers={mirror.num_workers},"
                    f" persistent_workers={mirror.persistent_workers}"
                )
                print(
                    "C: Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,"
                    " enable_checkpointing=False, callbacks=[]) fitting the project's Classification task"
                )
                if mirror.precision != "32-true" and mirror.autocast_dtype is None:
                    print(
                        f"note: B runs in float32, A and C in {mirror.precision};"
                        " B/A compares different arithmetic"
                    )
                warm_up(mirror, workers, steps=20)
            results = run_round(cli, mirror, workers, c_first=round_ % 2 == 0)
            del cli, mirror
            gc.collect()
            parts = []
            for name in ("A", "C"):
                fit = results[name]
                fits[name].append(fit)
                parts.append(
                    f"{name} {' '.join(f'{t:.3f}' for t in fit.epochs)} (+{fit.setup:.2f} s once per fit),"
                    f" its B {' '.join(f'{t:.3f}' for t in fit.plain)},"
                    f" {name}/B by epoch {' '.join(f'{r:.3f}' for r in fit.by_epoch())}"
                )
            print(f"round {round_} (s/epoch): " + " | ".join(parts), flush=True)
    a_times = [t for fit in fits["A"] for t in fit.epochs]
    c_times = [t for fit in fits["C"] for t in fit.epochs]
    b_times = [t for name in ("A", "C") for fit in fits[name] for t in fit.plain]
    a_median, b_median, c_median = (statistics.median(times) for times in (a_times, b_times, c_times))
    a_by_epoch = statistics.median(r for fit in fits["A"] for r in fit.by_epoch())
    c_by_epoch = statistics.median(r for fit in fits["C"] for r in fit.by_epoch())
    print(f"A (project fit loop): median {a_median:.3f} s/epoch over {len(a_times)} epochs")
    print(f"B (hand-written loop): median {b_median:.3f} s/epoch over {len(b_times)} epochs")
    print(f"C (Lightning floor): median {c_median:.3f} s/epoch over {len(c_times)} epochs")
    print(
        "throughput, training images per second of epoch (validation included):"
        f" A {train_images / a_median:.0f}, B {train_images / b_median:.0f}, C {train_images / c_median:.0f}"
    )
    for name in ("A", "C"):
        setups = [fit.setup for fit in fits[name]]
        print(f"{name} set-up and tear-down per fit: median {statistics.median(setups):.2f} s")
    print_step_split(fits, {"A": a_median, "B": b_median, "C": c_median}, steps_per_epoch, options.device)
    print(f"median of the epoch-by-epoch ratios: A/B {a_by_epoch:.3f}, C/B {c_by_epoch:.3f}")
    print(
        f"ratios of the medians: A/B {a_median / b_median:.2f} (no target: above Lightning's floor C/B),"
        f" C/B {c_median / b_median:.2f},"
        f" A/C {a_median / c_median:.2f} (target <= {TARGET_A_OVER_C:.2f}:"
        f" {verdict(a_median / c_median, TARGET_A_OVER_C)})"
    )
    print(f"overhead ratio: {a_median / b_median:.2f}")


if __name__ == "__main__":
    main()
