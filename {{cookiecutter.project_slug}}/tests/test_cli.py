"""The command line: defaults, overrides, config files, and errors that stop before any work."""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics import MetricCollection

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.non_finite import StopOnNonFiniteLoss
from {{ cookiecutter.package_name }}.engine.sizes import SIZES, class_of, load_module, takes
from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.schedules import CosineAnnealingLR

from conftest import (
    CONSTANT_LR,
    DEFAULT_CONFIG,
    INPUT_SHAPE,
    PRECISION,
    QUALITY,
    QUICK_MODEL,
    TINY_RUN,
    RunCLI,
    refusal,
)

DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text())
SHORT_FIT = (
    "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1", *TINY_RUN,
)  # fmt: skip


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lr": 1}}`` as ``{"model.lr": 1}``."""
    items: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def plain(value: Any) -> Any:
    """A size as a config holds it: tuples as lists."""
    return list(value) if isinstance(value, tuple | list) else value


def test_fast_dev_run_goes_through_fit_and_test(run_cli: RunCLI, capsys) -> None:
    cli = run_cli("--trainer.fast_dev_run", "true", *TINY_RUN)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert "test/loss" in cli.trainer.callback_metrics
    assert f"precision {PRECISION}" in capsys.readouterr().out


def test_data_sizes_are_linked_into_the_model_and_its_network(run_cli: RunCLI) -> None:
    cli = run_cli("--trainer.fast_dev_run", "true", *TINY_RUN)
    declared = {name: plain(getattr(cli.datamodule, name)) for name in SIZES if hasattr(cli.datamodule, name)}
    # What each was built with, as its checkpoint records it.
    model_args, net_args = cli.model.hparams, cli.model.hparams["net"]["init_args"]
    for built, arguments in ((type(cli.model), model_args), (type(cli.model.net), net_args)):
        taken = {name for name in declared if takes(built, name) is not None}
        assert taken, f"{built.__name__} takes none of the sizes {sorted(declared)} the data declares"
        assert {name: plain(arguments[name]) for name in taken} == {name: declared[name] for name in taken}
        assert not [name for name in SIZES if takes(built, name) is None and name in arguments]
    assert tuple(cli.model.example_input_array.shape[1:]) == INPUT_SHAPE  # real inputs, from the data


class LinearNet(torch.nn.Module):
    """A network of a user's own: it takes any input shape and every size the data may declare, each by
    name and optional, and keeps what it was given. Its outputs: ``num_classes`` or ``num_outputs``."""

    def __init__(
        self,
        num_classes: Any = None,
        class_names: Any = None,
        num_outputs: Any = None,
        num_features: Any = None,
        input_shape: Any = None,
        in_channels: Any = None,
        cardinalities: Any = None,
        num_numeric: Any = None,
        vocab_size: Any = None,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"model.net.init_args.hidden must be at least 1, got {hidden}")
        self.sizes = {name: value for name, value in locals().items() if name in SIZES}
        outputs = num_classes if num_classes is not None else num_outputs
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.LazyLinear(hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.slow
def test_the_network_optimizer_and_schedule_are_chosen_by_class_path(run_cli: RunCLI, tmp_path: Path) -> None:
    cli = run_cli(
        "--model.net", f"{__name__}.LinearNet", "--model.net.hidden", "8",
        "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05",
        "--model.scheduler", "{{ cookiecutter.package_name }}.tasks.schedules.CosineAnnealingLR",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        *TINY_RUN,
    )  # fmt: skip
    assert isinstance(cli.model.net, LinearNet) and cli.model.net.layers[-1].in_features == 8
    # Each size the data declares reached it by name; the others kept their defaults.
    assert {name for name in SIZES if takes(LinearNet, name) is not None} == set(SIZES)
    declared = {name: getattr(cli.datamodule, name) for name in SIZES if hasattr(cli.datamodule, name)}
    assert declared and cli.model.net.sizes == {name: declared.get(name) for name in SIZES}
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, CosineAnnealingLR)
    assert config.scheduler.T_max == cli.trainer.estimated_stepping_batches == 2


DEFAULT_DATA = class_of(DEFAULT["data"]["class_path"])(**DEFAULT["data"].get("init_args", {}))
OUTPUTS = getattr(DEFAULT_DATA, "num_classes", None) or getattr(DEFAULT_DATA, "num_outputs", 1)
"""What the default task expects a network to output, written into the networks below."""


class NoArgumentNet(torch.nn.Module):
    """A network of a user's own that takes no argument: its sizes are written in."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(OUTPUTS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OwnArgumentNet(NoArgumentNet):
    """A network that takes an argument of its own, and none of the sizes the data declares."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale


