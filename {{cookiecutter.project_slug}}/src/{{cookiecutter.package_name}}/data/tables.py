"""A CSV table of categorical and numeric columns and one target column, held in memory.

Each row becomes one float tensor ``[codes..., numerics...]``, the input ``models.EmbeddingMLP``
expects: a table is then one tensor like any other input, and export sees a single input.
"""

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices


def read_columns(path: Path, keys: dict[str, str]) -> dict[str, list[str]]:
    """The columns of the CSV file that ``keys`` names, as strings. ``keys`` maps each column to
    the config key that asked for it, so that a missing column is reported under the key to fix."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        header = reader.fieldnames or []
        for name, key in keys.items():
            if name not in header:
                raise ValueError(f"data.init_args.{key}: no column '{name}' in '{path}' (it has {header})")
        rows = list(reader)
    if not rows:
        raise ValueError(f"data.init_args.path: '{path}' has no rows")
    return {name: [row[name] for row in rows] for name in keys}


def codes(values: list[str]) -> tuple[list[str], Tensor]:
    """The sorted distinct values, and each value's position among them (0 .. k-1)."""
    categories = sorted(set(values))
    position = {value: code for code, value in enumerate(categories)}
    return categories, torch.tensor([position[value] for value in values])


def numbers(name: str, values: list[str]) -> Tensor:
    """The column as float64, in which the training split's mean and deviation are taken."""
    try:
        return torch.tensor([float(value) for value in values], dtype=torch.float64)
    except ValueError as error:
        raise ValueError(f"data.init_args.numeric: column '{name}' holds a non-number ({error})") from None


class CsvTableDataModule(SeededDataModule):
    """Rows of a CSV file (with a header line), split into train, val and test.

    Categories, and the classes, are coded 0 .. k-1 in the sorted order of the values found
    anywhere in the file; numeric columns are standardised with the mean and standard deviation
    of the training split alone, so that no statistic of the held-out rows leaks into training.
    The file is read when the DataModule is built: the network's sizes (``cardinalities``,
    ``num_numeric``, ``num_classes``) come from it before any training starts.

    Args:
        path: The CSV file.
        target: The column of the class to predict.
        categorical: The columns of categories, each embedded by the network.
        numeric: The columns of numbers.
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes. 0 suits a table in memory.
        persistent_workers: Keep workers alive between epochs (see ``SeededDataModule``).
        val_fraction: Share of the rows held out for validation.
        test_fraction: Share of the rows held out for the final test.
        split_seed: Seed of the split alone, so that runs with different training seeds are
            evaluated on the same held-out rows.
    """

    def __init__(
        self,
        path: str | Path,
        target: str,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        batch_size: int = 64,
        num_workers: int = 0,
        persistent_workers: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, persistent_workers)
        check_fractions(val_fraction, test_fraction)
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"data.init_args.path: no file at '{path}'")
        if not categorical and not numeric:
            raise ValueError("data.init_args.categorical, data.init_args.numeric: name at least one column")
        keys = dict.fromkeys(categorical, "categorical") | dict.fromkeys(numeric, "numeric")
        columns = read_columns(path, {target: "target", **keys})
        names, self.labels = codes(columns[target])
        self.class_names = tuple(names)
        self.num_classes = len(names)
        coded = [codes(columns[name]) for name in categorical]
        self.categories = {name: values for name, (values, _) in zip(categorical, coded, strict=True)}
        self.cardinalities = [len(values) for values, _ in coded]
        self.num_numeric = len(numeric)
        self.category_codes = torch.stack([column for _, column in coded], dim=1) if coded else None
        self.numeric_values = (
            torch.stack([numbers(name, columns[name]) for name in numeric], dim=1) if numeric else None
        )
        self.mean: Tensor | None = None  # of the training split, set by setup()
        self.std: Tensor | None = None
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        index = split_indices(len(self.labels), hp.val_fraction, hp.test_fraction, hp.split_seed)
        parts = [] if self.category_codes is None else [self.category_codes.double()]
        if self.numeric_values is not None:
            train = self.numeric_values[index["train"]]
            self.mean, std = train.mean(dim=0), train.std(dim=0)
            self.std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays 0
            parts.append((self.numeric_values - self.mean) / self.std)
        inputs = torch.cat(parts, dim=1).float()
        for name, rows in index.items():
            self.splits[name] = TensorDataset(inputs[rows], self.labels[rows])
