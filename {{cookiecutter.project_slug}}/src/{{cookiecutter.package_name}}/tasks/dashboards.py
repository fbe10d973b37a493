"""The tasks' TensorBoard dashboards, drawn from what ``validation_step`` and ``test_step`` return; none
without a TensorBoard logger. Image tensors and Markdown tables: 2-3 ms an epoch, a Matplotlib figure 75."""

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.engine.dashboards import logging_step, tensorboard_logger


def enlarge(images: Tensor, pixels: int) -> Tensor:
    """Images (..., H, W) to about ``pixels`` a side by repeating pixels: crisp, and quick to encode."""
    scale = max(1, pixels // max(images.shape[-2:]))
    return images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def colour_image(values: Tensor, pixels: int = 256) -> Tensor:
    """Values (H, W) in [0, 1] as viridis colours, dark purple to yellow: a uint8 image (3, H', W')."""
    from matplotlib import colormaps  # here: keeps start-up quick

    rgb = colormaps["viridis"](values.detach().float().clamp(0, 1).cpu().numpy(), bytes=True)[..., :3]
    return enlarge(torch.from_numpy(rgb).permute(2, 0, 1), pixels)


def markdown_table(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    """A table for TensorBoard's Text tab, which renders Markdown."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def class_name(pl_module: L.LightningModule, number: int) -> str:
    """The task's name for a class number (its ``class_names``, from the data), or the number itself."""
    names = getattr(pl_module, "class_names", None)
    return str(names[number]) if names else str(number)


class ConfusionMatrixImage(Callback):
    """Which classes the model mixes up, after every validation: what to act on, where accuracy says
    only how often. Counted on the device, summed over processes."""

    def __init__(self, tag: str = "val/confusion_matrix") -> None:
        self.tag = tag
        self.matrix: MulticlassConfusionMatrix | None = None

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: int
    ) -> None:
        if tensorboard_logger(trainer) is None or trainer.sanity_checking or not isinstance(outputs, Tensor):
            return
        if self.matrix is None:  # validate_args=False: its checks would wait for the device
            self.matrix = MulticlassConfusionMatrix(outputs.shape[-1], validate_args=False).to(outputs.device)
        self.matrix.update(outputs.detach(), batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if self.matrix is None or logger is None:
            return
        counts, self.matrix = self.matrix.compute().cpu(), None  # on every process: they sum their shares
        if not trainer.is_global_zero:
            return
        shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)  # rare classes show as clearly
        logger.experiment.add_image(self.tag, colour_image(shares), logging_step(trainer))
        text = (
            "Image: rows are true classes, columns predictions; colour is the share of the row, dark purple"
            " (0) to yellow (1): the diagonal is each class's recall, bright cells off it the mix-ups."
        )
        if len(counts) <= 30:  # a table any wider is unreadable
            names = [class_name(pl_module, number) for number in range(len(counts))]
            rows = ([name, *row] for name, row in zip(names, counts.tolist(), strict=True))
            table = markdown_table(["true ↓ predicted →", *names], rows)
            text += "\n\nCounts (rows true, columns predicted):\n\n" + table
        logger.experiment.add_text(self.tag, text, logging_step(trainer))


class MisclassifiedExamples(Callback):
    """After the test, up to ``max_images`` misclassified samples, their classes in a table and image
    inputs drawn: mislabelled data, ambiguous inputs, a preprocessing bug. Rank 0's, kept on the device."""

    def __init__(self, max_images: int = 36, tag: str = "test/misclassified") -> None:
        self.max_images, self.tag = max_images, tag
        self.kept: list[Tensor] = []  # images, targets, predictions, confidence, wrong: mistakes first
        self.wrong: Tensor | None = None  # how many were misclassified, on the device
        self.seen = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.kept, self.wrong, self.seen = [], None, 0

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: int
    ) -> None:
        if tensorboard_logger(trainer) is None or not isinstance(outputs, Tensor):
            return
        inputs, targets = batch[0], batch[1]
        is_image = isinstance(inputs, Tensor) and inputs.dim() == 4 and inputs.shape[1] in (1, 3)
        images = inputs.detach().float() if is_image else torch.empty(len(targets), 0, device=targets.device)
        confidence, predictions = outputs.detach().softmax(dim=-1).max(dim=-1)
        wrong = predictions != targets
        self.wrong = wrong.sum() if self.wrong is None else self.wrong + wrong.sum()  # no wait for the device
        self.seen += len(wrong)
        new = [images, targets, predictions, confidence, wrong]
        both = [torch.cat(pair) for pair in zip(self.kept, new, strict=True)] if self.kept else new
        order = torch.argsort((~both[-1]).to(torch.uint8), stable=True)[: self.max_images]
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
        text, step = f"{int(wrong_count)} of {int(total)} test samples misclassified; ", logging_step(trainer)
        if not len(targets):
            logger.experiment.add_text(self.tag, text + "none to show.", step)
            return
        rows = zip(targets.tolist(), predictions.tolist(), confidence.tolist(), strict=True)
        table = [
            [k, class_name(pl_module, true), class_name(pl_module, predicted), f"{score:.2f}"]
            for k, (true, predicted, score) in enumerate(rows, start=1)
        ]
        header = ["#", "true", "predicted", "confidence"]
        text += f"the first {len(targets)} (images 8 a row):\n\n" + markdown_table(header, table)
        logger.experiment.add_text(self.tag, text, step)
        if images.dim() == 4:  # each stretched to its own range, enlarged, framed; 8 a row
            low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
            images = enlarge(((images - low) / (high - low).clamp(min=1e-8) * 255).to(torch.uint8), 64)
            framed = torch.nn.functional.pad(images, (2, 2, 2, 2), value=80)
            logger.experiment.add_images(self.tag, framed, step)


class PredictedAgainstTrue(Callback):
    """How many samples fall at each (true, predicted) value, after every validation: the regression
    counterpart of a confusion matrix. Keeps ``max_points``, rank 0's."""

    def __init__(self, max_points: int = 2000, tag: str = "val/predicted_vs_true", bins: int = 64) -> None:
        self.max_points, self.tag, self.bins = max_points, tag, bins
        self.pairs: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pairs = []

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: int
    ) -> None:
        kept = sum(len(pair) for pair in self.pairs)
        if trainer.sanity_checking or not isinstance(outputs, Tensor) or kept >= self.max_points:
            return
        pair = torch.stack([outputs.detach().reshape(-1).float(), batch[1].reshape(-1).float()], dim=1)
        self.pairs.append(pair[: self.max_points - kept])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not self.pairs or not trainer.is_global_zero:
            return
        pairs = torch.cat(self.pairs).cpu()
        finite = pairs.isfinite().all(dim=1)  # a diverging model's NaN or inf has no place in the picture
        skipped, pairs = int((~finite).sum()), pairs[finite]
        if not len(pairs):
            return
        low, high = pairs.min().item(), pairs.max().item()
        counts = torch.histogramdd(pairs, bins=self.bins, range=[low, high + (high == low)] * 2).hist
        image = colour_image((counts.log1p() / counts.log1p().max()).flip(0))  # predicted grows upwards
        image[:, torch.eye(image.shape[-1], dtype=torch.bool).flip(0)] = 255  # white: predicted = true
        text = f"True value along x, predicted along y, both from {low:.4g} (bottom left) to {high:.4g};"
        text += f" colour: how many of {len(pairs)} samples (log scale); white line: predicted = true."
        text += f" {skipped} non-finite predictions left out." if skipped else ""
        logger.experiment.add_image(self.tag, image, logging_step(trainer))
        logger.experiment.add_text(self.tag, text, logging_step(trainer))
