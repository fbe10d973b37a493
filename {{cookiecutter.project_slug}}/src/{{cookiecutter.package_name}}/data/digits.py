"""The default example: scikit-learn's handwritten digits, which ship inside the package (no download)."""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.engine.datamodule import SplitDataModule


def random_shift(image: Tensor, max_shift: int = 1) -> Tensor:
    """Translate ``image`` (C, H, W) by up to ``max_shift`` pixels, filling with zeros; drawn from torch's
    global RNG, which the loader seeds for each batch."""
    height, width = image.shape[-2:]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    padded = F.pad(image, (max_shift, max_shift, max_shift, max_shift))
    return padded[..., dy : dy + height, dx : dx + width]


@dataclass(eq=False)
class ImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """In-memory images and labels, shifted at random where ``augment``."""

    images: Tensor
    labels: Tensor
    augment: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return random_shift(image) if self.augment else image, self.labels[index]


class DigitsDataModule(SplitDataModule):
    """1,797 real 8x8 grey-scale digit images in 10 classes, held in memory.
    ``num_workers`` 0 suits them: workers would only copy the tensors and compete for the cores.

    Args:
        augment: Random one-pixel shifts of the training images.
    """

    num_classes = 10
    in_channels = 1
    class_names = tuple(str(digit) for digit in range(10))

    def __init__(self, augment: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # built once: Lightning calls setup again for each stage
            return
        from sklearn.datasets import load_digits  # here, not at the top: keeps `--help` quick

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target)
        for name, index in self.split(len(labels)).items():
            self.splits[name] = ImageDataset(
                images[index], labels[index], self.hparams.augment and name == "train"
            )
