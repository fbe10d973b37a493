"""A CSV table of categorical and numeric columns and one target column, held in memory. Each row is one
float tensor ``[codes..., numerics...]``, as ``models.EmbeddingMLP`` expects: export sees a single input."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.engine.datamodule import SplitDataModule

UNKNOWN = 0  # the code of a blank category and of one no training row held: each embedding has 1 row more
SHOWN_LINES = 10  # lines of the file an error names; the rest are counted


def read_columns(path: Path, keys: dict[str, str]) -> tuple[dict[str, list[str]], list[int]]:
    """The columns named in ``keys`` (each mapped to the config key that asked for it, which an error names)
    as stripped strings, a missing cell blank, and the line of the file each row ends on."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, restval="")
        header = reader.fieldnames or []
        for name, key in keys.items():
            if name not in header:
                raise ValueError(f"data.init_args.{key}: no column '{name}' in '{path}' (it has {header})")
        rows = [(row, reader.line_num) for row in reader]
    if not rows:
        raise ValueError(f"data.init_args.path: '{path}' has no rows")
    return {name: [row[name].strip() for row, _ in rows] for name in keys}, [line for _, line in rows]


def line_list(lines: Sequence[int]) -> str:
    """``line 5`` or ``lines 5, 9, ... (12 in all)``: where in the file to look."""
    more = f", ... ({len(lines)} in all)" if len(lines) > SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:SHOWN_LINES]))}{more}"


def numbers(name: str, values: list[str], path: Path, lines: list[int]) -> list[float]:
    """The column's numbers; a blank or a non-number is refused, naming its lines: it cannot be guessed."""
    parsed, bad = [], []
    for value, line in zip(values, lines, strict=True):
        try:
            parsed.append(float(value))
        except ValueError:
            bad.append((line, value))
    if bad:
        raise ValueError(
            f"data.init_args.numeric: column '{name}' of '{path}' holds a blank or a non-number on"
            f" {line_list([line for line, _ in bad])} (the first: '{bad[0][1]}')"
        )
    return parsed


class CsvTableDataModule(SplitDataModule):
    """Rows of a CSV file with a header line; the ``predict`` split is every row, in the file's order.
    Categories are the training rows' values, coded 1..k sorted (UNKNOWN for the rest); classes the target's
    values, sorted; numbers standardised with the training rows' statistics. Checkpoints keep this coding.

    Args:
        path: The CSV file.
        target: The column of the class to predict.
        categorical: The columns of categories, each embedded by the network.
        numeric: The columns of numbers.
    """

    def __init__(
        self,
        path: str | Path,
        target: str,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"data.init_args.path: no file at '{self.path}'")
        if not categorical and not numeric:
            raise ValueError("data.init_args.categorical, data.init_args.numeric: name at least one column")
        keys = (
            {target: "target"} | dict.fromkeys(categorical, "categorical") | dict.fromkeys(numeric, "numeric")
        )
        self.columns, self.lines = read_columns(self.path, keys)
        blank = [line for value, line in zip(self.columns[target], self.lines, strict=True) if not value]
        if blank:
            raise ValueError(
                f"data.init_args.target: the target column '{target}' of '{self.path}' is blank on"
                f" {line_list(blank)}: fill those cells in or remove the rows"
            )
        self.index = self.split(len(self.lines))
        train = self.index["train"].tolist()
        self.class_names = tuple(sorted(set(self.columns[target])))
        self.categories = {
            name: sorted({self.columns[name][row] for row in train} - {""}) for name in categorical
        }
        self.num_numeric = len(numeric)
        columns = [numbers(name, self.columns[name], self.path, self.lines) for name in numeric]
        self.numeric_values = torch.tensor(columns, dtype=torch.float64).view(len(columns), len(self.lines)).T
        train_values = self.numeric_values[train]
        std = train_values.std(dim=0)
        self.mean, self.std = train_values.mean(dim=0), torch.where(std > 0, std, 1.0)  # a constant column: 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def cardinalities(self) -> list[int]:
        """Each categorical column's categories, and its UNKNOWN code."""
        return [len(values) + 1 for values in self.categories.values()]

    def setup(self, stage: str | None = None) -> None:
        """Codes every row: a class the model does not know (a checkpoint's, on another file) is refused."""
        if self.splits:  # built once: Lightning calls setup again for each stage
            return
        classes = {name: code for code, name in enumerate(self.class_names)}
        targets = self.columns[self.hparams.target]
        unknown = [line for value, line in zip(targets, self.lines, strict=True) if value not in classes]
        if unknown:
            raise MisconfigurationException(
                f"data.init_args.target: '{self.path}' holds classes the checkpoint's model does not know"
                f" ({sorted(set(targets) - set(classes))}) on {line_list(unknown)};"
                f" it knows {list(self.class_names)}"
            )
        codes = []
        for name, categories in self.categories.items():
            code = {value: number for number, value in enumerate(categories, start=UNKNOWN + 1)}
            codes.append([code.get(value, UNKNOWN) for value in self.columns[name]])
        numeric = (self.numeric_values - self.mean) / self.std
        codes_tensor = torch.tensor(codes, dtype=torch.float64).view(len(codes), len(self.lines)).T
        inputs = torch.cat([codes_tensor, numeric], dim=1).float()
        labels = torch.tensor([classes[value] for value in targets])
        for name, rows in self.index.items():
            self.splits[name] = TensorDataset(inputs[rows], labels[rows])
        self.splits["predict"] = TensorDataset(inputs, labels)  # every row, in the file's order

    def state_dict(self) -> dict[str, Any]:
        """The coding the network learned from, besides the epoch: saved in every checkpoint."""
        coding = {"class_names": list(self.class_names), "categories": self.categories}
        return super().state_dict() | coding | {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Codes this file as the checkpoint's training did (Lightning calls it after ``setup``); resuming
        training needs the same classes and categories, as the network's sizes depend on them."""
        super().load_state_dict(state_dict)
        self.class_names = tuple(state_dict["class_names"])
        self.categories = {
            name: state_dict["categories"].get(name, values) for name, values in self.categories.items()
        }
        for name, values in self.categories.items():
            unseen = sorted(set(self.columns[name]) - set(values) - {""})
            if unseen:
                rank_zero_warn(
                    f"data.init_args.categorical: column '{name}' of '{self.path}' holds values the model"
                    f" was not trained on, coded as unknown: {unseen[:SHOWN_LINES]}"
                )
        self.mean = torch.tensor(state_dict["mean"], dtype=torch.float64)
        self.std = torch.tensor(state_dict["std"], dtype=torch.float64)
        if self.splits:  # rebuilt with the checkpoint's coding
            self.splits.clear()
            self.setup()
