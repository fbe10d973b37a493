"""Per-epoch cost of the generated project's Lightning fit loop against a hand-written PyTorch loop.

Bakes the default project, then alternates in one process, round after round:

A. the project's Trainer exactly as ``python train.py`` builds it (its ``cli.main`` with the default
   config: callbacks, TensorBoard logger, Rich progress bar, both checkpoints, early stopping, the
   learning-rate monitor), fitting its ``Classifier`` on a training split tiled ``--repeat`` times;
B. the loop of every PyTorch tutorial (zero_grad, forward, loss, backward, step, scheduler step) over
   a copy of the same ``SmallCNN`` with A's initial weights, the same tiled dataset object (same
   tensors, same per-sample augmentation), batch size, optimizer, schedule and number of steps.

Both run one validation pass over the project's validation split per epoch. A's epochs are timed
from one ``on_train_epoch_start`` to the next (the last one to ``on_train_end``), so they include its
validation, logging, progress bar and checkpoint writes; its once-per-fit set-up (sanity check,
model summary, graph tracing) is reported apart. Interleaving A and B (A B, B A, A B, ...) cancels
slow drifts of the machine's speed; the ratio of the median epoch times is printed last as
``overhead ratio: X.XX``.

The progress bar renders as it would on a terminal, into /dev/null: piped to a file, Rich would
skip drawing and the figure would hide its cost (``--no-tty`` measures that case).
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import itertools
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common import bake, machine, quiet_stdout, to_flags


def bake_project(output_dir: Path) -> tuple[Path, str]:
    """Generates the default project; returns its directory and its package name."""
    project = bake(output_dir)
    context = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    return project, context["package_name"]


def import_project(project: Path, package: str) -> dict[str, ModuleType]:
    """Imports the baked package from its ``src`` folder, ahead of any installed copy."""
    sys.path.insert(0, str(project / "src"))
    modules = {name: importlib.import_module(f"{package}.{name}") for name in ("cli", "data")}
    origin = Path(modules["cli"].__file__ or "").resolve()
    if project.resolve() not in origin.parents:
        raise RuntimeError(f"{package} was imported from {origin}, not from the baked project")
    return modules


class EpochTimer(Callback):
    """Stamps the start of every training epoch and the end of training."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        return [end - start for start, end in itertools.pairwise(self.marks)]


def build_cli(cli_module: ModuleType, default_config: Path, args: list[str]) -> Any:
    """The project's CLI object as ``python train.py ARGS`` builds it, before it fits or tests."""
    with (
        mock.patch.object(sys, "argv", [str(default_config.parents[1] / "train.py")]),
        mock.patch.object(L.Trainer, "fit", autospec=True),
        mock.patch.object(L.Trainer, "test", autospec=True),
    ):
        return cli_module.main(default_config, args)


def tile_train_split(datamodule: Any, repeat: int) -> Dataset:
    """Replaces the DataModule's training split with its images and labels repeated ``repeat`` times."""
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    datamodule.splits["train"] = type(train)(
        train.images.repeat(repeat, 1, 1, 1), train.labels.repeat(repeat), augment=train.augment
    )
    return datamodule.splits["train"]


def prepare_lightning(
    modules: dict[str, ModuleType], default_config: Path, args: list[str], repeat: int
) -> tuple[Any, dict[str, Any]]:
    """The project's CLI object for one fit (A), and what B copies from it."""
    with quiet_stdout():
        cli = build_cli(modules["cli"], default_config, args)
    datamodule, model, trainer = cli.datamodule, cli.model, cli.trainer
    mirror = {
        "net": copy.deepcopy(model.net),  # A's initial weights, before fit touches them
        "hparams": dict(model.hparams),
        "data": dict(datamodule.hparams),
        "train_set": tile_train_split(datamodule, repeat),
        "val_set": datamodule.splits["val"],
        "device": trainer.strategy.root_device,
        "precision": str(trainer.precision),
        "max_epochs": trainer.max_epochs,
    }
    return cli, mirror


def run_lightning(cli: Any) -> tuple[list[float], float]:
    """One fit of the project's Trainer (A): its epoch times, and its set-up time outside them."""
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    start = time.perf_counter()
    with quiet_stdout():
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    end = time.perf_counter()
    epochs = timer.epoch_seconds()
    return epochs, (end - start) - sum(epochs)


