"""A CSV table of categorical and numeric columns and one target column, held in memory.

Each row becomes one float tensor ``[codes..., numerics...]``, the input ``models.EmbeddingMLP``
expects: a table is then one tensor like any other input, and export sees a single input.
"""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices

UNKNOWN = 0
"""The code of a blank category cell and of a value the training rows never held: every categorical
column's embedding has this one row more than the column has categories."""
SHOWN_LINES = 10
"""Lines of the file named in an error; the rest are counted."""


def read_columns(path: Path, keys: dict[str, str]) -> tuple[dict[str, list[str]], list[int]]:
    """The columns of the CSV file that ``keys`` names, as strings (a missing cell is blank), and the
    line of the file each row ends on. ``keys`` maps each column to the config key that asked for it,
    so that a missing column is reported under the key to fix."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        header = reader.fieldnames or []
        for name, key in keys.items():
            if name not in header:
                raise ValueError(f"data.init_args.{key}: no column '{name}' in '{path}' (it has {header})")
        rows, lines = [], []
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    if not rows:
        raise ValueError(f"data.init_args.path: '{path}' has no rows")
    return {name: [(row[name] or "").strip() for row in rows] for name in keys}, lines


def line_list(lines: Sequence[int]) -> str:
    """``line 5`` or ``lines 5, 9, ... (12 in all)``: where in the file to look."""
    shown = ", ".join(str(line) for line in lines[:SHOWN_LINES])
    more = f", ... ({len(lines)} in all)" if len(lines) > SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def numbers(name: str, values: list[str], path: Path, lines: list[int]) -> Tensor:
    """The column as float64, in which the training rows' mean and deviation are taken; a blank or a
    non-number is refused, naming its lines: a number cannot be guessed."""
    parsed, bad = [], []
    for value, line in zip(values, lines, strict=True):
        try:
            parsed.append(float(value))
        except ValueError:
            bad.append(line)
    if bad:
        first = values[lines.index(bad[0])]
        raise ValueError(
            f"data.init_args.numeric: column '{name}' of '{path}' holds a blank or a non-number on"
            f" {line_list(bad)} (the first: '{first}')"
        )
    return torch.tensor(parsed, dtype=torch.float64)


class CsvTableDataModule(SeededDataModule):
    """Rows of a CSV file (with a header line), split into train, val and test; ``predict`` is every
    row of the file, in its order.

    What the network learned from travels in the checkpoint (``state_dict``): the classes, the
    categories of each column and the numeric columns' mean and deviation. A checkpoint evaluated or
    predicting on another file codes that file as in training: the same category has the same code.

    - Categories are the values the training rows hold, coded 1 .. k in sorted order; 0 (UNKNOWN)
      codes a blank cell and a value the training rows never held (in the held-out rows, or in a
      file predicted later), so ``cardinalities`` are k + 1.
    - Classes are the target's values anywhere in the file, coded 0 .. c-1 in sorted order; a blank
      target is refused, naming its lines.
    - Numeric columns are standardised with the mean and standard deviation of the training rows
      alone, so that no statistic of the held-out rows leaks into training.

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
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"data.init_args.path: no file at '{self.path}'")
        if not categorical and not numeric:
            raise ValueError("data.init_args.categorical, data.init_args.numeric: name at least one column")
        keys = dict.fromkeys(categorical, "categorical") | dict.fromkeys(numeric, "numeric")
        self.columns, self.lines = read_columns(self.path, {target: "target", **keys})
        targets = self.columns[target]
        blank = [line for value, line in zip(targets, self.lines, strict=True) if not value]
        if blank:
            raise ValueError(
                f"data.init_args.target: the target column '{target}' of '{self.path}' is blank on"
                f" {line_list(blank)}: fill those cells in or remove the rows"
            )
        self.index = split_indices(len(targets), val_fraction, test_fraction, split_seed)
        train = self.index["train"].tolist()
        self.class_names = tuple(sorted(set(targets)))
        self.categories = {
            name: sorted({self.columns[name][row] for row in train} - {""}) for name in categorical
        }
        self.numeric_values = (
            torch.stack([numbers(name, self.columns[name], self.path, self.lines) for name in numeric], dim=1)
            if numeric
            else None
        )
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        if self.numeric_values is not None:
            rows = self.numeric_values[self.index["train"]]
            self.mean, std = rows.mean(dim=0), rows.std(dim=0)
            self.std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays 0
        self.num_numeric = len(numeric)
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def cardinalities(self) -> list[int]:
        """Each categorical column's categories, and its UNKNOWN code."""
        return [len(values) + 1 for values in self.categories.values()]

    def labels(self) -> Tensor:
        """The target of each row, coded in ``class_names``; a class the model does not know is refused."""
        position = {name: code for code, name in enumerate(self.class_names)}
        values = self.columns[self.hparams.target]
        unknown = [line for value, line in zip(values, self.lines, strict=True) if value not in position]
        if unknown:
            raise MisconfigurationException(
                f"data.init_args.target: '{self.path}' holds classes the checkpoint's model does not know"
                f" ({sorted({value for value in values if value not in position})}) on {line_list(unknown)};"
                f" it knows {list(self.class_names)}"
            )
        return torch.tensor([position[value] for value in values])

    def category_codes(self) -> Tensor | None:
        """Each categorical cell's code: 1 .. k for the training rows' categories, UNKNOWN for the rest."""
        columns = []
        for name, categories in self.categories.items():
            position = {value: code for code, value in enumerate(categories, start=UNKNOWN + 1)}
            columns.append(torch.tensor([position.get(value, UNKNOWN) for value in self.columns[name]]))
        return torch.stack(columns, dim=1) if columns else None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        codes = self.category_codes()
        parts = [] if codes is None else [codes.double()]
        if self.numeric_values is not None:
            parts.append((self.numeric_values - self.mean) / self.std)
        inputs, labels = torch.cat(parts, dim=1).float(), self.labels()
        for name, rows in self.index.items():
            self.splits[name] = TensorDataset(inputs[rows], labels[rows])
        self.splits["predict"] = TensorDataset(inputs, labels)  # every row, in the file's order

    def state_dict(self) -> dict[str, Any]:
        """The coding the network learned from, besides the epoch: saved in every checkpoint."""
        coding = {"class_names": list(self.class_names), "categories": self.categories}
        if self.mean is not None and self.std is not None:
            coding |= {"mean": self.mean.tolist(), "std": self.std.tolist()}
        return super().state_dict() | coding

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Codes this file as the checkpoint's training did (Lightning calls it after ``setup``).

        Resuming training needs the same classes and categories (the network's sizes depend on
        them); evaluating and predicting take the checkpoint's, whatever this file holds.
        """
        super().load_state_dict(state_dict)
        if "categories" not in state_dict:
            return
        classes, categories = tuple(state_dict["class_names"]), dict(state_dict["categories"])
        if self.trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            saved = {"target": list(classes)} | {name: list(values) for name, values in categories.items()}
            found = {"target": list(self.class_names)} | {
                name: list(values) for name, values in self.categories.items()
            }
            for name, values in found.items():
                if name in saved and saved[name] != values:
                    raise MisconfigurationException(
                        f"data.init_args.path: column '{name}' of '{self.path}' holds {values}; the"
                        f" checkpoint's training rows held {saved[name]}: resume on the same data, or"
                        " train afresh"
                    )
            return
        self.class_names = classes
        self.categories = {name: categories.get(name, values) for name, values in self.categories.items()}
        for name, values in self.categories.items():
            unseen = sorted(set(self.columns[name]) - set(values) - {""})
            if unseen:
                rank_zero_warn(
                    f"data.init_args.categorical: column '{name}' of '{self.path}' holds values the model"
                    f" was not trained on, coded as unknown: {unseen[:SHOWN_LINES]}"
                )
        if "mean" in state_dict and self.numeric_values is not None:
            self.mean = torch.tensor(state_dict["mean"], dtype=torch.float64)
            self.std = torch.tensor(state_dict["std"], dtype=torch.float64)
        if self.splits:  # rebuilt with the checkpoint's coding
            self.splits.clear()
            self.setup()