@pytest.mark.slow
@pytest.mark.parametrize("net", [NoArgumentNet, OwnArgumentNet])
def test_a_network_that_takes_no_size_trains_and_its_checkpoint_reloads(run_cli: RunCLI, net: type) -> None:
    cli = run_cli("--model.net", f"{__name__}.{net.__name__}", *SHORT_FIT[1:])
    assert type(cli.model.net) is net and cli.trainer.state.finished
    reloaded = load_module(cli.trainer.checkpoint_callback.best_model_path)
    assert type(reloaded.net) is net


@pytest.mark.slow
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
    optimizer = "model:\n  init_args:\n    optimizer:\n      init_args:\n        lr: 0.02\n"
    experiment.write_text(f"{optimizer}trainer:\n  max_epochs: 3\n")
    default = flat(print_config(run_cli, capsys))
    quick = flat(print_config(run_cli, capsys, *QUICK_MODEL))  # a key of the network's, in its full name
    quick_keys = {key: value for key, value in quick.items() if default.get(key) != value}
    assert len(quick_keys) == 1, quick_keys
    config = flat(
        print_config(
            run_cli, capsys, "--config", str(experiment), "--model.optimizer.lr", "0.01", *QUICK_MODEL,
            "--data.batch_size", "32", "--seed_everything", "7",
        )
    )  # fmt: skip
    lr = "model.init_args.optimizer.init_args.lr"
    expected = {lr: 0.01, "trainer.max_epochs": 3, "data.init_args.batch_size": 32, "seed_everything": 7}
    # The flag wins over the file, the file over the default; every other key keeps the default's value.
    assert {key: value for key, value in config.items() if default.get(key) != value} == expected | quick_keys
    assert config.keys() == default.keys()


