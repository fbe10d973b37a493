"""What the data knows and the model needs, passed by name so that it is never typed twice.

A DataModule declares sizes as attributes (``num_classes``, ``num_features``, ``input_shape``, ...)
before ``setup()``: the model is built first. Each one that the task's or the network's constructor
takes by the same name is passed to it; the data's value wins over the constructor's default, and a
size that neither gives stops the run naming both classes. None is required of a DataModule.
"""

import importlib
import inspect
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
    """The class that a ``class_path`` names."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def takes(target: type, name: str) -> inspect.Parameter | None:
    return inspect.signature(target).parameters.get(name)


def size_for(
    name: str, key: str, target: Callable[[], type | None], datamodule: L.LightningDataModule
) -> Any:
    """The value of ``name`` for the class at ``key``: the data's, else the class's default, else an error.

    None where the class does not take it: the CLI drops it again from the saved hyperparameters.
    """
    target_class = target()
    parameter = takes(target_class, name) if target_class is not None else None
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
    """Removes the sizes that ``target`` does not take, which the links leave in the config."""
    for name in SIZES:
        if takes(target, name) is None:
            init_args.pop(name, None)


INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
"""Lightning's function that rebuilds a module from ``_class_path`` and its arguments on load."""


def record_model_config(
    model: L.LightningModule, config: Namespace, datamodule: L.LightningDataModule
) -> None:
    """Leaves in ``model.hparams`` (and so in every checkpoint) the class path and the arguments the
    model was built with, sizes from the data included, and no size it does not take: what
    ``load_from_checkpoint`` rebuilds it from, also for a module that saves no hyperparameters."""
    model_class = class_of(config.class_path)
    net = config.init_args.get("net")
    if isinstance(net, Namespace) and isinstance(model.hparams.get("net"), dict):
        drop_sizes_not_taken(class_of(net.class_path), model.hparams["net"].get("init_args", {}))
    if "_class_path" not in model.hparams:  # the module did not call save_hyperparameters()
        sizes = {name: getattr(datamodule, name) for name in SIZES if hasattr(datamodule, name)}
        given = {name: value for name, value in sizes.items() if takes(model_class, name) is not None}
        arguments = config.init_args.as_dict() | given
        model.hparams.update({"_class_path": config.class_path, **arguments, "_instantiator": INSTANTIATOR})
    drop_sizes_not_taken(model_class, model.hparams)


def load_module(ckpt_path: str | Path, **overrides: Any) -> L.LightningModule:
    """The module a checkpoint of this project holds, rebuilt from the class path it records."""
    hparams = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get(
        "hyper_parameters", {}
    )
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if not isinstance(class_path, str):
        raise ValueError(
            f"ckpt_path: '{ckpt_path}' records no model class path: not a checkpoint of train.py"
        )
    return class_of(class_path).load_from_checkpoint(ckpt_path, map_location="cpu", **overrides)
