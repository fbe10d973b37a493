"""Which run a command acts on: ``last`` stays within the experiment, a checkpoint must fit the
config, concurrent runs get their own directories, and a resumed run continues its own."""

import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, NO_LOGGER, QUICK_MODEL, TINY_RUN, train

TINY = (
    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    *TINY_RUN,
)  # fmt: skip
DEFAULT_DATA = class_of(yaml.safe_load(DEFAULT_CONFIG.read_text())["data"]["class_path"])


class RenamedData(DEFAULT_DATA):  # type: ignore[misc,valid-type]
    """The default DataModule under another class path: other data, as far as a checkpoint can tell."""


RENAMED_DATA = f"{__name__}.{RenamedData.__name__}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``last.ckpt`` of a finished 2-epoch run of the default config (quick network, its schedule)."""
    cli = train(tmp_path_factory.mktemp("finished"), "--trainer.max_epochs", "2", *QUICK_MODEL, *TINY)
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def saved_settings(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the data's settings that the checkpoint records."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return saved["hyper_parameters"], saved["datamodule_hyper_parameters"]


def other_settings(checkpoint: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Settings that every task and DataModule have, each changed from the checkpoint's: the flags,
    and what the refusal must name. (Besides these flags, the checkpoint's run had QUICK_MODEL.)"""
    model, data = saved_settings(checkpoint)
    lr = model["optimizer"]["init_args"]["lr"]
    other_lr = 0.1 if lr != 0.1 else 0.2
    weight_init = "xavier_uniform" if model["weight_init"] != "xavier_uniform" else "orthogonal"
    batch_size = data["batch_size"]
    quick = zip(QUICK_MODEL[::2], QUICK_MODEL[1::2], strict=True)
    return {
        # Without QUICK_MODEL: the config's own network, not the one the checkpoint's weights fit.
        "network": (
            (),
            tuple(
                f".{flag.rpartition('.')[2]} (checkpoint {yaml.safe_load(value)!r}, config "
                for flag, value in quick
            ),
        ),
        "optimizer": (("--model.optimizer", "torch.optim.SGD"), ("model.optimizer.class_path",)),
        "lr": (
            ("--model.optimizer.lr", str(other_lr)),
            (f"model.optimizer.init_args.lr (checkpoint {lr!r}, config {other_lr!r})",),
        ),
        "weight_init": (
            ("--model.weight_init", weight_init),
            (f"model.weight_init (checkpoint {model['weight_init']!r}, config {weight_init!r})",),
        ),
        "batch_size": (
            ("--data.batch_size", str(2 * batch_size)),
            (f"data.batch_size (checkpoint {batch_size!r}, config {2 * batch_size!r})",),
        ),
        "data": (
            ("--data", RENAMED_DATA),
            (f"data.class_path (checkpoint {data['_class_path']!r}, config {RENAMED_DATA!r})",),
        ),
    }


@pytest.mark.slow
def test_last_resolves_within_the_experiment_and_is_named(tmp_path: Path, capsys) -> None:
    default = train(tmp_path, "--trainer.max_epochs", "1", *QUICK_MODEL, *TINY)
    other = ("--trainer.logger.init_args.name", "other", "--model.optimizer.lr", "0.01")
    train(tmp_path, "--trainer.max_epochs", "1", *QUICK_MODEL, *other, *TINY)
    default_last = Path(default.trainer.log_dir) / "checkpoints" / "last.ckpt"
    trial = tmp_path / "tune" / "study" / "trial_0" / "version_0" / "checkpoints" / "last.ckpt"
    trial.parent.mkdir(parents=True)
    shutil.copy(default_last, trial)  # the newest checkpoint of all, but a tune trial's
    capsys.readouterr()

    train(tmp_path, "--ckpt_path", "last", "--predict_path", str(tmp_path / "p.csv"), *TINY)
    assert f"Predicting with: {default_last}" in capsys.readouterr().out
    cli = train(tmp_path, "--ckpt_path", "last", "--predict_path", str(tmp_path / "w.csv"), *other, *TINY)
    assert Path(cli.config.ckpt_path) == tmp_path / "other" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"Predicting with: {cli.config.ckpt_path}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["network", "optimizer", "lr", "weight_init", "batch_size", "data"])
def test_a_checkpoint_made_with_other_settings_is_refused_before_any_work(
    finished_run: Path, tmp_path: Path, capsys, setting: str
) -> None:
    change, named = other_settings(finished_run)[setting]
    quick = () if setting == "network" else QUICK_MODEL
    resume = ("--ckpt_path", str(finished_run), "--trainer.max_epochs", "2", *quick)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *resume, *change, *TINY)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named and all(name in err for name in named), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not any(tmp_path.iterdir())


def test_predicting_refuses_other_data_settings_but_takes_the_model_from_the_checkpoint(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    predict = ("--ckpt_path", str(finished_run), "--predict_path", str(tmp_path / "p.csv"), *TINY)
    other = other_settings(finished_run)
    (named,) = other["data"][1]
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *predict, *other["data"][0])  # its splits decide which samples are predicted
    assert exit_info.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    # Any model setting may differ, the network included (no QUICK_MODEL: the config's own, not the
    # checkpoint's), and the batch size: the model comes from the checkpoint.
    cli = train(tmp_path, *predict, *other["lr"][0], *other["weight_init"][0], *other["batch_size"][0])
    assert cli.config.predict_path == str(tmp_path / "p.csv") and (tmp_path / "p.csv").is_file()


def test_runs_started_at_the_same_moment_get_their_own_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs that have both been built before either has written anything, as two processes
    # started together would be.
    monkeypatch.setattr(L.Trainer, "fit", lambda *args, **kwargs: None)
    monkeypatch.setattr(L.Trainer, "test", lambda *args, **kwargs: None)
    first, second = (train(tmp_path, "--trainer.max_epochs", "1", *TINY) for _ in range(2))
    assert first.trainer.log_dir != second.trainer.log_dir
    assert Path(first.trainer.log_dir).is_dir() and Path(second.trainer.log_dir).is_dir()


def scalars(log_dir: str, name: str) -> list[tuple[int, float]]:
    events = EventAccumulator(log_dir)
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(name)]


@pytest.mark.slow
def test_a_resumed_run_continues_its_own_directory_curves_and_best_checkpoint(tmp_path: Path) -> None:
    first = train(tmp_path, "--trainer.max_epochs", "2", *CONSTANT_LR, *TINY)
    resumed = train(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", "3", *CONSTANT_LR, *TINY)
    assert resumed.trainer.log_dir == first.trainer.log_dir
    assert [step for step, _ in scalars(resumed.trainer.log_dir, "val/loss")] == [1, 3, 5]  # one curve:
    # 2 steps an epoch, 3 epochs. The best checkpoint is the best of all 3 epochs on the monitor.
    monitored = scalars(resumed.trainer.log_dir, resumed.config.monitor)
    best_of = min if resumed.config.monitor_mode == "min" else max
    best = resumed.trainer.checkpoint_callback
    assert best.best_model_score.item() == pytest.approx(best_of(value for _, value in monitored))
    best_epoch = best_of(range(3), key=lambda epoch: monitored[epoch][1])
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == best_epoch


@pytest.mark.slow
def test_a_finished_run_given_again_tests_its_best_checkpoint(tmp_path: Path, capsys) -> None:
    first = train(tmp_path, "--trainer.max_epochs", "2", *TINY)  # a requeued job: the same command
    again = train(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", "2", *TINY)
    assert again.trainer.global_step == first.trainer.global_step and again.trainer.state.finished
    assert "test/loss" in again.trainer.callback_metrics
    best = first.trainer.checkpoint_callback.best_model_path
    assert f"Best checkpoint: {best}  ({first.config.monitor} = " in capsys.readouterr().out


@pytest.mark.slow
def test_runs_without_a_logger_get_their_own_directories_too(tmp_path: Path) -> None:
    """Lightning would write both runs' checkpoints and config.yaml straight into the root."""
    first = train(tmp_path, "--trainer.max_epochs", "1", *CONSTANT_LR, *NO_LOGGER, *TINY)
    second = train(
        tmp_path, "--trainer.max_epochs", "1", "--seed_everything", "7", *CONSTANT_LR, *NO_LOGGER, *TINY
    )
    runs = [Path(cli.trainer.default_root_dir) for cli in (first, second)]
    assert runs == [tmp_path / "version_0", tmp_path / "version_1"]
    for run, seed in zip(runs, (42, 7), strict=True):
        assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == seed
        assert (run / "checkpoints" / "last.ckpt").is_file()
    resumed = train(
        tmp_path, "--trainer.max_epochs", "2", *CONSTANT_LR, "--ckpt_path", "last", *NO_LOGGER, *TINY
    )
    assert Path(resumed.trainer.default_root_dir) == runs[1] and resumed.trainer.global_step == 4


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
@pytest.mark.parametrize("place", ["under a file", "a file"])
def test_a_root_that_cannot_hold_runs_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logger: str, place: str
) -> None:
    """A read-only place, as root sees one too: a path through a regular file, or a file itself."""
    blocker = tmp_path / "a file"
    blocker.write_text("")
    root = blocker / "runs" if place == "under a file" else blocker
    with pytest.raises(SystemExit) as exit_info:
        train(root, "--trainer.max_epochs", "1", *(NO_LOGGER if logger == "none" else ()), *TINY)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: trainer.default_root_dir: cannot create"), errors
    assert [path.name for path in tmp_path.iterdir()] == ["a file"]


def test_a_refused_run_without_a_logger_leaves_no_directory(tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [], "hyper_parameters": {"lr": 1}}, other)
    with pytest.raises(SystemExit):
        train(tmp_path / "runs", "--ckpt_path", str(other), *NO_LOGGER, *TINY)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_a_runs_config_names_no_version_and_given_again_starts_a_new_run(tmp_path: Path) -> None:
    """The run's directory is set as the logger's version argument before the logger is built; it is
    where config.yaml lives, not a setting in it."""
    first = train(tmp_path, "fit", "--trainer.max_epochs", "1", *TINY)
    saved = Path(first.trainer.log_dir) / "config.yaml"
    assert yaml.safe_load(saved.read_text())["trainer"]["logger"]["init_args"]["version"] is None
    again = train(tmp_path, "fit", "--config", str(saved), "--trainer.max_epochs", "1", *TINY)
    assert [Path(cli.trainer.log_dir).name for cli in (first, again)] == ["version_0", "version_1"]
