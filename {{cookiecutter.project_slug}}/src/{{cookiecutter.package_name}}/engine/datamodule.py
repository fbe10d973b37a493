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
import warnings

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

EXAMPLE_INPUTS = 16
"""Inputs that the model summary, the graph and export's parity check use: the first validation ones."""


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


class SeededDataModule(L.LightningDataModule):
    """Loaders for ``self.splits`` whose order and random draws depend only on (seed, epoch).

    Args:
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes; each gets its own reproducible seed. 0 loads in
            the training process, which suits data that sits in memory; raise it for data that is
            read and decoded from disk.
        persistent_workers: Keep workers alive between epochs. Off by default: workers started
            afresh each epoch are seeded from (seed, epoch), so a resumed run draws the same
            augmentations as one that never stopped; persistent workers carry their random
            streams over from epoch to epoch, which a checkpoint cannot capture. Turn it on when
            worker start-up is slow and exact resume does not matter.
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
        if num_workers == 0:  # Lightning's advice to add workers is meant for data read from disk
            warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if num_workers > cores:  # said once here, not by torch for every loader it builds
            warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes")
            rank_zero_warn(
                f"data.num_workers: {num_workers} workers on {cores} cores compete with training for them;"
                f" {cores} or fewer usually load as fast"
            )
        self.first_epoch = 0  # of this process's training; set from the checkpoint on resume
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
            sampler = EpochSeededSampler(dataset, seed, num_replicas=world_size, rank=rank)
            # Lightning starts drawing batches before its first `set_epoch` call: without this a
            # resumed run would replay the draws of epoch 0.
            sampler.set_epoch(self.first_epoch)
            generator = sampler.generator
        else:
            # Evaluation draws nothing at random; its own generator keeps it off the global one.
            sampler, generator = None, torch.Generator().manual_seed(seed)
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
        """Saved in every checkpoint: the epoch that a run resumed from it starts with."""
        trainer = self.trainer
        # The counter Lightning passes to `set_epoch`; it already counts an epoch that ended.
        return {"next_epoch": trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.first_epoch = state_dict["next_epoch"]


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
