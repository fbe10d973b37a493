"""Classification: class logits, cross-entropy, accuracy and macro-F1, a confusion matrix per epoch."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from {{ cookiecutter.package_name }}.engine.predict import plain_columns
from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.dashboards import ConfusionMatrixImage, MisclassifiedExamples


class Classification(Task):
    """``num_classes`` logits per sample, trained with cross-entropy. ``class_names`` (from the data) are
    kept in checkpoints, so that predictions name the classes the model was trained on."""

    output_name = "logits"

    def __init__(self, *, num_classes: int, class_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        super().__init__(**kwargs)

    def setup(self, stage: str) -> None:
        """Stops where the data's classes are not the model's: a class folder added or renamed since
        training would shift every class name silently (resuming is refused earlier, by the CLI)."""
        data = self.trainer.datamodule
        names = getattr(data, "class_names", None)
        if names is not None and self.class_names is not None and list(names) != self.class_names:
            added = ", ".join(name for name in names if name not in self.class_names)
            removed = ", ".join(name for name in self.class_names if name not in names)
            changes = "; ".join(
                f"{what}: {found}" for what, found in (("added", added), ("removed", removed)) if found
            )
            raise MisconfigurationException(
                f"data: the checkpoint's classes are {self.class_names}; the data has {list(names)}"
                f" ({changes or 'the same names in another order'}): predictions would name the wrong"
                " classes; point the data at the classes the model was trained on, or train afresh"
            )
        count = getattr(data, "num_classes", None)
        if isinstance(count, int) and count != self.num_classes:
            raise MisconfigurationException(
                f"data: the checkpoint's model has {self.num_classes} classes; the data has {count}"
            )

    def configure_metrics(self, stage: str) -> MetricCollection:
        # validate_args=False: cross-entropy rejects labels out of range, and the checks would wait for
        # the device every step. Training tracks accuracy alone: it is updated every step.
        metrics: dict[str, Metric] = {
            "acc": MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)
        }
        if stage != "train":
            metrics["f1"] = MulticlassF1Score(self.num_classes, average="macro", validate_args=False)
        return MetricCollection(metrics)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.dim() != 2 or outputs.shape[1] != self.num_classes:
            raise ValueError(
                f"model.net: outputs of shape {tuple(outputs.shape)}; classification needs (batch,"
                f" num_classes={self.num_classes}) logits"
            )
        return F.cross_entropy(outputs, targets)

    def predictions(self, outputs: Tensor) -> dict[str, Tensor]:
        confidence, chosen = outputs.softmax(dim=-1).max(dim=-1)
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
        accuracy = (columns["prediction"] == columns["target"]).float().mean()
        return f"accuracy {accuracy:.4f} against the targets"

    def configure_callbacks(self) -> list[L.Callback]:
        return [ConfusionMatrixImage(), MisclassifiedExamples()]
