"""The LightningModule on its own: one step, overfitting a batch, predictions, optimisers."""

import lightning as L
import pytest
import torch

from {{ cookiecutter.package_name }}.data import DigitsDataModule
from {{ cookiecutter.package_name }}.module import Classifier


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    datamodule = DigitsDataModule(batch_size=32, num_workers=0, augment=False)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))


def make_model(**kwargs: object) -> Classifier:
    L.seed_everything(0)
    return Classifier(num_classes=10, input_shape=DigitsDataModule.input_shape, **kwargs)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_gives_a_finite_loss_and_gradients_everywhere(batch) -> None:
    model = make_model()
    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Untrained on 10 balanced-ish classes: close to log(10).
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 1.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


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


def test_predict_step_returns_classes_and_probabilities(batch) -> None:
    model = make_model().eval()
    with torch.no_grad():
        out = model.predict_step(batch, 0)
    assert out["prediction"].shape == (32,)
    assert out["probability"].shape == (32, 10)
    assert torch.allclose(out["probability"].sum(dim=-1), torch.ones(32))
    assert torch.equal(out["probability"].argmax(dim=-1), out["prediction"])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "constant"])
def test_every_optimizer_and_scheduler_trains(tmp_path, optimizer: str, scheduler: str) -> None:
    model = make_model(optimizer=optimizer, scheduler=scheduler, lr=0.05 if optimizer == "sgd" else 3e-3)
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
    assert type(optimizer_).__name__.lower() == optimizer
    expected = {"onecycle": "OneCycleLR", "cosine": "CosineAnnealingLR", "constant": None}[scheduler]
    names = [type(config.scheduler).__name__ for config in trainer.lr_scheduler_configs]
    assert names == ([expected] if expected else [])
