"""The LightningModule: loss, metrics, optimisation and logging around a plain network."""

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from {{ cookiecutter.package_name }}.models import SmallCNN

Batch = tuple[Tensor, Tensor]


class Classifier(L.LightningModule):
    """Image classifier trained with cross-entropy.

    Args:
        num_classes: Number of target classes; linked from the DataModule by the CLI.
        input_shape: Shape (C, H, W) of one input; linked from the DataModule by the CLI.
        width: Channels of the first conv block; the network scales with it.
        dropout: Dropout before the linear head.
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (AdamW) or L2 penalty (SGD).
        optimizer: ``adamw``, or ``sgd`` with Nesterov momentum 0.9.
        scheduler: ``onecycle`` (warm-up then annealing, per step), ``cosine`` (annealing to zero
            over ``max_epochs``, per epoch) or ``constant``.
        compile: Compile the network with ``torch.compile``: the first steps are slower, later ones
            faster, mostly on GPUs. Checkpoints stay interchangeable with uncompiled runs.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: int = 32,
        dropout: float = 0.1,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        scheduler: Literal["onecycle", "cosine", "constant"] = "onecycle",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SmallCNN(input_shape[0], num_classes, width=width, dropout=dropout)
        if compile:
            self.net.compile()  # in place: parameter names, and so checkpoints, do not change
        # Lets the model summary show tensor sizes and TensorBoard draw the graph.
        self.example_input_array = torch.zeros(1, *input_shape)
        # validate_args=False: cross-entropy already rejects labels out of range, and the metrics'
        # own checks would wait for the GPU at every step.
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)
        metrics = MetricCollection({"acc": accuracy, "f1": f1})
        # Training tracks accuracy alone: it is updated every step, where each metric costs time.
        self.train_metrics = MetricCollection({"acc": accuracy.clone()}, prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing():  # TensorBoard's graph: trace the plain network, compiled or not
            return self.net.forward(x)
        return self.net(x)

    def _shared_step(self, batch: Batch, metrics: MetricCollection, stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics.update(logits, y)  # computed and logged once, at the end of the epoch
        on_step = stage == "train"
        # sync_dist: under DDP the epoch loss is averaged over all processes, not rank 0's share.
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss, logits

    def _log_epoch_metrics(self, metrics: MetricCollection, stage: str) -> None:
        """Logs the epoch's metrics, then starts them afresh.

        Once per epoch rather than ``self.log_dict(metrics)`` in every step: each ``self.log`` call
        costs Lightning a fraction of a millisecond, a few percent of a small model's step. The
        torchmetrics synchronise themselves across processes in ``compute``.
        """
        self.log_dict(metrics.compute(), prog_bar=stage != "train")
        metrics.reset()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, self.train_metrics, "train")[0]

    # The logits reach the callbacks' ``on_*_batch_end`` as ``outputs``: the TensorBoard images
    # (dashboards.py) are drawn from them without a second forward pass.
    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, self.val_metrics, "val")[1]

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, self.test_metrics, "test")[1]

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics(self.train_metrics, "train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(self.test_metrics, "test")

    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> dict[str, Tensor]:
        """Classes and their probabilities, and the labels where the batch has them (to score the
        predictions in the file that ``--predict_path`` writes)."""
        x, *labels = batch if isinstance(batch, list | tuple) else (batch,)
        probabilities = self(x).softmax(dim=-1)
        out = {"prediction": probabilities.argmax(dim=-1), "probability": probabilities}
        if labels:
            out["label"] = labels[0]
        return out

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                self.parameters(), lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay
            )
        if hp.scheduler == "constant":
            return optimizer
        scheduler: Any
        if hp.scheduler == "onecycle":
            total_steps = self.trainer.estimated_stepping_batches
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=total_steps)
            interval = "step"
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)
            interval = "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
