"""Weight initialisation chosen by name, once, when a module is built (never on a checkpoint load)."""

from functools import partial
from typing import Literal, get_args

from torch import nn

WeightInit = Literal[
    "default", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal"
]
"""``default`` keeps PyTorch's per-layer initialisation; the others replace it in every layer."""
SCHEMES = {
    "kaiming_uniform": partial(nn.init.kaiming_uniform_, nonlinearity="relu"),
    "kaiming_normal": partial(nn.init.kaiming_normal_, nonlinearity="relu"),
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "orthogonal": nn.init.orthogonal_,
}
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
WEIGHTED = (nn.Linear, *CONVOLUTIONS)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
NORMS = (*BATCH_NORMS, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def initialize_weights(network: nn.Module, scheme: WeightInit) -> None:
    """Applies ``scheme`` to every convolution and linear layer, zeroes their biases, resets norms to 1 and 0;
    draws from torch's global generator (the seed)."""
    if scheme not in get_args(WeightInit):
        choices = ", ".join(get_args(WeightInit))
        raise ValueError(f"model.weight_init: unknown scheme {scheme!r}; choose one of {choices}")
    if scheme == "default":
        return
    for layer in network.modules():
        if isinstance(layer, WEIGHTED):
            SCHEMES[scheme](layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, NORMS) and layer.weight is not None:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
