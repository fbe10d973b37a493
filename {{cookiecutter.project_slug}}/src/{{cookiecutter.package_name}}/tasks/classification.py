"""Classification: class logits, cross-entropy, accuracy and macro-F1, a confusion matrix per epoch."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
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

    # Checked when each stage starts, once the data is set up and any checkpoint restored: a class
    # folder added or renamed since training would otherwise shift every class name silently.
    # (Resuming training is refused earlier, by the CLI's comparison of the checkpoint's settings.)
    def on_validation_start(self) -> None:
        self.check_data_classes()

    def on_test_start(self) -> None:
        self.check_data_classes()

    def on_predict_start(self) -> None:
        self.check_data_classes()

    def check_data_classes(self) -> None:
        """Stops, naming the difference, where the data's classes are not those this model learned."""
        datamodule = self.trainer.datamodule
        names = getattr(datamodule, "class_names", None)
        if names is not None and self.class_names is not None and list(names) != self.class_names:
            raise MisconfigurationException(class_difference(self.class_names, list(names)))
        count = getattr(datamodule, "num_classes", None)
        if isinstance(count, int) and count != self.num_classes:
            raise MisconfigurationException(
                f"data: the checkpoint's model has {self.num_classes} classes; the data has {count}"
            )

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


def class_difference(model: list[str], data: list[str]) -> str:
    """One line: the classes a model learned, the data's, and what was added, removed or reordered."""
    added = [name for name in data if name not in model]
    removed = [name for name in model if name not in data]
    changes = [
        f"{what}: {', '.join(names)}" for what, names in (("added", added), ("removed", removed)) if names
    ]
    return (
        f"data: the checkpoint's classes are {model}; the data has {data}"
        f" ({'; '.join(changes) or 'the same names in another order'}): predictions would name the wrong"
        " classes; point the data at the classes the model was trained on, or train afresh"
    )
