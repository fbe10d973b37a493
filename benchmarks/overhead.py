"""Per-epoch cost of the generated project's Lightning fit loop against a hand-written PyTorch loop.

Bakes the default project, then, in one process, round after round:

A. the project's Trainer exactly as ``python train.py`` builds it (its ``cli.main`` with the default
   config: callbacks, TensorBoard logger, Rich progress bar, both checkpoints, early stopping, the
   learning-rate monitor, the dashboards), fitting its ``Classifier`` on a training split tiled
   ``--repeat`` times;
B. the loop of every PyTorch tutorial (zero_grad, forward, loss, backward, step, scheduler step) over
   a copy of the same ``SmallCNN`` with A's initial weights, the same tiled dataset object (same
   tensors, same per-sample augmentation), batch size, optimizer, schedule and number of steps.

Both run one validation pass over the project's validation split per epoch. The two alternate
epoch by epoch: one epoch of B runs at the start of each of A's epochs, and after A's last one, so
that every epoch of A lies between two of B and a machine whose speed drifts (a shared or virtual
machine) slows both alike. A's epoch is the time from one ``on_train_epoch_start`` to the next (the
last one to ``on_train_end``), less the epoch of B inside it: it includes A's validation, logging,
progress bar and checkpoint writes. A's once-per-fit set-up (sanity check, model summary, graph
tracing) is reported apart. The ratio of the median epoch times is printed last as
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


class PlainLoop:
    """The hand-written loop (B) on a copy of A's network at its initial weights, one epoch per call."""

    def __init__(self, mirror: dict[str, Any], epochs: int, workers: int) -> None:
        self.device: torch.device = mirror["device"]
        self.hp, batch_size = mirror["hparams"], mirror["data"]["batch_size"]
        self.net = copy.deepcopy(mirror["net"]).to(self.device)
        self.train_loader = DataLoader(
            mirror["train_set"], batch_size=batch_size, shuffle=True, num_workers=workers
        )
        self.val_loader = DataLoader(mirror["val_set"], batch_size=batch_size, num_workers=workers)
        self.optimizer = make_optimizer(self.net, self.hp)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if self.hp["scheduler"] == "onecycle":
            total = epochs * len(self.train_loader)
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.hp["lr"], total_steps=total
            )
        elif self.hp["scheduler"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs)
        self.times: list[float] = []

    def run_epoch(self) -> float:
        """Trains one epoch and validates; returns and records its wall time."""
        net, optimizer, scheduler, device = self.net, self.optimizer, self.scheduler, self.device
        start = time.perf_counter()
        net.train()
        for x, y in self.train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None and self.hp["scheduler"] == "onecycle":
                scheduler.step()
        if scheduler is not None and self.hp["scheduler"] == "cosine":
            scheduler.step()
        net.eval()
        correct = total_loss = 0.0
        with torch.no_grad():
            for x, y in self.val_loader:
                x, y = x.to(device), y.to(device)
                logits = net(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(dim=-1) == y).sum().item()
        synchronize(device)
        self.times.append(time.perf_counter() - start)
        return self.times[-1]


class Interleave(Callback):
    """Runs an epoch of B before each of A's epochs and after A's last; stamps A's epochs."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.marks: list[float] = []
        self.inside: list[float] = []  # seconds of B that ran inside each interval of A

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        took = self.plain.run_epoch()
        if self.marks:  # B ran inside the interval of A's previous epoch, which ends now
            self.inside.append(took)
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())
        self.inside.append(0.0)
        self.plain.run_epoch()  # A's last epoch, too, is followed by one of B

    def epoch_seconds(self) -> list[float]:
        """A's epochs: each interval between stamps, less the epoch of B that ran inside it."""
        intervals = itertools.pairwise(self.marks)
        return [end - start - b for (start, end), b in zip(intervals, self.inside, strict=True)]


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


def run_interleaved(cli: Any, plain: PlainLoop) -> tuple[list[float], list[float], float]:
    """One fit of the project's Trainer (A) with B's epochs in between: A's and B's epoch times,
    and A's set-up time outside its epochs."""
    interleave = Interleave(plain)
    cli.trainer.callbacks.append(interleave)
    start = time.perf_counter()
    with quiet_stdout():
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    end = time.perf_counter()
    a_epochs = interleave.epoch_seconds()
    outside = (end - start) - sum(a_epochs) - sum(plain.times)
    return a_epochs, plain.times, outside


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
    parser.add_argument("--quick", action="store_true", help="1 short round, smaller data (smoke test)")
    parser.add_argument("--rounds", type=int, help="fits of A, each with its B (default 3, --quick 1)")
    parser.add_argument("--epochs", type=int, help="epochs per fit (default 4, --quick 2)")
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
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads for A and B (default: torch's, one per core)"
    )
    options = parser.parse_args()
    options.rounds = options.rounds or (1 if options.quick else 3)
    options.epochs = options.epochs or (2 if options.quick else 4)
    options.repeat = options.repeat or (4 if options.quick else 12)
    return options


def main() -> None:
    options = parse_options()
    if not options.no_tty:
        os.environ["TTY_COMPATIBLE"] = "1"  # Rich draws as on a terminal (into /dev/null)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # start-up notes, once per fit
    if options.threads:
        torch.set_num_threads(options.threads)
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
            # B's epochs: one before each of A's and one after A's last (its schedule spans them all).
            plain = PlainLoop(mirror, options.epochs + 1, workers)
            a, b, setup = run_interleaved(cli, plain)
            del cli, mirror, plain
            gc.collect()
            a_times += a
            b_times += b
            setups.append(setup)
            # Each epoch of A against the mean of the two epochs of B around it.
            around = [(b_k + b_next) / 2 for b_k, b_next in itertools.pairwise(b)]
            pairs = [a_k / b_k for a_k, b_k in zip(a, around, strict=True)]
            ratios += pairs
            print(
                f"round {round_}: A {' '.join(f'{t:.3f}' for t in a)} s/epoch (+{setup:.2f} s set-up)"
                f" | B {' '.join(f'{t:.3f}' for t in b)} s/epoch"
                f" | A/B by epoch {' '.join(f'{r:.3f}' for r in pairs)}",
                flush=True,
            )
        a_median, b_median = statistics.median(a_times), statistics.median(b_times)
        print(f"A (project fit loop): median {a_median:.3f} s/epoch over {len(a_times)} epochs")
        print(f"B (hand-written loop): median {b_median:.3f} s/epoch over {len(b_times)} epochs")
        print(f"A set-up per fit, outside the epochs: median {statistics.median(setups):.2f} s")
        print(f"median of the epoch-by-epoch ratios: {statistics.median(ratios):.3f}")
        print(f"overhead ratio: {a_median / b_median:.2f}")


if __name__ == "__main__":
    main()
