"""The command line: defaults, overrides, config files, and errors that stop before any work."""

from pathlib import Path

import pytest
import sklearn.datasets
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.tasks.schedules import CosineAnnealingLR

from conftest import CONSTANT_LR, INPUT_SHAPE, NUM_CLASSES, PRECISION, TINY_RUN, RunCLI


def test_fast_dev_run_goes_through_fit_and_test(run_cli: RunCLI, capsys) -> None:
    cli = run_cli("--trainer.fast_dev_run", "true", *TINY_RUN)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert {"test/acc", "test/loss"} <= set(cli.trainer.callback_metrics)
    assert f"precision {PRECISION}" in capsys.readouterr().out


def test_data_sizes_are_linked_into_the_model_and_its_network(run_cli: RunCLI) -> None:
    cli = run_cli("--trainer.fast_dev_run", "true", *TINY_RUN)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes == NUM_CLASSES
    assert cli.model.net.head[-1].out_features == NUM_CLASSES
    assert cli.model.net.features[0][0].in_channels == cli.datamodule.in_channels == INPUT_SHAPE[0]
    assert tuple(cli.model.example_input_array.shape[1:]) == INPUT_SHAPE  # real inputs, from the data


class LinearNet(torch.nn.Module):
    """A network of a user's own: it takes ``num_classes`` and any input shape."""

    def __init__(self, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.LazyLinear(hidden), torch.nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_the_network_optimizer_and_schedule_are_chosen_by_class_path(run_cli: RunCLI, tmp_path: Path) -> None:
    cli = run_cli(
        "--model.net", f"{__name__}.LinearNet", "--model.net.hidden", "8",
        "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05",
        "--model.scheduler", "{{ cookiecutter.package_name }}.tasks.schedules.CosineAnnealingLR",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        *TINY_RUN,
    )  # fmt: skip
    assert isinstance(cli.model.net, LinearNet) and cli.model.net.layers[-1].out_features == NUM_CLASSES
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, CosineAnnealingLR)
    assert config.scheduler.T_max == cli.trainer.estimated_stepping_batches == 2


def test_automatic_choices_can_be_overridden(run_cli: RunCLI) -> None:
    cli = run_cli(
        "--trainer.fast_dev_run", "true", "--trainer.precision", "bf16-mixed", "--trainer.accelerator", "cpu",
        *TINY_RUN,
    )  # fmt: skip
    assert cli.trainer.precision == "bf16-mixed"


