"""The regression example: scikit-learn's diabetes data, which ships inside the package (no download).

442 patients, 10 measurements each (age, sex, body-mass index, blood pressure and six blood
serum values) and one target: how far the disease progressed a year later.
"""

import torch
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices


class DiabetesDataModule(SeededDataModule):
    """The 442 rows split into train, val and test; features and target standardised.

    Means and deviations come from the training split alone, so that nothing of the held-out
    rows leaks into training. With a standardised target, predicting the mean scores a mean
    squared error of about 1: the loss reads as the share of the variance left unexplained.

    Args:
        batch_size: Rows per batch on each device.
        num_workers: DataLoader worker processes; 0 suits a table that sits in memory.
        persistent_workers: Keep workers alive between epochs (see ``SeededDataModule``).
        val_fraction: Share of the rows held out for validation.
        test_fraction: Share of the rows held out for the final test.
        split_seed: Seed of the split alone, so that every run is evaluated on the same rows.
    """

    num_features = 10
    num_outputs = 1

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        persistent_workers: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, persistent_workers)
        check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_diabetes  # here, not at the top: keeps `--help` quick

        features, target = load_diabetes(return_X_y=True, scaled=False)
        x, y = torch.tensor(features), torch.tensor(target)
        hp = self.hparams
        index = split_indices(len(y), hp.val_fraction, hp.test_fraction, hp.split_seed)
        train_x, train_y = x[index["train"]], y[index["train"]]
        x = (x - train_x.mean(dim=0)) / train_x.std(dim=0)
        y = (y - train_y.mean()) / train_y.std()
        for name, rows in index.items():
            self.splits[name] = TensorDataset(x[rows].float(), y[rows].float())
