"""A short real training run, and what it leaves behind: accuracy, checkpoints, TensorBoard logs."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.tasks import Classification

from conftest import NUM_CLASSES, PRECISION, SHORT_RUN_MIN_VAL_ACC, TINY_RUN, train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    return train(tmp_path_factory.mktemp("run"), "--trainer.max_epochs", "4", *TINY_RUN)


@pytest.fixture(scope="module")
def events(run: TrainCLI) -> EventAccumulator:
    accumulator = EventAccumulator(run.trainer.log_dir)
    accumulator.Reload()
    return accumulator


def test_a_short_run_learns(run: TrainCLI, events: EventAccumulator) -> None:
    assert run.trainer.checkpoint_callback.monitor == "val/loss"
    assert events.Scalars("val/acc")[-1].value >= SHORT_RUN_MIN_VAL_ACC
    assert run.trainer.callback_metrics["test/acc"] >= SHORT_RUN_MIN_VAL_ACC - 0.05


def test_best_and_last_checkpoints_are_written_and_reload(run: TrainCLI) -> None:
    checkpoint = run.trainer.checkpoint_callback
    best, last = Path(checkpoint.best_model_path), Path(checkpoint.dirpath) / "last.ckpt"
    assert best.is_file() and last.is_file() and best != last
    # last.ckpt holds the final epoch, whether or not it was the best one.
    assert torch.load(last, weights_only=True)["global_step"] == run.trainer.global_step
    restored = Classification.load_from_checkpoint(best, map_location="cpu")
    assert restored.hparams.num_classes == NUM_CLASSES
    assert type(restored.net) is type(run.model.net)  # rebuilt from the config saved in the checkpoint
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(value, restored.state_dict()[key]) for key, value in state.items())


def test_the_resolved_config_is_saved_with_the_run(run: TrainCLI) -> None:
    assert Path(run.trainer.log_dir).parent == Path(run.trainer.default_root_dir)
    saved = yaml.safe_load((Path(run.trainer.log_dir) / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 4
    assert saved["trainer"]["precision"] == PRECISION  # the automatic choice, resolved
    assert saved["seed_everything"] == 42


def test_tensorboard_holds_losses_metrics_and_learning_rate(events: EventAccumulator) -> None:
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss_step", "train/loss_epoch", "train/acc",
        "val/loss", "val/acc", "val/f1",
        "test/loss", "test/acc", "test/f1",
        "lr-AdamW",
    }  # fmt: skip
    assert expected <= scalars
    assert len(events.Scalars("val/acc")) == 4  # one point per epoch, not per batch
    learning_rates = [event.value for event in events.Scalars("lr-AdamW")]
    assert max(learning_rates) > 2 * learning_rates[0]  # one-cycle warm-up is visible
    assert events.Tags()["graph"]


def test_hparams_are_logged_with_the_final_metrics(events: EventAccumulator) -> None:
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    assert {"hparams/test_acc", "hparams/best_val_loss"} <= set(events.Tags()["scalars"])
    assert events.Scalars("hparams/test_acc")[0].value >= SHORT_RUN_MIN_VAL_ACC - 0.05
