"""Networks as plain ``nn.Module``s: no Lightning here, so they can be reused anywhere.

A network is chosen with ``model.net.class_path``. Sizes that the data declares (``num_classes``,
``num_outputs``, ``num_features``, ``in_channels``, ``cardinalities``, ...; see ``engine/sizes.py``)
are passed by name to the constructor that takes them; any other argument is a config key. The
output is what the task expects: class logits (batch, num_classes) for classification, values
(batch, num_outputs) for regression.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def check_dropout(dropout: float) -> None:
    """torch's Dropout refuses a probability above 1 without naming the key; 1 would zero every input."""
    if not 0 <= dropout < 1:
        raise ValueError(f"model.net.init_args.dropout must be in [0, 1), got {dropout}")


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv blocks, one pooling step and a linear head: enough for small images.

    Global average pooling makes the head independent of the image size, so only the number of
    input channels and classes come from the data.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"model.net.init_args.width must be at least 1, got {width}")
        check_dropout(dropout)
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


class EmbeddingMLP(nn.Module):
    """An MLP over tables: one embedding per categorical column, concatenated with the numeric ones.

    Each input row holds the category codes first, then the numeric values, all as floats (codes
    below 2**24 are exact), so that a table is one tensor like any other input.
    """

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
        check_dropout(dropout)
        self.embeddings = nn.ModuleList(nn.Embedding(count, embedding_dim) for count in cardinalities)
        self.num_categorical = len(self.embeddings)
        width = self.num_categorical * embedding_dim + num_numeric
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        codes, numeric = x[:, : self.num_categorical].long(), x[:, self.num_categorical :]
        embedded = [embedding(codes[:, column]) for column, embedding in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*embedded, numeric.float()], dim=1))


class MLP(nn.Module):
    """Fully connected layers over a vector of ``num_features`` numbers: table rows, embeddings, signals."""

    def __init__(
        self, num_features: int, num_outputs: int, hidden: int = 64, depth: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"model.net.init_args.depth must be at least 1, got {depth}")
        check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in in [num_features] + [hidden] * (depth - 1):
            layers += [nn.Linear(width_in, hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
