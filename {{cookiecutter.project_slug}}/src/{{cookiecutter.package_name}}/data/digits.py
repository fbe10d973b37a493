"""The default example: scikit-learn's handwritten digits, which ship inside the package (no download)."""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices


def random_shift(image: Tensor, max_shift: int = 1) -> Tensor:
    """Translate ``image`` (C, H, W) by up to ``max_shift`` pixels, filling with zeros.

    Drawn from torch's global RNG, which the loader seeds for each batch (engine/datamodule.py).
    Kept at module level so that spawned workers (Windows, macOS) can pickle it.
    """
    height, width = image.shape[-2:]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    padded = F.pad(image, (max_shift, max_shift, max_shift, max_shift))
    return padded[..., dy : dy + height, dx : dx + width]


class ImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """In-memory images and labels, with an optional random augmentation per sample."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool = False) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.augment:
            image = random_shift(image)
        return image, self.labels[index]


class DigitsDataModule(SeededDataModule):
    """1,797 real 8x8 grey-scale digit images in 10 classes, split into train, val and test.

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes. 0 suits this data set, which sits in memory:
            workers would only copy the same tensors between processes and compete with the
            training threads for the cores.
        persistent_workers: Keep workers alive between epochs (see ``SeededDataModule``).
        val_fraction: Share of the data held out for validation.
        test_fraction: Share of the data held out for the final test.
        split_seed: Seed of the split alone, so that runs with different training seeds are
            evaluated on the same held-out images.
        augment: Random one-pixel shifts of the training images.
    """

    num_classes = 10
    in_channels = 1
    class_names = tuple(str(digit) for digit in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        persistent_workers: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, persistent_workers)
        check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits  # here, not at the top: keeps `--help` quick

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        hp = self.hparams
        for name, index in split_indices(
            len(labels), hp.val_fraction, hp.test_fraction, hp.split_seed
        ).items():
            self.splits[name] = ImageDataset(
                images[index], labels[index], augment=hp.augment and name == "train"
            )
