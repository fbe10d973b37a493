"""The DataModule: splits, shapes, augmentation, and seeding of DataLoader workers."""

import random

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule, ImageDataset
from {{ cookiecutter.package_name }}.engine.datamodule import split_indices

from conftest import INPUT_SHAPE, NUM_CLASSES, SPLIT_SIZES


def make_datamodule(**kwargs: object) -> DigitsDataModule:
    datamodule = DigitsDataModule(**kwargs)
    datamodule.setup()
    return datamodule


def test_splits_are_disjoint_and_complete() -> None:
    count = sum(SPLIT_SIZES.values())
    indices = split_indices(count, val_fraction=0.15, test_fraction=0.15, seed=0)
    everything = torch.cat(list(indices.values()))
    assert torch.equal(everything.sort().values, torch.arange(count))
    splits = make_datamodule().splits
    assert {name: len(split) for name, split in splits.items()} == SPLIT_SIZES


def test_split_depends_on_split_seed_only() -> None:
    def test_images(**kwargs: object) -> Tensor:
        return make_datamodule(**kwargs).splits["test"].images

    L.seed_everything(1)
    first = test_images()
    L.seed_everything(2)
    assert torch.equal(first, test_images())
    assert not torch.equal(first, test_images(split_seed=1))


def test_shapes_and_value_range_match_what_the_model_is_told() -> None:
    datamodule = make_datamodule(batch_size=32, num_workers=0)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (32, *INPUT_SHAPE)
    assert images.dtype == torch.float32 and images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == torch.long
    assert set(torch.cat([s.labels for s in datamodule.splits.values()]).tolist()) == set(range(NUM_CLASSES))
    assert len(datamodule.class_names) == datamodule.num_classes == NUM_CLASSES
    assert datamodule.example_input_array.dtype == images.dtype


def test_only_the_train_split_is_augmented() -> None:
    splits = make_datamodule().splits
    assert splits["train"].augment and not splits["val"].augment and not splits["test"].augment
    val_image, _ = splits["val"][0]
    assert torch.equal(val_image, splits["val"].images[0])
    train = splits["train"]
    draws = [train[0][0] for _ in range(20)]
    assert any(not torch.equal(draw, train.images[0]) for draw in draws)
    # A shift moves pixels, it does not invent them: the total ink can only drop at the borders.
    assert all(draw.sum() <= train.images[0].sum() + 1e-5 for draw in draws)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"batch_size": 0}, "data.batch_size"), ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction")],
)
def test_bad_arguments_name_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        DigitsDataModule(**kwargs)


class RandomProbe(Dataset[Tensor]):
    """Returns the worker and the index of each item, and what torch, NumPy and `random` draw there."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Tensor:
        worker = torch.utils.data.get_worker_info()
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        return torch.tensor([worker.id, index, *draws], dtype=torch.float64)


def probe_loader(seed: int) -> DataLoader:
    L.seed_everything(seed, workers=True)
    datamodule = make_datamodule(batch_size=2, num_workers=2)
    datamodule.splits["train"] = RandomProbe()  # type: ignore[assignment]
    return datamodule.train_dataloader()


def epoch_of(loader: DataLoader, epoch: int) -> tuple[Tensor, dict[int, Tensor]]:
    """The order of the items, and the draws of each worker, in ``epoch``."""
    loader.sampler.set_epoch(epoch)  # what Lightning does before every epoch
    rows = torch.cat(list(loader))
    return rows[:, 1], {worker: rows[rows[:, 0] == worker, 2:] for worker in (0, 1)}


def test_workers_draw_distinct_streams_that_repeat_with_the_seed() -> None:
    _, first = epoch_of(probe_loader(7), 0)
    _, again = epoch_of(probe_loader(7), 0)
    _, other = epoch_of(probe_loader(8), 0)
    for library in range(3):  # torch, NumPy, random: no two workers share a stream
        assert not torch.equal(first[0][:, library], first[1][:, library])
    for worker in (0, 1):
        assert torch.equal(first[worker], again[worker])
        assert not torch.equal(first[worker], other[worker])


def test_order_and_draws_are_new_each_epoch_and_depend_on_seed_and_epoch_only() -> None:
    loader = probe_loader(7)
    order_0, draws_0 = epoch_of(loader, 0)
    order_1, draws_1 = epoch_of(loader, 1)
    assert not torch.equal(order_0, order_1)
    assert all(not torch.equal(draws_0[worker], draws_1[worker]) for worker in (0, 1))
    # A loader that starts at epoch 1, as in a resumed run, shuffles and draws the same.
    resumed_order, resumed_draws = epoch_of(probe_loader(7), 1)
    assert torch.equal(resumed_order, order_1)
    assert all(torch.equal(resumed_draws[worker], draws_1[worker]) for worker in (0, 1))


def test_augmentations_differ_between_workers_and_repeat_with_the_seed() -> None:
    def shifted_copies(seed: int) -> Tensor:
        L.seed_everything(seed, workers=True)
        datamodule = make_datamodule(batch_size=4, num_workers=2)
        one_image = datamodule.splits["train"].images[:1].expand(16, -1, -1, -1)
        datamodule.splits["train"] = ImageDataset(one_image, torch.zeros(16, dtype=torch.long), augment=True)
        return torch.cat([images for images, _ in datamodule.train_dataloader()])

    first, again = shifted_copies(3), shifted_copies(3)
    assert torch.equal(first, again)
    # Batches alternate between the two workers; their copies of the same image are shifted differently.
    assert not torch.equal(first[0:4], first[4:8])
