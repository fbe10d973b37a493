"""Whether a checkpoint fits the config it is resumed or evaluated with, named key by key."""

import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

SPEED_ONLY = {"model.compile", "data.num_workers", "data.persistent_workers"}  # may differ on resume
# What a checkpoint's learning-rate schedule was planned for: the run's total optimizer steps.
HORIZON = ("max_epochs", "max_steps", "limit_train_batches", "accumulate_grad_batches")
HORIZONS = ("total_steps", "T_max", "total_iters")  # a schedule with an end keeps one in its state
SHOWN = 4  # differing settings named in a refusal; the rest are counted


def flatten(values: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for name, value in values.items():
        if name == "_instantiator":  # how Lightning rebuilds the object, not a setting
            continue
        key = f"{prefix}.{name.removeprefix('_')}"
        if isinstance(value, Mapping):
            yield from flatten(value, key)
        else:
            yield key, list(value) if isinstance(value, tuple) else value


def run_length(trainer: L.Trainer) -> dict[str, Any]:
    """The Trainer's settings that decide a run's total optimizer steps."""
    return {key: getattr(trainer, key) for key in HORIZON}


def checkpoint_misfit(
    path: str | None,
    trainer: L.Trainer,
    model: L.LightningModule,
    data: L.LightningDataModule,
    evaluating: bool,
) -> str | None:
    """The one-line refusal of a checkpoint whose weights would not fit the network, or whose restored
    optimizer and schedule would override the config's; evaluating rebuilds the model: only data counts."""
    if path is None or Path(path).is_dir():  # FSDP's sharded checkpoint: Lightning checks it as it loads
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: weights unread
    saved = dict(flatten(checkpoint.get("hyper_parameters", {}), "model"))
    saved |= dict(flatten(checkpoint.get("datamodule_hyper_parameters", {}), "data"))
    given = dict(flatten(model.hparams, "model")) | dict(flatten(data.hparams, "data"))
    states = [state for state in checkpoint.get("callbacks", {}).values() if isinstance(state, Mapping)]
    length = next((state["horizon"] for state in states if "horizon" in state), None)
    schedules = checkpoint.get("lr_schedulers") or []
    if length is not None and not evaluating and any(key in step for step in schedules for key in HORIZONS):
        saved |= dict(flatten(length, "trainer"))  # a schedule with an end ends where its run was planned to
        given |= dict(flatten(run_length(trainer), "trainer"))
    ignored = tuple(f"{key}." for key in SPEED_ONLY | ({"model", "data.batch_size"} if evaluating else set()))
    differing = [
        f"{key} (checkpoint {saved.get(key)!r}, config {given.get(key)!r})"
        for key in sorted(saved.keys() | given.keys())
        if saved.get(key) != given.get(key) and not f"{key}.".startswith(ignored)
    ]
    if not differing:
        return None
    shown = "; ".join(differing[:SHOWN]) + (
        f"; and {len(differing) - SHOWN} more" if differing[SHOWN:] else ""
    )
    resolved = Path(path).resolve()
    saved_config = resolved.parent.parent / "config.yaml"
    again = ["python", "train.py", "--config", str(saved_config), "--ckpt_path", str(resolved)]
    fix = (
        f"continue it with its run's settings: {shlex.join(again)}"
        if saved_config.is_file()
        else "continue it, give the settings it was made with"
    )
    longer = (
        " (with --model.scheduler null, to train it longer later)"
        if differing[-1].startswith("trainer.")
        else ""
    )
    return f"ckpt_path: {path} was made with other settings: {shown}. To {fix}; or start a new run{longer}"
