"""The regression example: scikit-learn's diabetes data, which ships inside the package (no download):
442 patients, 10 measurements each, and how far the disease progressed a year later."""

from typing import Any

import torch
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.engine.datamodule import SplitDataModule


class DiabetesDataModule(SplitDataModule):
    """The 442 rows, features and target standardised with the training rows' statistics alone.
    Nothing of the held-out rows leaks in, and predicting the mean scores a mean squared error of about 1.

    Args:
        batch_size: Rows per batch on each device.
    """

    num_features = 10
    num_outputs = 1

    def __init__(self, batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # built once: Lightning calls setup again for each stage
            return
        from sklearn.datasets import load_diabetes  # here, not at the top: keeps `--help` quick

        x, y = (torch.tensor(array) for array in load_diabetes(return_X_y=True, scaled=False))
        index = self.split(len(y))
        train_x, train_y = x[index["train"]], y[index["train"]]
        x = (x - train_x.mean(dim=0)) / train_x.std(dim=0)
        y = (y - train_y.mean()) / train_y.std()
        for name, rows in index.items():
            self.splits[name] = TensorDataset(x[rows].float(), y[rows].float())
