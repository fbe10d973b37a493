"""Classification: class logits, cross-entropy, accuracy and macro-F1, a confusion matrix per epoch."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from {{ cookiecutter.package_name }}.engine.predict import plain_columns
from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.dashboards import ConfusionMatrixImage, MisclassifiedExamples


class Classification(Task):
    """A network that maps inputs to ``num_classes`` logits, trained with cross-entropy.

    Args:
        num_classes: Number of classes; from the data (its ``num_classes``).
        class_names: Names of the classes, from the data where it has them; kept in checkpoints,
            so that predictions name the classes the model was trained on.
        **kwargs: The ``Task`` arguments: net, optimizer, scheduler, interval, weight_init, ...
    """

    output_name = "logits"

    def __init__(self, *, num_classes: int, class_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        super().__init__(**kwargs)

    def configure_metrics(self, stage: str) -> MetricCollection:
        # validate_args=False: cross-entropy already rejects labels out of range, and the checks
        # would wait for the GPU every step. Training tracks accuracy alone: it runs every step.
        accuracy = MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)
        if stage == "train":
            return MetricCollection({"acc": accuracy})
        f1 = MulticlassF1Score(self.num_classes, average="macro", validate_args=False)
        return MetricCollection({"acc": accuracy, "f1": f1})

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.dim() != 2 or outputs.shape[1] != self.num_classes:
            raise ValueError(
                f"model.net: outputs of shape {tuple(outputs.shape)}; classification needs (batch,"
                f" num_classes={self.num_classes}) logits"
            )
        return F.cross_entropy(outputs, targets)

    def predictions(self, outputs: Tensor) -> dict[str, Tensor]:
        probabilities = outputs.softmax(dim=-1)
        confidence, chosen = probabilities.max(dim=-1)
        return {"prediction": chosen, "probability": confidence}

    def prediction_columns(self, columns: dict[str, Tensor]) -> dict[str, list[Any]]:
        """The predictions file's columns, with classes by name where the data named them."""
        plain = plain_columns(columns)
        for name in ("prediction", "target"):
            if name in plain and self.class_names:
                plain[name] = [self.class_names[number] for number in plain[name]]
        return plain

    def score_predictions(self, columns: dict[str, Tensor]) -> str:
        if "target" not in columns:
            return ""
        return (
            f"accuracy {(columns['prediction'] == columns['target']).float().mean():.4f} against the targets"
        )

    def configure_callbacks(self) -> list[L.Callback]:
        return [ConfusionMatrixImage(), MisclassifiedExamples()]
