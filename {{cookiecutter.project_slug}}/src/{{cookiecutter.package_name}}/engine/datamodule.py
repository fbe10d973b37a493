"""The base of the DataModules: seeded loaders and exact resume, so that a data set writes ``setup()`` alone.

A subclass of ``SeededDataModule``:

- declares the sizes the model needs (``num_classes``, ``num_features``, ...; ``engine/sizes.py``)
  before ``setup()``, in ``__init__`` or as class attributes: the task and the network are built
  from them, by name, before any data is read; none is required;
- fills ``self.splits`` in ``setup()`` with map-style datasets named ``train``, ``val``, ``test`` and,
  optionally, ``predict`` (else predictions are made on ``test``), each item an ``(input, target)`` pair;
- may set ``class_names``, which a classification task keeps and names its predictions with.

A plain ``LightningDataModule`` works too; the CLI names the guarantees it lacks.
"""

import os
import random
import warnings
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

EXAMPLE_INPUTS = 16
"""Inputs that the model summary, the graph and export's parity check use: the first validation ones."""


class EpochSeededSampler(DistributedSampler):
    """Shuffles this process's share of the data in an order that depends only on (seed, epoch),
    and gives each batch a seed of its own, (seed, epoch, batch), for its random draws.

    Lightning calls ``set_epoch`` before every epoch. A DataLoader seeds its workers, not its
    batches: a worker's random stream runs on from batch to batch, so the draws of a batch would
    depend on which worker loaded it and on what it loaded before. Seeded by batch, a run resumed
    mid-epoch (``skip`` batches done) draws what a run that never stopped draws, whatever the
    number of workers. Being a ``DistributedSampler`` with the Trainer's world size and rank, it
    also shards the data under DDP, and Lightning leaves it in place.
    """

    def __init__(
        self, dataset: Dataset, seed: int, batch_size: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.skip = 0  # batches of the first epoch that a resumed run has already trained on

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        order = list(super().__iter__())
        skip, self.skip = self.skip, 0
        seed = 0
        for position in range(skip * self.batch_size, len(order)):
            if position % self.batch_size == 0:  # once per batch, at its first item
                # SeedSequence mixes the numbers, so (seed 1, epoch 0) and (seed 0, epoch 1) differ.
                batch = position // self.batch_size
                seed = int(np.random.SeedSequence([self.seed, self.epoch, batch]).generate_state(1)[0])
            yield order[position], seed


class BatchSeeded(Dataset):
    """Loads the ``(index, seed)`` items of an ``EpochSeededSampler``: each batch draws its random
    augmentations from its own seed, and the caller's random streams are left as they were."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> object:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]] | list[int]) -> list[object]:
        if not isinstance(items[0], tuple):  # Lightning's own sampler (`overfit_batches`): no seeds
            return [self.dataset[index] for index in items]
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            seed = items[0][1]
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            try:
                return [self.dataset[index] for index, _ in items]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class SeededDataModule(L.LightningDataModule):
    """Loaders for ``self.splits`` whose order and random draws depend only on (seed, epoch).

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes; each gets its own reproducible seed. 0 loads in
            the training process, which suits data that sits in memory; raise it for data that is
            read and decoded from disk.
        persistent_workers: Keep workers alive between epochs: quicker epochs where worker start-up
            is slow. Either way each batch draws from its own seed, so resume stays exact.
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
        # Both warnings come from inside the Trainer's loops, where no ``catch_warnings`` of ours reaches:
        # each filter matches only the one message it replaces, and is added only where it applies.
        if num_workers == 0:  # Lightning's advice to add workers is meant for data read from disk
            warnings.filterwarnings(
                "ignore", r"The '\w+_dataloader' does not have many workers", PossibleUserWarning
            )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if num_workers > cores:  # said once here, not by torch for every loader it builds
            warnings.filterwarnings(
                "ignore",
                f"This DataLoader will create {num_workers} worker processes",
                UserWarning,
                r"torch\.",
            )
            rank_zero_warn(
                f"data.num_workers: {num_workers} workers on {cores} cores compete with training for them;"
                f" {cores} or fewer usually load as fast"
            )
        self.first_epoch = 0  # of this process's training; set from the checkpoint on resume
        self.first_batch = 0  # of that epoch: the batches a resumed run has already trained on
        self.splits: dict[str, Dataset] = {}

    @property
    def example_input_array(self) -> Tensor | None:
        """The first validation inputs, batched (after ``setup()``): real inputs of the right dtype."""
        if "val" not in self.splits:
            return None
        count = min(EXAMPLE_INPUTS, len(self.splits["val"]))  # type: ignore[arg-type]
        return torch.stack([self.splits["val"][index][0] for index in range(count)])

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
            raise RuntimeError(
                f"{type(self).__name__}.setup() made no '{split}' split (it made {sorted(self.splits)})"
            )
        dataset = self.splits[split]
        # The seed `seed_everything` chose (Lightning's own samplers read it from here too).
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if shuffle:
            trainer = self.trainer
            world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = EpochSeededSampler(dataset, seed, self.batch_size, num_replicas=world_size, rank=rank)
            # Lightning starts drawing batches before its first `set_epoch` call: without this a
            # resumed run would replay the draws of epoch 0.
            sampler.set_epoch(self.first_epoch)
            sampler.skip, self.first_batch = self.first_batch, 0
            dataset = BatchSeeded(dataset)
        else:
            sampler = None
        # Worker seeds come from here; evaluation's own generator keeps them off the global one.
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            # Seeds torch, NumPy and `random` in each worker from the loader's generator, the
            # worker id and the process rank: distinct streams, the same ones on every re-run.
            worker_init_fn=pl_worker_init_function,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            pin_memory=self._on_cuda(),
        )

    def _on_cuda(self) -> bool:
        """Pinned memory only pays off when batches are copied to a CUDA device."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the epoch, and the batch in it, that a resumed run starts with."""
        trainer = self.trainer
        if trainer is None:
            return {"next_epoch": 0, "next_batch": 0}
        # The counter Lightning passes to `set_epoch`; it already counts an epoch that ended.
        loop = trainer.fit_loop
        done = loop.epoch_loop.batch_progress.current.processed
        return {
            "next_epoch": loop.epoch_progress.current.processed,
            "next_batch": done if done < trainer.num_training_batches else 0,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.first_epoch = state_dict["next_epoch"]
        self.first_batch = state_dict.get("next_batch", 0)


def split_indices(count: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, Tensor]:
    """A random, disjoint and complete split of ``range(count)``, a function of ``seed`` alone.

    Its own seed, so that runs with different training seeds are evaluated on the same samples.
    """
    check_fractions(val_fraction, test_fraction)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(val_fraction * count), round(test_fraction * count)
    return {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuses, when the DataModule is built, shares of held-out data that leave nothing to train on."""
    if min(val_fraction, test_fraction) <= 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            "data.val_fraction and data.test_fraction must be positive and sum to less than 1,"
            f" got {val_fraction} and {test_fraction}"
        )
