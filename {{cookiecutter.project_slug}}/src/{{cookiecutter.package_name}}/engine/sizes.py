"""Sizes that go from the data to the network, so that they are never typed twice.

Every network takes ``num_classes``. A network may also take any of ``DATA_SIZES`` by name; it then
gets the DataModule's attribute of that name, or, where the DataModule has none, its own default.
The DataModule must know them when it is built, before ``setup()``: the network is built first.
"""

import inspect
from collections.abc import Callable, MutableMapping
from typing import Any

import lightning as L

DATA_SIZES = ("in_channels", "cardinalities", "num_numeric")


def taken_by(net_class: type) -> set[str]:
    return set(inspect.signature(net_class).parameters)


def size_from_data(name: str, net_class: Callable[[], type], datamodule: L.LightningDataModule) -> Any:
    """The value of ``name`` for the network: the data's, else the network's default, else an error."""
    net = net_class()
    parameter = inspect.signature(net).parameters.get(name)
    if parameter is None:  # not taken: the CLI drops it from the saved config again
        return None
    if hasattr(datamodule, name):
        return getattr(datamodule, name)
    if parameter.default is not inspect.Parameter.empty:
        return parameter.default
    raise ValueError(
        f"model.net.init_args.{name}: {net.__name__} takes it from the data, but"
        f" {type(datamodule).__name__} has no attribute '{name}' (set it in its __init__)"
    )


def drop_sizes_not_taken(net_class: type, init_args: MutableMapping[str, Any]) -> None:
    """Removes the linked sizes that ``net_class`` does not take, which jsonargparse leaves in the config."""
    for name in set(DATA_SIZES) - taken_by(net_class):
        init_args.pop(name, None)
