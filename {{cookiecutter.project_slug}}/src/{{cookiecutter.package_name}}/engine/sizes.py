"""Sizes the data declares before ``setup()``, passed by name to the task and network that take them.
Ours because a plain ``link_arguments`` compute_fn fails for a size the data lacks, taken or not."""

import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace

SIZES = (
    "num_classes", "class_names", "num_outputs", "num_features", "input_shape", "in_channels",
    "cardinalities", "num_numeric", "vocab_size",
)  # fmt: skip
"""The names the data may declare; a new one is added here (and then taken by name)."""


def class_of(class_path: str) -> type:
    return pkgutil.resolve_name(class_path)


def takes(target: type, name: str) -> inspect.Parameter | None:
    return inspect.signature(target).parameters.get(name)


def size_for(name: str, key: str, target: Callable[[], type], datamodule: L.LightningDataModule) -> Any:
    """The data's ``name``, else the default of the class at ``key``, else an error naming both classes;
    None where the class does not take it (``record_model_config`` drops it again)."""
    target_class = target()
    parameter = takes(target_class, name)
    if parameter is None:
        return None
    if hasattr(datamodule, name) or parameter.default is not parameter.empty:
        return getattr(datamodule, name, parameter.default)
    raise ValueError(
        f"{key}: {target_class.__name__} takes {name} from the data, but {type(datamodule).__name__}"
        f" does not declare it (set self.{name} in its __init__)"
    )


def record_model_config(model: L.LightningModule, config: Namespace, data: L.LightningDataModule) -> None:
    """Leaves in ``model.hparams`` what ``load_from_checkpoint`` rebuilds it from, also without its own
    ``save_hyperparameters()``; no size that the module or its ``net`` does not take."""
    hparams = model.hparams
    if "_class_path" not in hparams:
        sizes = {name: getattr(data, name) for name in SIZES if hasattr(data, name)}
        hparams.update({"_class_path": config.class_path, **config.init_args.as_dict(), **sizes})
        hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"  # what LightningCLI records
    targets = [(type(model), hparams)]
    net = hparams.get("net")
    if isinstance(net, dict) and "class_path" in net:
        targets.append((class_of(net["class_path"]), net.get("init_args", {})))
    for target, arguments in targets:
        for name in SIZES:
            if takes(target, name) is None:
                arguments.pop(name, None)


def load_module(ckpt_path: str | Path, **overrides: Any) -> L.LightningModule:
    """The module a checkpoint of this project holds, rebuilt from the class path it records."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not isinstance(class_path, str):
        raise ValueError(f"ckpt_path: {ckpt_path} records no model class path: not a train.py checkpoint")
    return class_of(class_path).load_from_checkpoint(ckpt_path, map_location="cpu", **overrides)
