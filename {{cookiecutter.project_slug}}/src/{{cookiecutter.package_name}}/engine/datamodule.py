"""``SeededDataModule``: seeded loaders, DDP sharding and exact resume, so that a data set writes only
``setup()``, filling ``self.splits`` (train, val, test, optionally predict) with (input, target) items."""

import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochSeededSampler(DistributedSampler):
    """Yields (index, batch seed): the order depends on (seed, epoch) alone and each batch seeds its draws
    with (seed, epoch, batch): a run resumed ``skip`` batches into an epoch draws what an unbroken one did."""

    def __init__(
        self, dataset: Dataset, seed: int, batch_size: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.skip = batch_size, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        order = list(super().__iter__())
        skip, self.skip = self.skip, 0  # only the first epoch of a resumed run is partly done
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            # SeedSequence mixes the numbers, so (seed 1, epoch 0) and (seed 0, epoch 1) differ.
            batch = [self.seed, self.epoch, start // self.batch_size]
            seed = int(np.random.SeedSequence(batch).generate_state(1)[0])
            yield from ((index, seed) for index in order[start : start + self.batch_size])


@dataclass(eq=False)
class BatchSeeded(Dataset):
    """Loads the (index, seed) items of an ``EpochSeededSampler``: a worker seeds per loader, not per batch,
    so without this a batch's draws would depend on which worker loaded it."""

    dataset: Dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> object:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]] | list[int]) -> list[object]:
        if not isinstance(items[0], tuple):  # Lightning's own sampler (`overfit_batches`): no seeds
            return [self.dataset[index] for index in items]
        with isolate_rng(include_cuda=False):  # the caller's random streams are left as they were
            torch.manual_seed(items[0][1])
            np.random.seed(items[0][1])
            random.seed(items[0][1])
            return [self.dataset[index] for index, _ in items]


class SeededDataModule(L.LightningDataModule):
    """Loaders for ``self.splits`` whose order and random draws depend only on (seed, epoch).

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes; 0 suits data in memory, more suits files read from disk.
        persistent_workers: Keep workers alive between epochs: quicker where worker start-up is slow.
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, persistent_workers: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be 0 or more, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers
        # Both warnings come from inside the Trainer's loops: each filter matches only the one it replaces.
        if num_workers == 0:  # Lightning's advice to add workers is meant for data read from disk
            warnings.filterwarnings("ignore", r"The '\w+_dataloader' does not have many", PossibleUserWarning)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if num_workers > cores:  # said once here, not by torch for every loader it builds
            warnings.filterwarnings("ignore", f"This DataLoader will create {num_workers} ", UserWarning)
            rank_zero_warn(
                f"data.num_workers: {num_workers} workers on {cores} cores compete with training for them;"
                f" {cores} or fewer usually load as fast"
            )
        # Lightning collects the arguments of every __init__ up the chain: a subclass's, defaults included.
        self.save_hyperparameters()
        self.resume_at = (0, 0)  # (epoch, batch in it) the next training loader starts at; from a checkpoint
        self.splits: dict[str, Dataset] = {}

    @property
    def example_input_array(self) -> Tensor | None:
        """The first 16 validation inputs (after ``setup()``), real ones of the right dtype: for the model
        summary, the graph and export's parity check."""
        return next(iter(DataLoader(self.splits["val"], batch_size=16)))[0] if "val" in self.splits else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The ``predict`` split, or else the test split, labels included: the CSV file scores them."""
        return self._loader("predict" if "predict" in self.splits else "test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}.setup() made no '{split}' split: {list(self.splits)}")
        dataset, sampler, trainer = self.splits[split], None, self.trainer
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # what `seed_everything` chose
        if shuffle:
            epoch, skip = self.resume_at
            self.resume_at = (epoch, 0)  # only the first loader of a resumed run starts mid-epoch
            world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = EpochSeededSampler(dataset, seed, self.batch_size, world_size, rank)
            sampler.skip = skip
            sampler.set_epoch(epoch)  # Lightning draws batches before its first `set_epoch` call
            dataset = BatchSeeded(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),  # worker seeds, off the global generator
            num_workers=self.num_workers,
            worker_init_fn=pl_worker_init_function,  # distinct seeds per worker and rank, the same each run
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
        )

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the epoch, and the batch in it, that a resumed run starts with."""
        loop = self.trainer.fit_loop  # its epoch counter already counts an epoch that ended
        done = loop.epoch_loop.batch_progress.current.processed
        return {
            "next_epoch": loop.epoch_progress.current.processed,
            "next_batch": done if done < self.trainer.num_training_batches else 0,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.resume_at = (state_dict["next_epoch"], state_dict.get("next_batch", 0))


class SplitDataModule(SeededDataModule):
    """One data set split at random into train, val and test (``self.split``), alike for every training seed.

    Args:
        val_fraction: Share of the samples held out for validation.
        test_fraction: Share of the samples held out for the final test.
        split_seed: Seed of the split alone: runs with any training seed are evaluated on the same samples.
    """

    def __init__(
        self, val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if min(val_fraction, test_fraction) <= 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                "data.val_fraction and data.test_fraction must be positive and sum to less than 1,"
                f" got {val_fraction} and {test_fraction}"
            )

    def split(self, count: int) -> dict[str, Tensor]:
        hp = self.hparams
        return split_indices(count, hp.val_fraction, hp.test_fraction, hp.split_seed)


def split_indices(count: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, Tensor]:
    """A random, disjoint and complete split of ``range(count)``, seeded apart from training (the same
    held-out samples whatever the training seed); ``random_split`` would give Subsets, not index tensors."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(val_fraction * count), round(test_fraction * count)
    return {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
