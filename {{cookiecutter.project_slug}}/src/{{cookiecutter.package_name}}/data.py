"""The example data: scikit-learn's handwritten digits, which ship inside the package (no download).

To train on your own data, write one ``LightningDataModule`` like ``DigitsDataModule`` below (with
``num_classes`` and ``input_shape``, which the CLI hands to the model) and point ``data.class_path``
in ``configs/default.yaml`` at it. Nothing else needs to change.
"""

import os
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.seed import pl_worker_init_function
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def random_shift(image: Tensor, max_shift: int = 1) -> Tensor:
    """Translate ``image`` (C, H, W) by up to ``max_shift`` pixels, filling with zeros.

    Drawn from torch's global RNG, so inside a DataLoader worker it follows the worker's seed.
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


class DigitsDataModule(L.LightningDataModule):
    """1,797 real 8x8 grey-scale digit images in 10 classes, split into train, val and test.

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes; each gets its own reproducible seed.
        persistent_workers: Keep workers alive between epochs. Off by default: a restarted worker
            draws its seed from the loader's generator, which travels in the checkpoint, so a
            resumed run repeats the augmentations of an uninterrupted one. Turn it on when worker
            start-up is slow (large datasets, spawn) and exact resume does not matter.
        val_fraction: Share of the data held out for validation.
        test_fraction: Share of the data held out for the final test.
        split_seed: Seed of the split alone, so that runs with different training seeds are
            evaluated on the same held-out images.
        augment: Random one-pixel shifts of the training images.
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 2,
        persistent_workers: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be 0 or more, got {num_workers}")
        if min(val_fraction, test_fraction) <= 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                "data.val_fraction and data.test_fraction must be positive and sum to less than 1,"
                f" got {val_fraction} and {test_fraction}"
            )
        self.save_hyperparameters()
        # Drives the train shuffle and the workers' seeds; its state is saved in checkpoints.
        self.train_generator = torch.Generator()
        self.train_generator.manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)))
        self.splits: dict[str, ImageDataset] = {}
        self.split_indices: dict[str, Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        n_val = round(self.hparams.val_fraction * len(labels))
        n_test = round(self.hparams.test_fraction * len(labels))
        self.split_indices = {
            "val": order[:n_val],
            "test": order[n_val : n_val + n_test],
            "train": order[n_val + n_test :],
        }
        for name, index in self.split_indices.items():
            augment = self.hparams.augment and name == "train"
            self.splits[name] = ImageDataset(images[index], labels[index], augment=augment)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self.splits[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            generator=self.train_generator if shuffle else None,
            num_workers=workers,
            # Seeds torch, NumPy and `random` in each worker from the loader's generator, the
            # worker id and the process rank: distinct streams, the same ones on every re-run.
            worker_init_fn=pl_worker_init_function,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            pin_memory=self._on_cuda(),
        )

    def _on_cuda(self) -> bool:
        """Pinned memory only pays off when batches are copied to a CUDA device."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def state_dict(self) -> dict[str, Any]:
        return {"train_generator": self.train_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_generator.set_state(state_dict["train_generator"])
