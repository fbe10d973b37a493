"""The example data: scikit-learn's handwritten digits, which ship inside the package (no download).

To train on your own data, write one ``LightningDataModule`` like ``DigitsDataModule`` below (with
``num_classes`` and ``input_shape``, which the CLI hands to the model) and point ``data.class_path``
in ``configs/default.yaml`` at it. Nothing else needs to change.
"""

import os
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


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


class EpochSeededSampler(DistributedSampler):
    """Shuffles this process's share of the data in an order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch. The same call re-seeds ``generator``, which
    the DataLoader uses to seed its workers, so the random augmentations also depend only on
    (seed, epoch, worker, rank): a run resumed at an epoch boundary draws exactly what a run that
    never stopped would have drawn, and no epoch repeats the draws of another. Being a
    ``DistributedSampler`` with the Trainer's world size and rank, it also shards the data under
    DDP, and Lightning leaves it in place.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        # SeedSequence mixes the two numbers, so (seed 1, epoch 0) and (seed 0, epoch 1) differ.
        workers_seed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        self.generator.manual_seed(int(workers_seed))


class DigitsDataModule(L.LightningDataModule):
    """1,797 real 8x8 grey-scale digit images in 10 classes, split into train, val and test.

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes; each gets its own reproducible seed. 0 (load in
            the training process) suits this data set, which sits in memory: workers would only
            copy the same tensors between processes and compete with the training threads for
            the cores. Raise it for data that is read and decoded from disk.
        persistent_workers: Keep workers alive between epochs. Off by default: workers started
            afresh each epoch are seeded from (seed, epoch), so a resumed run draws the same
            augmentations as one that never stopped; persistent workers carry their random
            streams over from epoch to epoch, which a checkpoint cannot capture. Turn it on when
            worker start-up is slow (large datasets, spawn) and exact resume does not matter.
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
        num_workers: int = 0,
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
        if num_workers == 0:  # Lightning's advice to add workers is meant for data read from disk
            warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers")
        self.first_epoch = 0  # of this process's training; set from the checkpoint on resume
        self.splits: dict[str, ImageDataset] = {}
        self.split_indices: dict[str, Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits  # here, not at the top: keeps `--help` quick

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
        """The test split, labels included: ``--predict_path`` writes them beside the predictions."""
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.splits[split]
        # The seed `seed_everything` chose (Lightning's own samplers read it from here too).
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if shuffle:
            trainer = self.trainer
            world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = EpochSeededSampler(dataset, seed, num_replicas=world_size, rank=rank)
            # Lightning starts drawing batches before its first `set_epoch` call: without this a
            # resumed run would replay the draws of epoch 0.
            sampler.set_epoch(self.first_epoch)
            generator = sampler.generator
        else:
            # Evaluation draws nothing at random; its own generator keeps it off the global one.
            sampler, generator = None, torch.Generator().manual_seed(seed)
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            generator=generator,
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

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the epoch that a run resumed from it starts with."""
        trainer = self.trainer
        # The counter Lightning passes to `set_epoch`; it already counts an epoch that ended.
        return {"next_epoch": trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.first_epoch = state_dict["next_epoch"]