def make_optimizer(net: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer that ``Classifier.configure_optimizers`` builds for the same hyperparameters."""
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    return torch.optim.SGD(
        net.parameters(), lr=hp["lr"], momentum=0.9, nesterov=True, weight_decay=hp["weight_decay"]
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_plain(mirror: dict[str, Any], epochs: int, workers: int) -> list[float]:
    """The hand-written loop (B) on a copy of A's network at its initial weights; its epoch times."""
    device: torch.device = mirror["device"]
    hp, batch_size = mirror["hparams"], mirror["data"]["batch_size"]
    net = copy.deepcopy(mirror["net"]).to(device)
    train_loader = DataLoader(mirror["train_set"], batch_size=batch_size, shuffle=True, num_workers=workers)
    val_loader = DataLoader(mirror["val_set"], batch_size=batch_size, num_workers=workers)
    optimizer = make_optimizer(net, hp)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if hp["scheduler"] == "onecycle":
        total = epochs * len(train_loader)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp["lr"], total_steps=total)
    elif hp["scheduler"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=mirror["max_epochs"])
    times = []
    batches = iter(train_loader)  # Lightning, too, starts its first epoch's iterator before the clock
    for epoch in range(epochs):
        start = time.perf_counter()
        if epoch > 0:
            batches = iter(train_loader)
        net.train()
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None and hp["scheduler"] == "onecycle":
                scheduler.step()
        if scheduler is not None and hp["scheduler"] == "cosine":
            scheduler.step()
        net.eval()
        correct = total_loss = 0.0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                logits = net(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(dim=-1) == y).sum().item()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def warm_up(mirror: dict[str, Any], steps: int) -> None:
    """A few untimed steps, so that one-time costs (kernel selection, allocator) land in no round."""
    net = copy.deepcopy(mirror["net"]).to(mirror["device"])
    optimizer = make_optimizer(net, mirror["hparams"])
    loader = DataLoader(mirror["train_set"], batch_size=mirror["data"]["batch_size"], shuffle=True)
    for x, y in itertools.islice(loader, steps):
        optimizer.zero_grad()
        F.cross_entropy(net(x.to(mirror["device"])), y.to(mirror["device"])).backward()
        optimizer.step()


def project_args(options: argparse.Namespace, root: Path) -> list[str]:
    """The command line of A: the defaults, a scratch log directory, the epochs, and the overrides."""
    args = [f"--config={path}" for path in options.config]
    args += [f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={options.epochs}"]
    return args + to_flags(options.override)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds on a smaller dataset (a smoke test)")
    parser.add_argument("--rounds", type=int, help="A B rounds (default 5, --quick 2)")
    parser.add_argument("--epochs", type=int, help="epochs per fit (default 2)")
    parser.add_argument(
        "--repeat", type=int, help="copies of the training split per epoch (default 12, --quick 4)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the project's CLI for A, e.g. trainer.log_every_n_steps=50 (repeatable)",
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
    options = parser.parse_args()
    options.rounds = options.rounds or (2 if options.quick else 5)
    options.epochs = options.epochs or 2
    options.repeat = options.repeat or (4 if options.quick else 12)
    return options


def main() -> None:
    options = parse_options()
    if not options.no_tty:
        os.environ["TTY_COMPATIBLE"] = "1"  # Rich draws as on a terminal (into /dev/null)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # start-up notes, once per fit
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="overhead-") as scratch:
        project, package = bake_project(Path(scratch))
        modules = import_project(project, package)
        default_config = project / "configs" / "default.yaml"
        args = project_args(options, Path(scratch) / "logs")
        a_times: list[float] = []
        b_times: list[float] = []
        setups: list[float] = []
        ratios: list[float] = []
        for round_ in range(1, options.rounds + 1):
            cli, mirror = prepare_lightning(modules, default_config, args, options.repeat)
            same = options.plain_workers == "same"
            workers = mirror["data"]["num_workers"] if same else int(options.plain_workers)
            if round_ == 1:
                steps = math.ceil(len(mirror["train_set"]) / mirror["data"]["batch_size"])
                print(
                    f"data: {len(mirror['train_set'])} training images per epoch ({steps} steps of"
                    f" {mirror['data']['batch_size']}), {len(mirror['val_set'])} validation images;"
                    f" {options.epochs} epochs per fit; {torch.get_num_threads()} torch threads"
                )
                print(f"A: python train.py {' '.join(args)}  (precision {mirror['precision']})")
                print(
                    f"B: hand-written loop, DataLoader(shuffle=True, num_workers={workers});"
                    f" A's loader has num_workers={mirror['data']['num_workers']},"
                    f" persistent_workers={mirror['data'].get('persistent_workers', False)}"
                )
                if mirror["precision"] != "32-true":
                    print("note: B runs in float32, A does not; the ratio compares different arithmetic")
                warm_up(mirror, steps=20)
            # A B, then B A: a machine that speeds up or slows down during a round favours neither.
            if round_ % 2:
                a, setup = run_lightning(cli)
                b = run_plain(mirror, options.epochs, workers)
            else:
                b = run_plain(mirror, options.epochs, workers)
                a, setup = run_lightning(cli)
            del cli, mirror
            gc.collect()
            a_times += a
            b_times += b
            setups.append(setup)
            ratios.append(statistics.median(a) / statistics.median(b))
            print(
                f"round {round_} ({'A B' if round_ % 2 else 'B A'}): A {' '.join(f'{t:.3f}' for t in a)}"
                f" s/epoch (+{setup:.2f} s set-up) | B {' '.join(f'{t:.3f}' for t in b)} s/epoch"
                f" | A/B {ratios[-1]:.3f}",
                flush=True,
            )
        a_median, b_median = statistics.median(a_times), statistics.median(b_times)
        print(f"A (project fit loop): median {a_median:.3f} s/epoch over {len(a_times)} epochs")
        print(f"B (hand-written loop): median {b_median:.3f} s/epoch over {len(b_times)} epochs")
        print(f"A set-up per fit, outside the epochs: median {statistics.median(setups):.2f} s")
        print(f"median of per-round ratios: {statistics.median(ratios):.3f}")
        print(f"overhead ratio: {a_median / b_median:.2f}")


if __name__ == "__main__":
    main()