def print_config(run_cli: RunCLI, capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, "--print_config")
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_overrides_compose_on_top_of_the_default_config(run_cli: RunCLI, capsys, tmp_path: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    net = "model:\n  init_args:\n    net:\n      init_args:\n        width: 8\n"
    experiment.write_text(f"{net}trainer:\n  max_epochs: 3\n")
    config = print_config(
        run_cli, capsys, "--config", str(experiment), "--model.optimizer.lr", "0.01",
        "--data.batch_size", "32", "--seed_everything", "7",
    )  # fmt: skip
    assert config["model"]["init_args"]["net"]["init_args"]["width"] == 8
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.01
    assert config["trainer"]["max_epochs"] == 3
    assert config["data"]["init_args"]["batch_size"] == 32
    assert config["seed_everything"] == 7
    # Untouched keys keep the values of configs/default.yaml.
    assert config["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert config["data"]["init_args"]["val_fraction"] == 0.15


def help_text(run_cli: RunCLI, capsys, *args: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_the_projects_keys_with_their_values_and_keeps_the_rest_reachable(
    run_cli: RunCLI, capsys
) -> None:
    short = help_text(run_cli, capsys, "--model.optimizer.lr", "0.05", "--help")
    lines = short.splitlines()
    assert len(lines) < 60  # not LightningCLI's thousand
    for command in ("fit", "validate", "test", "predict"):
        assert command in lines[0]
    assert "  --model.init_args.optimizer.init_args.lr 0.05" in lines  # the value these flags resolve to
    for key in ("model.class_path", "model.init_args.net.class_path", "model.init_args.net.init_args.width"):
        assert any(line.startswith(f"  --{key} ") for line in lines), key
    assert "--trainer.max_epochs 20" in short and "--ckpt_path" in short and "--help all" in short
    full = help_text(run_cli, capsys, "--help", "all")
    for flag in ("--trainer.gradient_clip_val", "--model.help", "--data", "--seed_everything"):
        assert flag in full


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--model.lrr", "0.1"), "lrr"),
        (("--model.optimizer.lr", "x"), "lr"),
        (("--model.net.init_args.width", "0"), "width"),
        (("--trainer.max_epochs", "many"), "max_epochs"),
        (("--model.optimizer", "torch.optim.Adamm"), "optimizer"),
        (("--ckpt_path", "missing/last.ckpt"), "missing/last.ckpt"),
        (("--data.batch_size", "x"), "data.batch_size"),
        (("--data.num_workers", "-1"), "data.num_workers"),
        (("--trainer.devices", "0"), "devices"),
        (("--model.optimizer.lr", "-1"), "model.optimizer: Invalid learning rate: -1"),
        (("--trainer.precision", "bogus"), "precision: Expected one of 64, 32, 16, 'transformer-engine',"),
    ],
)
def test_bad_values_stop_before_any_work_with_the_key_named(
    run_cli: RunCLI,
    capsys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    named: str,
) -> None:
    loads: list[object] = []
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: loads.append("data loaded"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # the error, and where to look
    assert not loads, "the data must not be loaded before the config is valid"
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("model:\n  net:\n    init_args:\n      widht: 8\n", "widht"),  # an unknown key
        ("model:\n  net:\n    init_args: [8\n", "config: {file}:4: "),  # YAML syntax: file and line
    ],
    ids=["unknown key", "yaml syntax"],
)
def test_a_bad_config_file_is_named(run_cli: RunCLI, capsys, tmp_path: Path, text: str, named: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--config", str(bad))
    assert exit_info.value.code == 2
    assert named.format(file=bad) in capsys.readouterr().err


class MistypedNet(LinearNet):
    """A network with a bug of its own: a misspelt keyword argument."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.extra = torch.nn.Linear(4, 4, bais=False)


def test_a_bug_in_ones_own_network_keeps_its_traceback(run_cli: RunCLI) -> None:
    # Not a one-line "config" error hiding where it was (jsonargparse wraps it in a ValueError).
    with pytest.raises((TypeError, ValueError), match="bais"):
        run_cli("--model.net", f"{__name__}.MistypedNet", *TINY_RUN)


def test_a_root_dir_that_cannot_be_written_is_named(run_cli: RunCLI, capsys, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # (a read-only directory would not stop root, who runs CI)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--trainer.default_root_dir", str(tmp_path / "file" / "logs"), *TINY_RUN)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.default_root_dir: cannot create" in err and "Traceback" not in err


def test_resume_from_last_continues_the_run(run_cli: RunCLI) -> None:
    # A constant learning rate, so that the resumed run may train longer than the first one planned.
    constant = (*CONSTANT_LR, *TINY_RUN)
    first = run_cli("--trainer.max_epochs", "2", *constant)
    steps_per_epoch = first.trainer.global_step // 2
    resumed = run_cli("--ckpt_path", "last", "--trainer.max_epochs", "3", *constant)
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 3 * steps_per_epoch
    # The resumed process writes on into the run's directory: one curve, one point per epoch.
    assert resumed.trainer.log_dir == first.trainer.log_dir
    events = EventAccumulator(resumed.trainer.log_dir)
    events.Reload()
    assert [event.step for event in events.Scalars("val/acc")] == [n * steps_per_epoch - 1 for n in (1, 2, 3)]


def test_settings_that_clash_at_run_time_stop_with_one_line_and_leave_no_run(
    run_cli: RunCLI, capsys, tmp_path: Path
) -> None:
    # A share of the batches that rounds to none: Lightning only finds out when training starts.
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--trainer.limit_train_batches", "0.001", *TINY_RUN)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "limit_train_batches" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("version_*")), "TensorBoard would list an empty run"


def test_no_logger_drops_what_only_a_logger_can_show(run_cli: RunCLI, tmp_path: Path) -> None:
    cli = run_cli(
        "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", *TINY_RUN,
    )  # fmt: skip
    assert cli.trainer.loggers == [] and cli.trainer.state.finished
    assert not any(isinstance(callback, LearningRateMonitor) for callback in cli.trainer.callbacks)
    assert Path(cli.trainer.checkpoint_callback.best_model_path).is_relative_to(tmp_path)


def test_lightning_subcommands_fit_validate_test_and_predict(
    trained_run: TrainCLI, run_cli: RunCLI, capsys, tmp_path: Path
) -> None:
    checkpoint = trained_run.trainer.checkpoint_callback
    best = checkpoint.best_model_path
    # What the run itself measured with its best checkpoint: val/loss when it chose it, then test/acc.
    expected = {"validate": ("Val", "loss", checkpoint.best_model_score.item())}
    expected["test"] = ("Test", "acc", trained_run.trainer.callback_metrics["test/acc"].item())
    for command, (stage, metric, value) in expected.items():
        capsys.readouterr()
        evaluated = run_cli(command, "--ckpt_path", best, *TINY_RUN)
        out = capsys.readouterr().out
        assert f"Evaluating: {best}" in out and evaluated.trainer.global_step == 0
        (line,) = [line for line in out.splitlines() if line.startswith(f"{stage}: ")]
        words = line.split()[1:]
        printed = dict(zip(words[::2], map(float, words[1::2]), strict=True))
        assert printed[metric] == pytest.approx(value, rel=1e-3)  # printed at 4 significant digits
    predictions = tmp_path / "predictions.csv"
    run_cli("predict", "--ckpt_path", best, "--predict_path", str(predictions), *TINY_RUN)
    assert predictions.is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["predictions.csv"]  # evaluation logs nothing
    fitted = run_cli("fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *TINY_RUN)
    assert fitted.trainer.state.finished and fitted.trainer.current_epoch == 1
    assert not any(name.startswith("test/") for name in fitted.trainer.callback_metrics)  # fit alone


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("test",), "ckpt_path: test evaluates a checkpoint"),
        (("predict", "--ckpt_path", "last"), "predict_path"),
    ],
)
def test_a_subcommand_without_what_it_needs_stops_with_one_line(
    run_cli: RunCLI, capsys, tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, *TINY_RUN)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {named}")
    assert not any(tmp_path.iterdir())
