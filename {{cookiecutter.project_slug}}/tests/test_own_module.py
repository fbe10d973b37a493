"""A team's own LightningModule, written for Lightning alone and knowing nothing of this project, at
``--model.class_path``: it trains on the default data, its best checkpoint is tested, it resumes
exactly, predicts to a CSV file, exports, and runs under DDP; and a plain LightningDataModule is
named once, with the guarantees that only the project's DataModule base gives.
"""

import csv
import importlib.util
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from {{ cookiecutter.package_name }}.engine import export
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.sizes import load_module

from conftest import INPUT_SHAPE, SPLIT_SIZES, TINY_RUN, run_train_py, train

MODULE = "test_own_module.Module"
"""Its class path: this file is on the path of train.py's processes (run_train_py) and of pytest."""
OWN = ("--model.class_path", MODULE)
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))


class Module(L.LightningModule):
    """A small network for any data of (input, target) batches, with its own optimizer, schedule,
    logged metrics and predictions; no ``net`` argument, no ``save_hyperparameters()``.

    How it chooses its task: it takes ``num_classes`` and ``num_outputs`` by name, and the CLI passes
    those that the data declares. With ``num_classes`` it predicts class logits trained with
    cross-entropy; otherwise ``num_outputs`` values (1 if the data declares neither) trained with the
    mean squared error. The input width is inferred from the first batch (``nn.LazyLinear`` over the
    flattened input), so that it fits images, rows or signals alike.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        num_outputs: int | None = None,
        hidden: int = 64,
        lr: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_outputs, self.lr = num_classes, num_outputs, lr
        width = num_classes or num_outputs or 1
        layers = [nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, width)]
        self.net = nn.Sequential(*layers)

    def setup(self, stage: str) -> None:
        """Sizes the lazy layer from one validation batch before the optimizer (and DDP) see it."""
        lazy = self.net[1]
        if isinstance(lazy, nn.modules.lazy.LazyModuleMixin) and lazy.has_uninitialized_params():
            inputs = next(iter(self.trainer.datamodule.val_dataloader()))[0]
            with torch.no_grad():
                self.net(inputs[:1].float())

    def forward(self, x: Tensor) -> Tensor:
        outputs = self.net(x.float())
        return outputs if self.num_classes or (self.num_outputs or 1) > 1 else outputs.squeeze(-1)

    def step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        outputs = self(x)
        if self.num_classes:
            return F.cross_entropy(outputs, y), (outputs.argmax(-1) != y).float().mean()
        return F.mse_loss(outputs, y.float()), (outputs - y).abs().mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)  # train/loss_step, _epoch
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, error = self.step(batch)
        self.log_dict({"val/loss": loss, "val/error": error}, sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, error = self.step(batch)
        self.log_dict({"test/loss": loss, "test/error": error}, sync_dist=True)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        outputs = self(batch[0])
        return outputs.argmax(-1) if self.num_classes else outputs

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)  # per epoch
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def best_checkpoint(cli: TrainCLI) -> str:
    return cli.trainer.checkpoint_callback.best_model_path


@pytest.mark.slow
def test_it_trains_on_the_default_data_is_tested_predicts_and_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = train(tmp_path / "logs", *OWN, "--trainer.max_epochs", "3", *TINY_RUN)
    model, data = cli.model, cli.datamodule
    assert isinstance(model, Module)
    # The sizes the data declares reached it by name; the lazy layer took the input's width.
    declared = (getattr(data, "num_classes", None), getattr(data, "num_outputs", None))
    assert (model.num_classes, model.num_outputs) == declared
    assert model.net[1].in_features == math.prod(INPUT_SHAPE)
    run = Path(cli.trainer.log_dir)
    _, epochs = read_rows(run / "epochs.csv")
    assert float(epochs[-1]["train/loss_epoch"]) < float(epochs[0]["train/loss_epoch"])
    assert float(epochs[-1]["val/loss"]) < float(epochs[0]["val/loss"])

    # The test after training evaluated the best checkpoint, which rebuilds the module on its own.
    best = best_checkpoint(cli)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["best_checkpoint"] == best and set(summary["test"]) == {"test/loss", "test/error"}
    tested = train(tmp_path / "test", "test", *OWN, "--ckpt_path", best)
    loss = tested.trainer.callback_metrics["test/loss"].item()
    assert loss == pytest.approx(summary["test"]["test/loss"], rel=1e-5)

    path = tmp_path / "predictions.csv"
    train(tmp_path / "predict", *OWN, "--ckpt_path", best, "--predict_path", str(path))
    header, rows = read_rows(path)
    assert header == ["index", "prediction"]  # what predict_step returns, one value per sample
    assert [int(row["index"]) for row in rows] == list(range(SPLIT_SIZES["test"]))
    rebuilt = load_module(best).eval()
    assert isinstance(rebuilt, Module) and (rebuilt.num_classes, rebuilt.num_outputs) == declared
    samples = [data.splits["test"][index] for index in range(SPLIT_SIZES["test"])]
    batch = tuple(torch.stack(column) for column in zip(*samples, strict=True))
    with torch.no_grad():
        expected = rebuilt.predict_step(batch, 0).float()
    written = torch.tensor([float(row["prediction"]) for row in rows])
    assert torch.allclose(written, expected, rtol=1e-5, atol=1e-5)
    assert f"({len(rows)} rows)" in capsys.readouterr().out  # no score: the module has none to give

    exported = export.main(["--ckpt_path", best, "--format", "onnx" if HAS_ONNX else "torch_export"])
    assert exported.is_file()  # and computes what the module does (export.main checks, else exits 1)


def last_weights(cli: TrainCLI) -> dict[str, Tensor]:
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_run_stopped_after_two_epochs_and_resumed_ends_with_the_weights_of_one_that_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = (*OWN, "--data.num_workers", "2", "--trainer.max_epochs", "4", "--trainer.deterministic", "true",
             "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2")  # fmt: skip
    # Two workers, as in test_reproducibility: each epoch's draws depend on (seed, epoch) alone.
    whole = train(tmp_path / "whole", *exact)
    training_step = Module.training_step

    def ctrl_c_at_the_third_epoch(self: Module, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.global_step == 2 * 5:
            raise KeyboardInterrupt
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(Module, "training_step", ctrl_c_at_the_third_epoch)
    with pytest.raises(SystemExit):
        train(tmp_path / "split", *exact)
    monkeypatch.undo()
    resumed = train(tmp_path / "split", *exact, "--ckpt_path", "last")
    # Stopped before the third epoch's first step: nothing new since the second's last.ckpt.
    assert Path(resumed.config.ckpt_path).name == "last.ckpt"
    assert resumed.trainer.global_step == whole.trainer.global_step == 4 * 5
    # Its own schedule (StepLR, per epoch) went on from the checkpoint's state, not from the start.
    (lr,) = resumed.model.lr_schedulers().get_last_lr()
    assert [lr] == whole.model.lr_schedulers().get_last_lr() and lr == pytest.approx(0.01 * 0.7**4)
    first, second = last_weights(whole), last_weights(resumed)
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.slow
def test_it_trains_under_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    ddp = run_train_py(
        *OWN, "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", *TINY_RUN,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "x2" in ddp.stdout and [path.name for path in tmp_path.iterdir()] == ["version_0"]
    last = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 4  # each process took 4 steps an epoch
    events = EventAccumulator(str(tmp_path / "version_0"))
    events.Reload()
    assert {"val/loss", "test/loss"} <= set(events.Tags()["scalars"])


class PlainData(L.LightningDataModule):
    """A DataModule written for Lightning alone: 3 classes of random rows, no project base class."""

    num_classes = 3

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(300, 5, generator=generator)
        y = (x[:, 0] > 0.5).long() + (x[:, 1] > 0).long()
        parts = {"train": slice(0, 200), "val": slice(200, 250), "test": slice(250, None)}
        self.sets = {name: TensorDataset(x[rows], y[rows]) for name, rows in parts.items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size)


def test_a_plain_data_module_is_named_once_with_the_guarantees_it_lacks(tmp_path: Path) -> None:
    with pytest.warns(UserWarning) as warned:
        cli = train(tmp_path, *OWN, "--data.class_path", f"{__name__}.PlainData", "--trainer.max_epochs", "2")
    assert cli.trainer.state.finished and cli.model.num_classes == 3  # named, not refused
    said = [str(warning.message) for warning in warned if "is not a SeededDataModule" in str(warning.message)]
    assert len(said) == 1 and said[0].startswith("PlainData is not a SeededDataModule")
    assert "batches are not seeded per (seed, epoch, batch)" in said[0]
    assert "a resumed run does not continue its data order exactly" in said[0]
