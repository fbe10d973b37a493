"""Networks as plain ``nn.Module``s, reusable without Lightning. Sizes the data declares (``engine/sizes.py``)
are passed by name to the constructor that takes them; any other argument is a config key."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def check(key: str, value: float, valid: bool, rule: str) -> None:
    """torch rejects these without naming the key, or (a dropout of 1) zeroes every input without a word."""
    if not valid:
        raise ValueError(f"model.net.init_args.{key} must be {rule}, got {value}")


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head for small images; global pooling frees it from the image size."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        check("width", width, width >= 1, "at least 1")
        check("dropout", dropout, 0 <= dropout < 1, "in [0, 1)")
        self.features = nn.Sequential(
            conv_block(in_channels, width),
            conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            conv_block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected layers over a vector of ``num_features`` numbers: table rows, embeddings, signals."""

    def __init__(
        self, num_features: int, num_outputs: int, hidden: int = 64, depth: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        check("depth", depth, depth >= 1, "at least 1")
        check("dropout", dropout, 0 <= dropout < 1, "in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in in [num_features] + [hidden] * (depth - 1):
            layers += [nn.Linear(width_in, hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class EmbeddingMLP(nn.Module):
    """An MLP over table rows of category codes, then numeric values, all floats (codes below 2**24 are
    exact): one tensor like any input. Each categorical column gets an embedding."""

    def __init__(
        self,
        num_classes: int,
        cardinalities: Sequence[int],
        num_numeric: int = 0,
        embedding_dim: int = 8,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(count, embedding_dim) for count in cardinalities)
        self.num_categorical = len(self.embeddings)
        width = self.num_categorical * embedding_dim + num_numeric
        self.mlp = MLP(width, num_classes, hidden, depth=2, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        codes, numeric = x[:, : self.num_categorical].long(), x[:, self.num_categorical :]
        embedded = [embedding(codes[:, column]) for column, embedding in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*embedded, numeric.float()], dim=1))