def help_text(run_cli: RunCLI, capsys, *args: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_the_projects_keys_with_their_values_and_keeps_the_rest_reachable(
    run_cli: RunCLI, capsys
) -> None:
    resolved = flat(print_config(run_cli, capsys, *QUICK_MODEL))
    short = help_text(run_cli, capsys, "--model.optimizer.lr", "0.05", *QUICK_MODEL, "--help")
    lines = short.splitlines()
    assert len(lines) < 60  # not LightningCLI's thousand
    for command in ("fit", "validate", "test", "predict"):
        assert command in lines[0]
    assert "  --model.init_args.optimizer.init_args.lr 0.05" in lines  # the value these flags resolve to
    (quick,) = [key for key, value in resolved.items() if key.endswith(QUICK_MODEL[0].rpartition(".")[2])]
    assert f"  --{quick} {QUICK_MODEL[1]}" in lines
    for key in flat(DEFAULT).keys() - {"ckpt_path"}:  # every key the default config sets
        assert any(line.startswith(f"  --{key} ") for line in lines), key
    assert f"  --trainer.max_epochs {DEFAULT['trainer']['max_epochs']}" in lines
    assert "--ckpt_path" in short and "--help all" in short
    full = help_text(run_cli, capsys, "--help", "all")
    for flag in ("--trainer.gradient_clip_val", "--model.help", "--data", "--seed_everything"):
        assert flag in full


@pytest.fixture
def data_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hooks of the default DataModule that read its data, as they are called."""
    data_class, reads = class_of(DEFAULT["data"]["class_path"]), []
    for hook in ("prepare_data", "setup"):
        original = getattr(data_class, hook)

        def spy(*args: Any, _hook: str = hook, _original: Any = original, **kwargs: Any) -> Any:
            reads.append(_hook)
            return _original(*args, **kwargs)

        monkeypatch.setattr(data_class, hook, spy)
    return reads


def stops_before_any_work(run_cli: RunCLI, capsys, tmp_path: Path, data_reads: list[str], *args: str) -> str:
    """The one line that ``train.py ARGS`` stops with, before it reads data or writes anything."""
    error, hint = refusal(run_cli, capsys, *args).strip().splitlines()  # the error, and where to look
    assert error.startswith("error: ") and hint.startswith("(for every key")
    assert not data_reads, "the data must not be read before the config is valid"
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"
    return error.removeprefix("error: ")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--model.lrr", "0.1"), "lrr"),
        (("--model.optimizer.lr", "x"), "lr"),
        (("--model.net", f"{__name__}.LinearNet", "--model.net.hidden", "0"), "model.net.init_args.hidden"),
        (("--trainer.max_epochs", "many"), "max_epochs"),
        (("--model.optimizer", "torch.optim.Adamm"), "optimizer"),
        (("--ckpt_path", "missing/last.ckpt"), "missing/last.ckpt"),
        (("--data.batch_size", "x"), "data.batch_size"),
        (("--data.num_workers", "-1"), "data.num_workers"),
        (("--trainer.devices", "0"), "devices"),
        (("--trainer.devices", "many"), "trainer.devices: `devices` selected with"),
        (("--trainer.accelerator", "abacus"), "trainer.accelerator: You selected an invalid accelerator"),
        (("--trainer.strategy", "telepathy"), "trainer.strategy: You selected an invalid strategy name"),
        (("--model.optimizer.lr", "-1"), "model.optimizer.init_args.lr: Invalid learning rate: -1"),
        (("--model.optimizer.lr", ".nan"), "model.optimizer.init_args.lr: Invalid learning rate: nan"),
        (("--model.optimizer.lr", "nan"), "model.optimizer.lr: Expected a float (given value: nan)"),
        (
            ("--model.optimizer.weight_decay", "-1"),
            "model.optimizer.init_args.weight_decay: Invalid weight_decay",
        ),
        (("--model.optimizer.eps", "-1"), "model.optimizer.init_args.eps: Invalid epsilon value"),
        (("--model.net.dropout", "1.5"), "model.net.init_args.dropout must be in [0, 1), got 1.5"),
        (("--model.net.dropout", "-0.1"), "model.net.init_args.dropout must be in [0, 1), got -0.1"),
        (("--trainer.precision", "bogus"), "precision: Expected one of 64, 32, 16, 'transformer-engine',"),
    ],
)
def test_bad_values_stop_before_any_work_with_the_key_named(
    run_cli: RunCLI, capsys, tmp_path: Path, data_reads: list[str], args: tuple[str, ...], named: str
) -> None:
    assert named in stops_before_any_work(run_cli, capsys, tmp_path, data_reads, *args)


class NeedsVocabNet(torch.nn.Module):
    """A network that needs a size (``vocab_size``) which the default data does not declare."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 4)


def test_a_size_the_network_needs_and_the_data_lacks_names_both_classes(
    run_cli: RunCLI, capsys, tmp_path: Path, data_reads: list[str]
) -> None:
    data_class = DEFAULT["data"]["class_path"].rpartition(".")[2]
    error = stops_before_any_work(
        run_cli, capsys, tmp_path, data_reads, "--model.net", f"{__name__}.NeedsVocabNet", *TINY_RUN
    )
    assert error == (
        f"model.net: NeedsVocabNet takes vocab_size from the data, but {data_class} does not declare it"
        " (set self.vocab_size in its __init__)"
    )


class DataWithABuggySize(class_of(DEFAULT["data"]["class_path"])):  # type: ignore[misc]
    """The default data, with a size whose own code has a bug."""

    @property
    def vocab_size(self) -> int:
        return {}["vocab"]


def test_a_bug_in_a_size_of_the_datas_keeps_its_traceback(run_cli: RunCLI) -> None:
    # Not a one-line "config" error: jsonargparse wraps it in a ValueError that names the link's keys.
    with pytest.raises(ValueError, match="vocab") as raised:
        run_cli(
            "--data.class_path", f"{__name__}.DataWithABuggySize", "--model.net", f"{__name__}.NeedsVocabNet"
        )
    assert isinstance(raised.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("key", "class_path"),
    [("model", "nowhere.Module"), ("data", "nowhere.Data"), ("model.net", "nowhere.Net")],
)
def test_a_class_path_that_does_not_import_is_named(
    run_cli: RunCLI, capsys, tmp_path: Path, data_reads: list[str], key: str, class_path: str
) -> None:
    error = stops_before_any_work(
        run_cli, capsys, tmp_path, data_reads, f"--{key}.class_path", class_path, *TINY_RUN
    )
    assert error == f"{key}: class_path '{class_path}' does not import: No module named 'nowhere'"


@pytest.mark.parametrize("key", ["model", "data", "model.net", "model.optimizer", "model.scheduler"])
@pytest.mark.parametrize("flag", ["{key}", "{key}.class_path"], ids=["value", "class_path"])
def test_a_class_its_module_lacks_is_named_not_the_class_around_it(
    run_cli: RunCLI, capsys, tmp_path: Path, data_reads: list[str], key: str, flag: str
) -> None:
    args = ("--" + flag.format(key=key), "torch.nn.Nope", *TINY_RUN)
    error = stops_before_any_work(run_cli, capsys, tmp_path, data_reads, *args)
    assert (
        error
        == f"{key}: class_path 'torch.nn.Nope' does not import: module 'torch.nn' has no attribute 'Nope'"
    )


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

    def __init__(self, num_classes: Any = None, num_outputs: Any = None) -> None:
        super().__init__(num_classes=num_classes, num_outputs=num_outputs)
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


@pytest.mark.slow
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
    steps = [event.step for event in events.Scalars("val/loss")]
    assert steps == [n * steps_per_epoch - 1 for n in (1, 2, 3)]


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


@pytest.mark.slow
def test_no_logger_drops_what_only_a_logger_can_show(run_cli: RunCLI, tmp_path: Path) -> None:
    cli = run_cli(
        "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", *TINY_RUN,
    )  # fmt: skip
    assert cli.trainer.loggers == [] and cli.trainer.state.finished
    assert not any(isinstance(callback, LearningRateMonitor) for callback in cli.trainer.callbacks)
    assert Path(cli.trainer.checkpoint_callback.best_model_path).is_relative_to(tmp_path)


@pytest.mark.slow
def test_lightning_subcommands_fit_validate_test_and_predict(
    trained_run: TrainCLI, run_cli: RunCLI, capsys, tmp_path: Path
) -> None:
    checkpoint = trained_run.trainer.checkpoint_callback
    best = checkpoint.best_model_path
    # What the run itself measured with its best checkpoint: the monitor when it chose it, then test/loss.
    assert checkpoint.monitor == trained_run.config.monitor == "val/loss"
    expected = {"validate": ("Val", "loss", checkpoint.best_model_score.item())}
    expected["test"] = ("Test", "loss", trained_run.trainer.callback_metrics["test/loss"].item())
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


class OtherTask(Task):
    """Another task, built from the default config's network, optimizer and schedule."""

    def configure_metrics(self, stage: str) -> MetricCollection:
        return MetricCollection({})

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return outputs.float().pow(2).mean()


def test_a_checkpoint_of_another_task_is_refused_with_both_class_paths_named(
    trained_run: TrainCLI, run_cli: RunCLI, capsys, tmp_path: Path
) -> None:
    last = Path(trained_run.trainer.log_dir) / "checkpoints" / "last.ckpt"
    other = f"{__name__}.OtherTask"
    with pytest.raises(SystemExit) as exit_info:  # the trained run's settings, but the task
        run_cli(
            "--ckpt_path", str(last), "--model.class_path", other, "--trainer.max_epochs", "2", *QUICK_MODEL,
            "--model.optimizer.lr", "0.01", *TINY_RUN,
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error, _ = err.strip().splitlines()
    assert error.startswith(f"error: ckpt_path: {last} was made with other settings: ")
    assert f"model.class_path (checkpoint '{trained_run.config.model.class_path}', config '{other}')" in error
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "watcher",
    [(), ("--trainer.overfit_batches", "1")],  # (overfit_batches leaves EarlyStopping out)
    ids=["early stopping finds out first", "the best checkpoint finds out"],
)
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You requested to overfit:UserWarning")
def test_a_monitor_the_model_does_not_log_is_named_with_what_it_logs(
    run_cli: RunCLI, capsys, tmp_path: Path, watcher: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*SHORT_FIT, "--monitor", "val/nothing", *watcher)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: monitor: the model logs no 'val/nothing' (it logs ")
    logged = re.search(r"\(it logs ([^)]*)\)", error)
    assert logged and {"train/loss_epoch", "val/loss"} <= set(logged.group(1).split(", "))
    assert not list(tmp_path.rglob("version_*")), "the run saved nothing: TensorBoard would list it empty"


@pytest.mark.parametrize(
    ("args", "monitor", "mode"),
    [
        ((), "val/loss", "min"),  # the default config's
        (("--monitor", "train/loss_epoch", "--monitor_mode", "min"), "train/loss_epoch", "min"),
        (("--monitor", QUALITY[0], "--monitor_mode", "max"), QUALITY[0], "max"),
    ],
    ids=["default", "train loss", "quality"],
)
@pytest.mark.slow
def test_the_monitor_is_written_once_and_read_by_everything_that_watches_a_metric(
    run_cli: RunCLI, args: tuple[str, ...], monitor: str, mode: str
) -> None:
    cli = run_cli(*SHORT_FIT, *args)
    assert (cli.config.monitor, cli.config.monitor_mode) == (monitor, mode)
    callbacks = cli.trainer.callbacks
    watchers = [callback for callback in callbacks if getattr(callback, "monitor", None) is not None]
    assert {type(watcher) for watcher in watchers} >= {ModelCheckpoint, EarlyStopping, StopOnNonFiniteLoss}
    assert {watcher.monitor for watcher in watchers} == {monitor}
    assert {watcher.mode for watcher in watchers if hasattr(watcher, "mode")} == {mode}
    assert cli.model.monitor == monitor  # what a plateau schedule reads
    # The best checkpoint's file name shows the metric that chose it, and its value.
    best = cli.trainer.checkpoint_callback
    assert best.monitor == monitor and best.best_model_score is not None
    name = f"epoch00-{monitor.replace('/', '_')}{best.best_model_score:.4f}.ckpt"
    assert Path(best.best_model_path).name == name
    assert re.fullmatch(r"epoch\d\d-\w+-?\d+\.\d{4}\.ckpt", name)
