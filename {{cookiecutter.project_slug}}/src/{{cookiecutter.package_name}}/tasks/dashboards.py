"""The tasks' own TensorBoard dashboards, drawn from the outputs ``validation_step`` and ``test_step``
return for ``(inputs, targets)`` batches; a task lists its own in ``configure_callbacks``. Without a
TensorBoard logger they do nothing; training steps never do any work for them."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.engine.dashboards import logging_step, tensorboard_logger
from {{ cookiecutter.package_name }}.engine.drawing import render_confusion_matrix, render_grid


def is_image_batch(inputs: object) -> bool:
    """Whether a batch holds images, (N, C, H, W) floats with 1 or 3 channels: what can be drawn."""
    return (
        isinstance(inputs, Tensor)
        and inputs.dim() == 4
        and inputs.is_floating_point()
        and inputs.shape[1] in (1, 3)
    )


def class_name(pl_module: L.LightningModule, number: int) -> str:
    """The task's name for a class number (its ``class_names``, from the data), or the number itself."""
    names = getattr(pl_module, "class_names", None)
    return str(names[number]) if names else str(number)


class ConfusionMatrixImage(Callback):
    """Draws the confusion matrix of every validation into the Images tab (``val/confusion_matrix``).

    Accuracy says how often the model is wrong; the matrix says which classes it mixes up, which
    is what to act on (more examples of a class, a labelling mistake). It accumulates over the
    whole validation set on the model's device (one ``bincount`` per batch) and is summed over
    processes; the sanity check before training is skipped.
    """

    def __init__(self, tag: str = "val/confusion_matrix") -> None:
        self.tag = tag
        self.matrix: MulticlassConfusionMatrix | None = None
        self.explained = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes and tensorboard_logger(trainer) is not None:
            self.matrix = MulticlassConfusionMatrix(num_classes, validate_args=False)  # checks would sync

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is not None:
            self.matrix = self.matrix.to(pl_module.device)
            self.matrix.reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.matrix is not None and not trainer.sanity_checking and isinstance(outputs, Tensor):
            self.matrix.update(outputs.detach(), batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if self.matrix is None or logger is None or trainer.sanity_checking or not self.matrix.update_called:
            return
        matrix = self.matrix.compute()  # on every process: they sum their shares
        if not trainer.is_global_zero:
            return
        step = logging_step(trainer)
        logger.experiment.add_image(self.tag, render_confusion_matrix(matrix), global_step=step)
        if not self.explained:
            legend = (
                "Rows: true class; columns: predicted class; numbers: how many validation samples."
                " Colour: share of the row, from dark purple (0) to yellow (1): the diagonal is each"
                " class's recall, bright cells off it are the classes the model mixes up.\n\nClasses: "
                + ", ".join(f"{number} = {class_name(pl_module, number)}" for number in range(len(matrix)))
            )
            logger.experiment.add_text(self.tag, legend, global_step=step)
            self.explained = True


class MisclassifiedExamples(Callback):
    """After the test, lists up to ``max_images`` misclassified test samples (``test/misclassified``).

    A text entry lists them with their true and predicted classes and the model's confidence;
    for image inputs a grid shows the images too, labelled with the true class (green) and the
    prediction (red). Looking at the mistakes finds what
    metrics cannot: mislabelled data, ambiguous inputs, a preprocessing bug. Kept on the device,
    never more than ``max_images`` plus a batch; under DDP the images are the first process's.
    """

    def __init__(self, max_images: int = 36, tag: str = "test/misclassified") -> None:
        self.max_images = max_images
        self.tag = tag
        self.active = False
        self.kept: list[Tensor] = []
        self.wrong: Tensor | None = None  # how many were misclassified, on the device
        self.seen = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = tensorboard_logger(trainer) is not None
        self.kept, self.wrong, self.seen = [], None, 0

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active or not isinstance(outputs, Tensor):
            return
        inputs, targets = batch[0], batch[1]
        images = inputs if is_image_batch(inputs) else torch.empty(len(inputs), 0, device=inputs.device)
        confidence, predictions = outputs.detach().softmax(dim=-1).max(dim=-1)
        wrong = predictions != targets
        self.wrong = wrong.sum() if self.wrong is None else self.wrong + wrong.sum()  # no wait for the device
        self.seen += len(wrong)
        new = [images.detach(), targets, predictions, confidence, wrong]
        both = [torch.cat(pair) for pair in zip(self.kept, new, strict=True)] if self.kept else new
        order = torch.argsort((~both[-1]).to(torch.uint8), stable=True)[: self.max_images]  # mistakes first
        self.kept = [tensor[order] for tensor in both]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or self.wrong is None:
            return
        counts = torch.stack([self.wrong, torch.tensor(self.seen, device=self.wrong.device)])
        wrong_count, total = trainer.strategy.reduce(counts, reduce_op="sum").tolist()  # over processes
        if not trainer.is_global_zero:
            return
        *kept, wrong = (tensor.cpu() for tensor in self.kept)
        images, targets, predictions, confidence = (tensor[wrong] for tensor in kept)
        shown = f"the first {len(targets)}:" if len(targets) else "none to show."
        lines = [f"{int(wrong_count)} of {int(total)} test samples misclassified; {shown}", ""]
        if len(targets):
            lines += ["| # | true | predicted | confidence |", "|---|---|---|---|"]
            rows = zip(targets.tolist(), predictions.tolist(), confidence.tolist(), strict=True)
            for k, (true, predicted, score) in enumerate(rows, start=1):
                named = class_name(pl_module, true), class_name(pl_module, predicted)
                lines.append(f"| {k} | {named[0]} | {named[1]} | {score:.2f} |")
        if len(targets) and images.dim() == 4:  # image inputs: the grid, row by row as in the table
            grid = render_grid(images, targets, predictions)
            logger.experiment.add_image(self.tag, grid, global_step=logging_step(trainer))
        logger.experiment.add_text(self.tag, "\n".join(lines), global_step=logging_step(trainer))
        self.kept, self.wrong = [], None


class PredictedAgainstTrue(Callback):
    """Draws each validation's predictions against the true values (``val/predicted_vs_true``).

    The regression counterpart of a confusion matrix: points on the diagonal are right, a slope
    below it is a model that shrinks towards the mean, a cloud is one that has learnt little.
    Keeps at most ``max_points`` pairs, on the device, and draws rank 0's share.
    """

    def __init__(self, max_points: int = 2000, tag: str = "val/predicted_vs_true") -> None:
        self.max_points = max_points
        self.tag = tag
        self.pairs: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pairs = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        kept = sum(len(pair) for pair in self.pairs)
        if trainer.sanity_checking or not isinstance(outputs, Tensor) or kept >= self.max_points:
            return
        pair = torch.stack([outputs.detach().reshape(-1).float(), batch[1].reshape(-1).float()], dim=1)
        self.pairs.append(pair[: self.max_points - kept])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not self.pairs or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from matplotlib.figure import Figure  # here: keeps start-up quick

        predicted, true = torch.cat(self.pairs).cpu().unbind(dim=1)
        figure = Figure(figsize=(4, 4), layout="constrained")
        axes = figure.subplots()
        axes.scatter(true, predicted, s=6, alpha=0.5)
        low, high = min(true.min(), predicted.min()).item(), max(true.max(), predicted.max()).item()
        axes.plot([low, high], [low, high], color="grey", linewidth=1)
        axes.set(xlabel="true", ylabel="predicted", title=f"epoch {trainer.current_epoch}")
        logger.experiment.add_figure(self.tag, figure, global_step=logging_step(trainer))
        self.pairs = []
