"""What every task shares: the network, its optimizer and schedule, and each stage's loss and metrics,
logged once per epoch. A task adds its loss, metrics and predictions."""

import math
import re
import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, MetricCollection

from {{ cookiecutter.package_name }}.engine.config_errors import names_a_setting
from {{ cookiecutter.package_name }}.tasks.schedules import build_scheduler, unset_horizon
from {{ cookiecutter.package_name }}.tasks.weight_init import WeightInit, initialize_weights

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")
SPOKEN_NAMES = {"lr": "learning rate", "eps": "epsilon", "betas": "beta"}  # as torch's errors word them


def named_argument(message: str, make: Any) -> str | None:
    """The argument an optimizer's error names: jsonargparse's partial ``make`` keeps them all as keywords."""
    names = getattr(make, "keywords", {})
    found = (name for name in names if re.search(rf"\b{SPOKEN_NAMES.get(name, name)}\b", message, re.I))
    return next(found, None)


class Task(L.LightningModule):
    """A network trained on ``(inputs, targets)`` batches, whatever the inputs are; the schedule is stepped
    each ``interval`` (a plateau schedule reads ``monitor``), ``weight_init`` starts the layers."""

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
        with warnings.catch_warnings():  # a network from a config is saved as its config entry
            warnings.filterwarnings("ignore", message=r"Attribute 'net' is an instance of `nn.Module`")
            self.save_hyperparameters()
        for name in ("net", "optimizer", "scheduler"):  # objects built in Python, not from a config
            if not isinstance(self.hparams.get(name), dict | None):
                del self.hparams[name]
        initialize_weights(net, weight_init)  # a checkpoint's weights replace these
        self.net, self.make_optimizer, self.make_scheduler = net, optimizer, scheduler
        self.interval, self.monitor = interval, monitor
        self.check_optimization()
        if compile:
            self.net.compile()
        # Keyed `train_`, ...: `train` is taken by nn.Module.train.
        self.metrics = nn.ModuleDict(
            {f"{stage}_": self.configure_metrics(stage).clone(prefix=f"{stage}/") for stage in STAGES}
        )
        # No NaN check of the loss: it would wait for the device every step (the non-finite guard watches).
        self.losses = nn.ModuleDict({f"{stage}_": MeanMetric(nan_strategy="disable") for stage in STAGES})

    def check_optimization(self) -> None:
        """Builds the optimizer and schedule aside, so that a value they reject stops before any work."""
        try:
            optimizer = self.make_optimizer(self.net.parameters())
        except (ValueError, TypeError) as error:
            name = named_argument(str(error), self.make_optimizer)
            raise ValueError(f"model.optimizer{'.init_args.' + name if name else ''}: {error}") from error
        try:
            scheduler = build_scheduler(self.make_scheduler, optimizer, 100) if self.make_scheduler else None
        except (ValueError, TypeError) as error:
            raise ValueError(f"model.scheduler: {error}") from error
        if isinstance(scheduler, ReduceLROnPlateau) and self.interval == "step":
            raise ValueError("model.interval: ReduceLROnPlateau steps on the monitored metric: set epoch")
        # The rates the run starts from: its schedule's (OneCycleLR's own max_lr), else the optimizer's.
        rates = getattr(scheduler, "base_lrs", None) or [group["lr"] for group in optimizer.param_groups]
        if all(rate == 0 for rate in rates):
            rank_zero_warn(
                "model.optimizer.init_args.lr: 0 leaves the weights as they were initialised, so the run"
                " trains nothing"
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
        # In the network's precision (64-true), also the example inputs of the model summary and graph.
        if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if torch.jit.is_tracing():  # TensorBoard's graph traces the plain network, compiled or not
            return self.net.forward(x)
        return self.net(x)

    def shared_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        x, targets = batch
        outputs = self(x)
        try:
            loss = self.loss(outputs, targets)
        except ValueError as error:  # outputs that do not fit the task: the network's config, not a bug
            if not names_a_setting(error):
                raise
            raise MisconfigurationException(str(error)) from error
        self.metrics[f"{stage}_"].update(outputs.detach(), targets)
        # Per sample, so that the epoch's mean weighs samples: MeanMetric ignores a `weight` with
        # nan_strategy="disable" (torchmetrics issue #3434).
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
            every = self.trainer.log_every_n_steps
        except RuntimeError:  # a step called without a Trainer (a unit test)
            return False
        return bool(self.trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

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
        """Computes (a collective) in a hook every process calls, so the values logged are the same
        everywhere and need no ``sync_dist``, whose all-reduce would start wherever first read."""
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        values = {loss_name: self.losses[f"{stage}_"].compute(), **self.metrics[f"{stage}_"].compute()}
        self.log_dict(values, prog_bar=stage != "train")
        self.metrics[f"{stage}_"].reset()
        self.losses[f"{stage}_"].reset()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | Optimizer:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        trainer, keyword = self.trainer, unset_horizon(self.make_scheduler)
        horizon = trainer.estimated_stepping_batches if self.interval == "step" else trainer.max_epochs
        if keyword is not None and horizon in (math.inf, -1):  # Lightning's "no end": max_epochs -1
            also = " (or trainer.max_steps)" if self.interval == "step" else ""
            raise MisconfigurationException(
                f"trainer.max_epochs: {trainer.max_epochs} sets no end to the run, and the schedule takes"
                f" its {keyword} from the run's length: set a finite trainer.max_epochs{also},"
                f" model.scheduler.init_args.{keyword}, or --model.scheduler null for a constant rate"
            )
        scheduler = build_scheduler(self.make_scheduler, optimizer, int(horizon or -1) if keyword else 0)
        config = {"scheduler": scheduler, "interval": self.interval, "monitor": self.monitor}  # plateau: read
        return {"optimizer": optimizer, "lr_scheduler": config}  # type: ignore[typeddict-item]
