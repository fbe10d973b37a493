"""Sizes the data declares before ``setup()``, passed by name to the task and network that take them.

Ours because a plain ``link_arguments`` compute_fn fails for a size the data lacks, taken or not."""

import inspect
import pkgutil
from collections.abc import Callable, MutableMapping
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
    if hasattr(datamodule, name):
        return getattr(datamodule, name)
    if parameter.default is not inspect.Parameter.empty:
        return parameter.default
    raise ValueError(
        f"{key}: {target_class.__name__} takes {name} from the data, but {type(datamodule).__name__}"
        f" does not declare it (set self.{name} in its __init__)"
    )


def drop_sizes_not_taken(target: type, init_args: MutableMapping[str, Any]) -> None:
    for name in SIZES:
        if takes(target, name) is None:
            init_args.pop(name, None)


def record_model_config(
    model: L.LightningModule, config: Namespace, datamodule: L.LightningDataModule
) -> None:
    """Leaves in ``model.hparams`` the class path and arguments ``load_from_checkpoint`` rebuilds it from,
    also for a module that does not call ``save_hyperparameters()``; no size it does not take."""
    model_class = class_of(config.class_path)
    net = config.init_args.get("net")
    if isinstance(net, Namespace) and isinstance(model.hparams.get("net"), dict):
        drop_sizes_not_taken(class_of(net.class_path), model.hparams["net"].get("init_args", {}))
    if "_class_path" not in model.hparams:
        sizes = {name: getattr(datamodule, name) for name in SIZES if hasattr(datamodule, name)}
        arguments = config.init_args.as_dict() | sizes
        instantiator = "lightning.pytorch.cli.instantiate_module"  # what LightningCLI records
        model.hparams.update({"_class_path": config.class_path, **arguments, "_instantiator": instantiator})
    drop_sizes_not_taken(model_class, model.hparams)


def load_module(ckpt_path: str | Path, **overrides: Any) -> L.LightningModule:
    """The module a checkpoint of this project holds, rebuilt from the class path it records."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not isinstance(class_path, str):
        raise ValueError(
            f"ckpt_path: '{ckpt_path}' records no model class path: not a checkpoint of train.py"
        )
    return class_of(class_path).load_from_checkpoint(ckpt_path, map_location="cpu", **overrides)
