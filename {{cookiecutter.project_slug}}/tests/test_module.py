"""The LightningModule on its own: one step, overfitting a batch, predictions, optimisers."""

from functools import partial

import lightning as L
import pytest
import torch

from {{ cookiecutter.package_name }}.data import DigitsDataModule
from {{ cookiecutter.package_name }}.models import SmallCNN
from {{ cookiecutter.package_name }}.tasks import Classification
from {{ cookiecutter.package_name }}.tasks.schedules import CosineAnnealingLR, OneCycleLR

from conftest import INPUT_SHAPE, NUM_CLASSES


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    datamodule = DigitsDataModule(batch_size=32, num_workers=0, augment=False)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))


def make_model(dropout: float = 0.1, **kwargs: object) -> Classification:
    L.seed_everything(0)
    net = SmallCNN(NUM_CLASSES, in_channels=INPUT_SHAPE[0], dropout=dropout)
    return Classification(net=net, num_classes=NUM_CLASSES, **{"optimizer": torch.optim.AdamW, **kwargs})


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_gives_a_finite_loss_and_gradients_everywhere(batch) -> None:
    model = make_model()
    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Untrained on 10 balanced-ish classes: close to log(10).
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 1.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_epoch_loss_is_the_mean_over_samples_not_over_batches() -> None:
    datamodule = DigitsDataModule(batch_size=64, num_workers=0, augment=False)
    datamodule.setup()
    images, labels = datamodule.splits["val"][:70]  # batches of 64 and 6: their means differ
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=64)
    model = make_model()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)  # no lightning_logs/ in the project
    (metrics,) = trainer.validate(model, loader, verbose=False)
    model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(images), labels).item()
        batch_means = [torch.nn.functional.cross_entropy(model(x), y).item() for x, y in loader]
    assert abs(sum(batch_means) / 2 - expected) > 1e-3  # the two averages really differ here
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_overfitting_one_batch_drives_the_loss_down(batch) -> None:
    model = make_model(dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images, labels = batch
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    assert (model(images).argmax(dim=-1) == labels).float().mean() == 1.0


def test_predict_step_returns_classes_their_probabilities_and_the_targets(batch) -> None:
    model = make_model().eval()
    with torch.no_grad():
        out = model.predict_step(batch, 0)
        probabilities = model(batch[0]).softmax(dim=-1)
    assert out["prediction"].shape == out["probability"].shape == (32,)
    assert torch.equal(probabilities.argmax(dim=-1), out["prediction"])
    assert torch.allclose(probabilities.max(dim=-1).values, out["probability"])
    assert torch.equal(out["target"], batch[1])


OPTIMIZERS = {
    "AdamW": partial(torch.optim.AdamW, lr=3e-3),
    "SGD": partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
}
SCHEDULERS = {
    "OneCycleLR": OneCycleLR,
    "CosineAnnealingLR": CosineAnnealingLR,
    None: None,
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_optimizer_and_scheduler_trains(tmp_path, optimizer: str, scheduler: str | None) -> None:
    model = make_model(optimizer=OPTIMIZERS[optimizer], scheduler=SCHEDULERS[scheduler])
    datamodule = DigitsDataModule(batch_size=64, num_workers=0)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["val/acc"] > 0.3  # chance is 0.1
    (optimizer_,) = trainer.optimizers
    assert type(optimizer_).__name__ == optimizer
    configs = trainer.lr_scheduler_configs
    assert [type(config.scheduler).__name__ for config in configs] == ([scheduler] if scheduler else [])
    if scheduler:  # the horizon is the whole run, in optimizer steps, and it ends there
        assert configs[0].interval == "step"
        assert configs[0].scheduler.last_epoch == trainer.global_step == trainer.estimated_stepping_batches


def test_one_cycle_peaks_at_the_optimizers_learning_rate() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    schedule = OneCycleLR(optimizer, total_steps=100)  # max_lr unset: the optimizer's
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) == pytest.approx(0.02) and rates[0] < 0.02 / 10 and rates[-1] < 0.02 / 1000
