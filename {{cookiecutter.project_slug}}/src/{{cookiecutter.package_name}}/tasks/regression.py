"""Regression: real-valued outputs, mean squared error, MAE, RMSE and R2, predicted against true values."""

from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.dashboards import PredictedAgainstTrue


class Regression(Task):
    """A network that maps inputs to ``num_outputs`` real values, trained with the mean squared error.

    Targets are best standardised by the data (mean 0, deviation 1), as the example's are: the
    loss of a constant prediction is then 1, and a learning rate suits any unit.

    Args:
        num_outputs: Values per sample; from the data (its ``num_outputs``). With 1, outputs and
            targets are one number per sample.
        **kwargs: The ``Task`` arguments: net, optimizer, scheduler, interval, weight_init, ...
    """

    output_name = "prediction"

    def __init__(self, *, num_outputs: int = 1, **kwargs: Any) -> None:
        self.num_outputs = num_outputs
        super().__init__(**kwargs)

    def configure_metrics(self, stage: str) -> MetricCollection:
        # One number per metric, whatever num_outputs: the errors over all values of all outputs (as
        # the predictions file is scored), R2 averaged over the outputs. Per-output tensors cannot be
        # logged, and would stop a run with several outputs at its first validation.
        metrics = {"mae": MeanAbsoluteError()}
        if stage != "train":  # training tracks one metric: it is updated every step
            metrics["rmse"] = MeanSquaredError(squared=False)
            metrics["r2"] = R2Score(multioutput="uniform_average")
        return MetricCollection(metrics)  # type: ignore[arg-type]

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
