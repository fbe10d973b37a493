"""The LightningModule: loss, metrics, optimisation and logging around any classification network."""

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

Batch = tuple[Tensor, Tensor]
SchedulerCallable = Callable[[Optimizer, int], LRScheduler]
"""Builds the schedule from the optimizer and the run's total optimizer steps (see engine/schedules.py)."""

STAGES = ("train", "val", "test")

# Every value logged here is already the same on every process (see `_log_epoch_metrics`), so no
# `sync_dist` is needed, and Lightning's advice to add one would bring the hang back under DDP.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test)/")
# `load_from_checkpoint` rebuilds the network from its config; `__init__` below drops the object.
warnings.filterwarnings("ignore", message=r"Attribute 'net' is an instance of `nn.Module`")


class Classifier(L.LightningModule):
    """Trains a network that maps a batch of inputs to class logits, with cross-entropy.

    Nothing here depends on what the inputs are (images, table rows, token ids): the network
    takes them as the DataModule delivers them.

    Args:
        net: The network, any ``nn.Module`` (``model.net.class_path``); see ``models.py``.
        num_classes: Number of target classes; linked from the DataModule by the CLI.
        optimizer: Built with the network's parameters (``model.optimizer.class_path``), e.g.
            ``torch.optim.AdamW`` or ``functools.partial(torch.optim.SGD, lr=0.1)`` in Python.
        scheduler: Built with the optimizer and the run's total number of optimizer steps, and
            stepped after every one of them; ``null`` keeps the learning rate constant.
        compile: Compile the network with ``torch.compile``: the first steps are slower, later ones
            faster, mostly on GPUs. Checkpoints stay interchangeable with uncompiled runs.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerCallable,
        scheduler: SchedulerCallable | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Via the CLI, net, optimizer and scheduler are saved as their config entries, from which
        # `load_from_checkpoint` rebuilds the same module; objects built in Python are not saved.
        for name in ("net", "optimizer", "scheduler"):
            if not isinstance(self.hparams.get(name), dict | None):
                del self.hparams[name]
        self.net = net
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        if compile:
            self.net.compile()  # in place: parameter names, and so checkpoints, do not change
        # validate_args=False: cross-entropy already rejects labels out of range, and the metrics'
        # own checks would wait for the GPU at every step.
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)
        # Training tracks accuracy alone: it is updated every step, where each metric costs time.
        self.train_metrics = MetricCollection({"acc": accuracy.clone()}, prefix="train/")
        self.val_metrics = MetricCollection({"acc": accuracy, "f1": f1}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        # The epoch's mean loss over all samples of all processes ("disable": no NaN check, which
        # would wait for the GPU at every step; StopOnNonFiniteLoss watches the loss).
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in STAGES)

    def setup(self, stage: str) -> None:
        """Takes example inputs from the data, for the model summary, the graph and export."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.example_input_array is None and datamodule is not None:
            self.example_input_array = getattr(datamodule, "example_input_array", None)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing():  # TensorBoard's graph: trace the plain network, compiled or not
            return self.net.forward(x)
        return self.net(x)

    def _shared_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics, mean_loss = self._trackers(stage)
        metrics.update(logits, y)  # computed and logged once, at the end of the epoch
        # The batch's loss once per sample, so that the epoch's mean weighs samples, not batches:
        # with nan_strategy="disable", MeanMetric ignores a `weight` (torchmetrics issue #3434).
        mean_loss.update(loss.detach().expand(len(y)))
        return loss, logits

    def _log_epoch_metrics(self, stage: str) -> None:
        """Logs the epoch's loss and metrics over all processes, then starts them afresh.

        The rule that keeps several processes in step: every collective (here the torchmetrics'
        ``compute``, which gathers the processes' states) runs in a hook that every process
        calls in the same order, and whatever is logged is already the same on every process. So
        reading the logged metrics (the progress bar on rank 0 only, the loggers, checkpoints)
        never starts a collective that the other processes would not join. Hence no
        ``sync_dist=True`` anywhere: it defers an all-reduce to whoever reads the value first.
        """
        metrics, mean_loss = self._trackers(stage)
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        self.log_dict({loss_name: mean_loss.compute(), **metrics.compute()}, prog_bar=stage != "train")
        metrics.reset()
        mean_loss.reset()

    def _trackers(self, stage: str) -> tuple[MetricCollection, MeanMetric]:
        return getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")[0]
        if self._writes_step_logs():
            # This process's loss of this step, for the progress bar and the per-step curve.
            self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def _writes_step_logs(self) -> bool:
        """Whether Lightning writes this step's values to the loggers (every ``log_every_n_steps``).

        Only those steps reach a logger, and the progress bar redraws about once a second, while
        each ``self.log`` call costs about 0.6 ms of Lightning's bookkeeping: several percent of a
        small network's step (see benchmarks/README.md).
        """
        trainer = self._trainer  # None where a test calls the step without a Trainer
        if trainer is None:
            return False
        every = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

    # The logits reach the callbacks' ``on_*_batch_end`` as ``outputs``: the TensorBoard images
    # (engine/dashboards.py) are drawn from them without a second forward pass.
    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")[1]

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")[1]

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> dict[str, Tensor]:
        """Classes and their probabilities, and the labels where the batch has them (to score the
        predictions in the file that ``--predict_path`` writes)."""
        x, *labels = batch if isinstance(batch, list | tuple) else (batch,)
        probabilities = self(x).softmax(dim=-1)
        out = {"prediction": probabilities.argmax(dim=-1), "probability": probabilities}
        if labels:
            out["label"] = labels[0]
        return out

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | Optimizer:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler: Any = self.make_scheduler(optimizer, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps example inputs in the checkpoint: export traces and checks the network with them."""
        if isinstance(self.example_input_array, Tensor):
            checkpoint["example_input_array"] = self.example_input_array.detach().cpu()
