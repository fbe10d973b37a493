"""The Regression task on its own, on synthetic data made here (so that these tests hold whatever
configs/default.yaml trains): its loss and the error that names a network of the wrong output shape,
its metrics, predictions and their score, and the predicted-against-true figure in TensorBoard.
(The shipped regression example, end to end, is tested in tests/test_regression.py.)"""

import io
from functools import partial
from math import inf, nan
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from {{ cookiecutter.package_name }}.models import MLP
from {{ cookiecutter.package_name }}.tasks import Regression
from {{ cookiecutter.package_name }}.tasks.dashboards import PredictedAgainstTrue

NUM_FEATURES = 6


def make_data(samples: int, num_outputs: int = 1, seed: int = 0) -> TensorDataset:
    """A linear target with a little noise, standardised as the shipped data's are."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, NUM_FEATURES, generator=generator)
    weights = torch.randn(NUM_FEATURES, num_outputs, generator=torch.Generator().manual_seed(1))
    y = x @ weights + 0.1 * torch.randn(samples, num_outputs, generator=generator)
    y = (y - y.mean(dim=0)) / y.std(dim=0)
    return TensorDataset(x, y.squeeze(-1) if num_outputs == 1 else y)


def make_model(num_outputs: int = 1, **kwargs: Any) -> Regression:
    L.seed_everything(0)
    net = MLP(NUM_FEATURES, num_outputs, hidden=32, dropout=0.0)
    return Regression(net=net, num_outputs=num_outputs, **{"optimizer": torch.optim.AdamW, **kwargs})


def quiet_trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    # Nothing written into the project; the progress bar and summary stay as the default has them.
    settings = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False}
    settings |= {"default_root_dir": tmp_path}
    return L.Trainer(**(settings | kwargs))


# The Regression task on its own -------------------------------------------------------------------


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_loss_is_the_mean_squared_error_of_outputs_shaped_as_the_targets(num_outputs: int) -> None:
    model = make_model(num_outputs)
    x, y = make_data(16, num_outputs)[:]
    outputs = model(x)
    assert outputs.shape == y.shape  # one number per sample with one output: no trailing 1
    loss = model.training_step((x, y), 0)
    assert loss.ndim == 0 and loss.item() == pytest.approx(F.mse_loss(outputs, y).item())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    as_doubles = model.loss(outputs, y.double())  # targets of another dtype are compared as the outputs'
    assert as_doubles.dtype == outputs.dtype and as_doubles.item() == pytest.approx(loss.item())


def test_a_network_with_the_wrong_number_of_outputs_is_named_with_both_shapes() -> None:
    model = make_model(num_outputs=1)
    model.net = MLP(NUM_FEATURES, 2, hidden=8)  # two values per sample for one target
    x, y = make_data(4)[:]
    with pytest.raises(ValueError, match=r"^model\.net: ") as error:
        model.loss(model(x), y)
    assert "(4, 2)" in str(error.value) and "(4,)" in str(error.value) and "num_outputs=1" in str(error.value)


def test_the_metrics_of_an_epoch_are_over_all_its_samples(tmp_path: Path) -> None:
    x, y = make_data(70)[:]  # batches of 64 and 6: means over batches would differ
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    model = make_model()
    (metrics,) = quiet_trainer(tmp_path).validate(model, loader, verbose=False)
    model.eval()
    with torch.no_grad():
        error = model(x) - y
    assert set(metrics) == {"val/loss", "val/mae", "val/rmse", "val/r2"}
    assert metrics["val/loss"] == pytest.approx(error.pow(2).mean().item(), rel=1e-5)
    assert metrics["val/mae"] == pytest.approx(error.abs().mean().item(), rel=1e-5)
    assert metrics["val/rmse"] == pytest.approx(error.pow(2).mean().sqrt().item(), rel=1e-5)
    r2 = 1 - error.pow(2).sum() / (y - y.mean()).pow(2).sum()
    assert metrics["val/r2"] == pytest.approx(r2.item(), rel=1e-4)
    assert set(model.metrics["train_"]) == {"train/mae"}  # training tracks one: it is updated every step


def test_training_fits_the_data(tmp_path: Path) -> None:
    model = make_model(optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    train = DataLoader(make_data(512), batch_size=64, shuffle=True)
    trainer.fit(model, train, DataLoader(make_data(128, seed=2), batch_size=64))
    # A constant prediction scores a loss of 1 and an R2 of 0 on standardised targets.
    assert trainer.callback_metrics["val/loss"] < 0.2 and trainer.callback_metrics["val/r2"] > 0.8


def test_predictions_are_the_outputs_and_their_score_the_errors() -> None:
    model = make_model().eval()
    x, y = make_data(32)[:]
    with torch.no_grad():
        out = model.predict_step((x, y), 0)
        outputs = model(x)
        without_targets = model.predict_step(x, 0)
    assert set(out) == {"prediction", "target"} and set(without_targets) == {"prediction"}
    assert torch.equal(out["prediction"], outputs) and torch.equal(out["target"], y)
    score = model.score_predictions(out)
    error = outputs - y
    mae, rmse = error.abs().mean().item(), error.pow(2).mean().sqrt().item()
    assert score == f"MAE {mae:.4f}, RMSE {rmse:.4f} against the targets"
    assert model.score_predictions(without_targets) == ""


def test_the_figure_keeps_at_most_max_points_and_skips_the_sanity_check() -> None:
    callback = PredictedAgainstTrue(max_points=50)
    outputs, targets = torch.randn(32), torch.randn(32)
    trainer: Any = SimpleNamespace(sanity_checking=True)
    callback.on_validation_epoch_start(trainer, None)  # type: ignore[arg-type]
    callback.on_validation_batch_end(trainer, None, outputs, (None, targets), 0)  # type: ignore[arg-type]
    assert callback.pairs == []
    trainer.sanity_checking = False
    for _ in range(3):
        callback.on_validation_batch_end(trainer, None, outputs, (None, targets), 0)  # type: ignore[arg-type]
    pairs = torch.cat(callback.pairs)
    assert pairs.shape == (50, 2)  # 32 + the first 18 of the second batch, none of the third
    assert torch.equal(pairs[:32], torch.stack([outputs, targets], dim=1))


@pytest.mark.parametrize("model", ["right", "constant", "right, and diverged on two"])
def test_the_picture_counts_samples_by_true_and_predicted_value(tmp_path: Path, model: str) -> None:
    targets = torch.linspace(-2, 2, 640)
    outputs = torch.zeros(640) if model == "constant" else targets.clone()
    if model.endswith("diverged on two"):  # left out of the picture, and said so
        targets, outputs = (
            torch.cat([targets, torch.zeros(2)]),
            torch.cat([outputs, torch.tensor([nan, inf])]),
        )
    logger = TensorBoardLogger(tmp_path, name="", version=0)
    trainer: Any = SimpleNamespace(
        loggers=[logger],
        sanity_checking=False,
        is_global_zero=True,
        global_step=3,
        state=SimpleNamespace(fn="fit"),
    )
    callback = PredictedAgainstTrue(bins=16)
    callback.on_validation_epoch_start(trainer, None)  # type: ignore[arg-type]
    callback.on_validation_batch_end(trainer, None, outputs, (None, targets), 0)  # type: ignore[arg-type]
    callback.on_validation_epoch_end(trainer, None)  # type: ignore[arg-type]
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0}).Reload()
    (image,) = events.Images("val/predicted_vs_true")
    assert image.step == 2  # the step of the scalars Lightning logs at the end of this validation
    pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert pixels.shape == (256, 256, 3)  # 16 bins of 16 pixels
    assert (pixels[255 - np.arange(256), np.arange(256)] == 255).all()  # the white line: predicted = true
    empty = pixels[::16, ::16] == pixels[0, 0]  # each bin's corner, off the line; top left: none there
    filled = np.argwhere(~empty.all(axis=-1))  # (row from the top, column) of the bins with samples
    rows, columns = filled[:, 0], filled[:, 1]
    assert sorted(columns) == list(range(16))  # true values across the whole width
    expected_rows = np.full(16, 7) if model == "constant" else 15 - columns  # at 0, or on the diagonal
    assert (rows == expected_rows).all()
    (text,) = events.Tensors("val/predicted_vs_true/text_summary")
    said = text.tensor_proto.string_val[0].decode()
    assert "both from -2 (bottom left) to 2" in said
    assert ("2 non-finite predictions left out" in said) == model.endswith("diverged on two")


def test_the_predicted_against_true_figure_is_drawn_into_tensorboard_after_each_validation(
    tmp_path: Path,
) -> None:
    model = make_model()
    assert [type(callback) for callback in model.configure_callbacks()] == [PredictedAgainstTrue]
    train, val = DataLoader(make_data(256), batch_size=64), DataLoader(make_data(100, seed=2), batch_size=64)
    logger = TensorBoardLogger(tmp_path, name="", default_hp_metric=False)
    quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1).fit(model, train, val)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0}).Reload()
    images = events.Images("val/predicted_vs_true")
    assert [image.step for image in images] == [scalar.step for scalar in events.Scalars("val/loss")]
    assert len(images) == 2  # one per epoch, none for the sanity check
    pixels = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    assert pixels.shape == (256, 256, 3)  # 64 x 64 bins of 4 x 4 pixels
    texts = events.Tensors("val/predicted_vs_true/text_summary")
    assert [text.step for text in texts] == [image.step for image in images]  # the axes' range beside it
    assert "predicted along y" in texts[-1].tensor_proto.string_val[0].decode()

    # Without TensorBoard: nothing drawn, and nothing fails.
    csv = CSVLogger(tmp_path / "csv")
    quiet_trainer(tmp_path, max_epochs=1, logger=csv).fit(make_model(), train, val)
    assert not list((tmp_path / "csv").rglob("events.out.*"))
