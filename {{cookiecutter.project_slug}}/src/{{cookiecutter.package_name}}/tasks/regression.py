"""Regression: real-valued outputs, mean squared error, MAE, RMSE and R2, predicted against true values."""

from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score

from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.dashboards import PredictedAgainstTrue


class Regression(Task):
    """``num_outputs`` real values per sample (with 1: one number, no trailing 1), trained with the mean
    squared error; targets best standardised by the data, so that a learning rate suits any unit."""

    output_name = "prediction"

    def __init__(self, *, num_outputs: int = 1, **kwargs: Any) -> None:
        self.num_outputs = num_outputs
        super().__init__(**kwargs)

    def configure_metrics(self, stage: str) -> MetricCollection:
        # One number each, over all outputs (a tensor per output cannot be logged); training: MAE alone.
        metrics: dict[str, Metric] = {"mae": MeanAbsoluteError()}
        if stage != "train":
            metrics |= {"rmse": MeanSquaredError(squared=False), "r2": R2Score(multioutput="uniform_average")}
        return MetricCollection(metrics)

    def forward(self, x: Tensor) -> Tensor:
        outputs = super().forward(x)
        return outputs.squeeze(-1) if self.num_outputs == 1 and outputs.dim() == 2 else outputs

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.shape != targets.shape:
            raise ValueError(
                f"model.net: outputs of shape {tuple(outputs.shape)} do not fit targets of shape"
                f" {tuple(targets.shape)} (num_outputs={self.num_outputs})"
            )
        return F.mse_loss(outputs, targets.to(outputs.dtype))

    def score_predictions(self, columns: dict[str, Tensor]) -> str:
        if "target" not in columns:
            return ""
        error = columns["prediction"].float() - columns["target"].float()
        return f"MAE {error.abs().mean():.4f}, RMSE {error.pow(2).mean().sqrt():.4f} against the targets"

    def configure_callbacks(self) -> list[L.Callback]:
        return [PredictedAgainstTrue()]
