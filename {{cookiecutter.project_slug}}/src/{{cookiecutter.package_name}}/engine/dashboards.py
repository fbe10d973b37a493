"""What TensorBoard shows beyond the logged metrics: speed, a confusion matrix, the test's mistakes.

The images (drawn by ``drawing.py``) come from the logits that ``validation_step`` and ``test_step``
return, for batches ``(inputs, targets)``. Without a TensorBoard logger the image callbacks do
nothing at all; training steps never do any work for them.
"""

import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import loggers
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.data import extract_batch_size
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.engine.drawing import (
    render_confusion_matrix,
    render_grid,
)


class TensorBoardLogger(loggers.TensorBoardLogger):
    """Lightning's TensorBoard logger with the writer's two options spelled out, and hyperparameters
    without the CLI's own keys.

    Lightning's passes ``**kwargs`` on to ``SummaryWriter``; the CLI would then read both sources
    to find the keys it accepts, at every start (measured: 0.15 s of 0.4 s of ``--help``).
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | Path | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
    ) -> None:
        super().__init__(
            save_dir, name, version, log_graph, default_hp_metric, prefix, sub_dir,
            max_queue=max_queue, flush_secs=flush_secs,
        )  # fmt: skip

    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        """Without the keys LightningCLI adds for itself (``_instantiator``, ``_class_path``): they are
        not choices of the run, and would show in hparams.yaml and the HParams tab as if they were."""
        given = vars(params) if isinstance(params, Namespace) else params
        choices = {name: value for name, value in given.items() if not name.startswith("_")}
        super().log_hyperparams(choices, metrics=metrics, step=step)


def tensorboard_logger(trainer: L.Trainer) -> loggers.TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one: with other loggers, or none, images are skipped."""
    return next((lg for lg in trainer.loggers if isinstance(lg, loggers.TensorBoardLogger)), None)


def is_image_batch(inputs: object) -> bool:
    """Whether a batch holds images, (N, C, H, W) floats with 1 or 3 channels: what can be drawn."""
    return (
        isinstance(inputs, Tensor)
        and inputs.dim() == 4
        and inputs.is_floating_point()
        and inputs.shape[1] in (1, 3)
    )


def class_namer(trainer: L.Trainer) -> Callable[[int], str]:
    """The DataModule's name for a class number (its ``class_names``), or the number itself."""
    names = getattr(trainer.datamodule, "class_names", None)
    return lambda number: str(names[number]) if names is not None else str(number)


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning logs the epoch's metrics at, so that the images line up with the scalars.

    (The count of optimizer steps, ``global_step``, is one ahead at validation; Lightning's own
    ``LearningRateMonitor`` reads the same counter.)
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def wait_for(device: torch.device) -> None:
    """Lets queued GPU work finish, so that a clock reading includes it (once per epoch, not per step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(Callback):
    """Logs ``train/epoch_time_s`` and ``train/samples_per_s`` after every training epoch.

    The first is the wall time of the whole epoch, validation included: what each epoch costs. The
    second counts the samples of the batches actually trained on, over all processes, per second
    of training alone: the figure to compare across batch sizes, workers and hardware. Per step it
    only adds up batch sizes; the processes exchange their figures once per epoch. (Lightning's
    ``ThroughputMonitor`` waits for the GPU after every batch, which would slow training down.)
    """

    def __init__(self) -> None:
        self.start = self.validation_start = time.perf_counter()
        self.validation_s = 0.0
        self.samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.samples, self.validation_s = 0, 0.0
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.samples += extract_batch_size(batch)  # shapes only: no wait for the device

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wait_for(pl_module.device)
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation_s += time.perf_counter() - self.validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wait_for(pl_module.device)
        epoch_s = time.perf_counter() - self.start
        mine = torch.tensor([self.samples, epoch_s - self.validation_s, epoch_s], device=pl_module.device)
        everyone = trainer.strategy.all_gather(mine).view(-1, 3).cpu()  # (processes, 3)
        samples, train_s, epoch_s = everyone[:, 0].sum().item(), *everyone[:, 1:].amax(dim=0).tolist()
        pl_module.log("train/epoch_time_s", epoch_s, batch_size=1)
        pl_module.log("train/samples_per_s", samples / max(train_s, 1e-9), batch_size=1)


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
        num_classes = getattr(trainer.datamodule, "num_classes", None) or pl_module.hparams.get("num_classes")
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
            name = class_namer(trainer)
            legend = (
                "Rows: true class; columns: predicted class; numbers: how many validation samples."
                " Colour: share of the row, from dark purple (0) to yellow (1): the diagonal is each"
                " class's recall, bright cells off it are the classes the model mixes up.\n\nClasses: "
                + ", ".join(f"{number} = {name(number)}" for number in range(len(matrix)))
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
            name = class_namer(trainer)
            lines += ["| # | true | predicted | confidence |", "|---|---|---|---|"]
            rows = zip(targets.tolist(), predictions.tolist(), confidence.tolist(), strict=True)
            lines += [
                f"| {k} | {name(t)} | {name(p)} | {c:.2f} |" for k, (t, p, c) in enumerate(rows, start=1)
            ]
        if len(targets) and images.dim() == 4:  # image inputs: the grid, row by row as in the table
            grid = render_grid(images, targets, predictions)
            logger.experiment.add_image(self.tag, grid, global_step=logging_step(trainer))
        logger.experiment.add_text(self.tag, "\n".join(lines), global_step=logging_step(trainer))
        self.kept, self.wrong = [], None
