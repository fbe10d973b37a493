"""What every task shares: the network, its optimizer and schedule, weight initialisation, and the loss
and metrics of each stage logged once per epoch. A task adds its loss, metrics and predictions."""

import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, MetricCollection

from {{ cookiecutter.package_name }}.tasks.schedules import build_scheduler
from {{ cookiecutter.package_name }}.tasks.weight_init import WeightInit, initialize_weights

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")


class Task(L.LightningModule):
    """A network trained on ``(inputs, targets)`` batches; nothing here depends on what the inputs are.

    Args:
        net: Any ``nn.Module`` (``model.net.class_path``); sizes it takes by name come from the data.
        optimizer: Built with the network's parameters (``model.optimizer.class_path``).
        scheduler: Any learning-rate scheduler, built from the optimizer by keyword; null: constant.
        interval: Step the schedule after every optimizer ``step`` or every ``epoch``.
        monitor: The monitored metric, set once at the top of the config; a plateau schedule reads it.
        weight_init: How convolution and linear layers start (``default``: PyTorch's own).
        compile: ``torch.compile`` the network in place; checkpoints stay interchangeable.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        interval: Literal["step", "epoch"] = "step",
        monitor: str = "val/loss",
        weight_init: WeightInit = "default",
        compile: bool = False,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # the network is saved as its config entry, not as an object
            warnings.filterwarnings("ignore", message=r"Attribute 'net' is an instance of `nn.Module`")
            self.save_hyperparameters()
        for name in ("net", "optimizer", "scheduler"):  # objects built in Python, not from a config
            if not isinstance(self.hparams.get(name), dict | None):
                del self.hparams[name]
        initialize_weights(net, weight_init)  # when built; a checkpoint's weights replace these
        self.net, self.make_optimizer, self.make_scheduler = net, optimizer, scheduler
        self.interval, self.monitor = interval, monitor
        self.check_optimization()
        if compile:
            self.net.compile()
        # Keyed `train_`, ...: `train` is taken by nn.Module.train.
        self.metrics = nn.ModuleDict(
            {f"{stage}_": self.configure_metrics(stage).clone(prefix=f"{stage}/") for stage in STAGES}
        )
        # Each epoch's mean loss over all samples of all processes; no NaN check, which would wait
        # for the GPU every step (the non-finite guard watches the loss).
        self.losses = nn.ModuleDict({f"{stage}_": MeanMetric(nan_strategy="disable") for stage in STAGES})

    def check_optimization(self) -> None:
        """Builds the optimizer and schedule once, aside: a value they reject stops before any work."""
        try:
            optimizer = self.make_optimizer(self.net.parameters())
        except (ValueError, TypeError) as error:
            raise ValueError(f"model.optimizer: {error}") from error
        if self.make_scheduler is None:
            return
        try:
            scheduler = build_scheduler(self.make_scheduler, optimizer, horizon=100)
        except (ValueError, TypeError) as error:
            raise ValueError(f"model.scheduler: {str(error).removeprefix('model.scheduler: ')}") from error
        if isinstance(scheduler, ReduceLROnPlateau) and self.interval == "step":
            raise ValueError(
                "model.interval: ReduceLROnPlateau waits for the monitored metric; set it to epoch"
            )

    def configure_metrics(self, stage: str) -> MetricCollection:
        """The torchmetrics of ``stage`` (``train``, ``val``, ``test``), updated with (outputs, targets)."""
        raise NotImplementedError

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def predictions(self, outputs: Tensor) -> dict[str, Tensor]:
        """What ``predict_step`` returns for a batch of outputs, one value (or row) per sample."""
        return {"prediction": outputs}

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing():  # TensorBoard's graph traces the plain network, compiled or not
            return self.net.forward(x)
        return self.net(x)

    def shared_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        x, targets = batch
        outputs = self(x)
        loss = self.loss(outputs, targets)
        self.metrics[f"{stage}_"].update(outputs.detach(), targets)  # computed and logged once per epoch
        # Once per sample, so that the epoch's mean weighs samples, not batches: with
        # nan_strategy="disable", MeanMetric ignores a `weight` (torchmetrics issue #3434).
        self.losses[f"{stage}_"].update(loss.detach().expand(len(targets)))
        return loss, outputs

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.shared_step(batch, "train")[0]
        if self.writes_step_logs():
            self.log("train/loss_step", loss, prog_bar=True)  # this process's, for the bar and the curve
        return loss

    def writes_step_logs(self) -> bool:
        """Whether Lightning writes this step to the loggers: each ``self.log`` call costs ~0.6 ms."""
        try:
            trainer = self.trainer
        except RuntimeError:  # a step called without a Trainer (a unit test)
            return False
        every = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

    # The outputs reach the callbacks' ``on_*_batch_end``: the task's dashboards draw from them.
    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.shared_step(batch, "val")[1]

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.shared_step(batch, "test")[1]

    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> dict[str, Tensor]:
        """The task's predictions, and the targets where the batch has them (to score the file)."""
        x, *targets = batch if isinstance(batch, list | tuple) else (batch,)
        return self.predictions(self(x)) | ({"target": targets[0]} if targets else {})

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def log_epoch(self, stage: str) -> None:
        """Logs the epoch's loss and metrics over all processes, then starts them afresh.

        Every collective (torchmetrics' ``compute``) runs here, in a hook every process calls in
        the same order, and what is logged is then the same everywhere: so nothing is logged with
        ``sync_dist``, which would start an all-reduce wherever it is first read (the bar, on rank 0).
        """
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        values = {loss_name: self.losses[f"{stage}_"].compute(), **self.metrics[f"{stage}_"].compute()}
        self.log_dict(values, prog_bar=stage != "train")  # (console.py quiets Lightning's sync_dist advice)
        self.metrics[f"{stage}_"].reset()
        self.losses[f"{stage}_"].reset()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | Optimizer:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        steps, epochs = int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs or -1
        scheduler = build_scheduler(
            self.make_scheduler, optimizer, steps if self.interval == "step" else epochs
        )
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.interval}
        if isinstance(scheduler, ReduceLROnPlateau):
            config["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}  # type: ignore[typeddict-item]
