"""The presets in configs/experiments and configs/debug: each parses, runs, and changes only what it names."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROJECT_ROOT, TINY_RUN, RunCLI

EXPERIMENTS = sorted((PROJECT_ROOT / "configs" / "experiments").glob("*.yaml"))
DEBUG = sorted((PROJECT_ROOT / "configs" / "debug").glob("*.yaml"))
SHORT_RUN = (
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1", *TINY_RUN,
)  # fmt: skip


def name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lr": 1}}`` as ``{"model.lr": 1}``; lists stay whole, as a later config replaces them."""
    items: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def print_config(run_cli: RunCLI, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, "--print_config")
    assert exit_info.value.code == 0
    return flat(yaml.safe_load(capsys.readouterr().out))


def test_there_are_presets_of_each_kind() -> None:
    assert "sgd_cosine" in {path.stem for path in EXPERIMENTS}  # it fits any task: a network's are a team's
    assert {"fast_dev_run", "overfit", "limit_batches", "profiler"} <= {path.stem for path in DEBUG}


@pytest.mark.parametrize("preset", EXPERIMENTS + DEBUG, ids=name)
def test_a_preset_changes_only_the_keys_it_names(run_cli: RunCLI, capsys, preset: Path) -> None:
    named = flat(yaml.safe_load(preset.read_text()))
    default = print_config(run_cli, capsys)
    layered = print_config(run_cli, capsys, "--config", str(preset))
    assert {key: layered[key] for key in named} == named
    # A class the file names (e.g. the profiler) brings its other arguments' defaults with it, and
    # a key it sets to null takes the keys below it away.
    classes = [key.removesuffix(".class_path") for key in named if key.endswith(".class_path")]
    cleared = [f"{key}." for key, value in named.items() if value is None]
    changed = {key for key in default.keys() | layered.keys() if default.get(key) != layered.get(key)}
    assert {key for key in changed - named.keys() if not key.startswith((*classes, *cleared))} == set()


@pytest.mark.slow
@pytest.mark.parametrize("preset", EXPERIMENTS + DEBUG, ids=name)
@pytest.mark.filterwarnings("ignore:You requested to overfit:UserWarning")  # and it turns shuffling off
def test_a_preset_runs_a_fast_dev_run_step(run_cli: RunCLI, preset: Path) -> None:
    cli = run_cli("--config", str(preset), "--trainer.fast_dev_run", "true", *TINY_RUN)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=name)
def test_an_experiment_names_its_runs_after_its_file(run_cli: RunCLI, capsys, experiment: Path) -> None:
    config = print_config(run_cli, capsys, "--config", str(experiment))
    assert config["trainer.logger.init_args.name"] == experiment.stem


@pytest.mark.slow
def test_experiments_compose_and_the_run_records_which(run_cli: RunCLI, tmp_path: Path) -> None:
    # Every shipped experiment, then one of one's own that changes a key of theirs and adds one.
    last = tmp_path / "presets" / "longer_warmup.yaml"
    last.parent.mkdir()
    last.write_text(
        "trainer:\n  logger:\n    init_args:\n      name: longer_warmup\n  gradient_clip_val: 0.5\n"
        "model:\n  init_args:\n    optimizer:\n      init_args:\n        lr: 0.02\n"
    )
    presets = [*EXPERIMENTS, last]
    cli = run_cli(*(arg for preset in presets for arg in ("--config", str(preset))), *SHORT_RUN)
    log_dir = Path(cli.trainer.log_dir)
    assert log_dir == tmp_path / last.stem / "version_0"
    saved = flat(yaml.safe_load((log_dir / "config.yaml").read_text()))
    named = {
        key: value for preset in presets for key, value in flat(yaml.safe_load(preset.read_text())).items()
    }
    assert {key: saved[key] for key in named} == named
    assert saved["model.init_args.optimizer.init_args.lr"] == 0.02  # the last file wins


@pytest.mark.slow
def test_the_profiler_writes_its_report_next_to_the_run_logs(run_cli: RunCLI) -> None:
    cli = run_cli("--config", str(PROJECT_ROOT / "configs" / "debug" / "profiler.yaml"), *SHORT_RUN)
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "fit-profile.txt").read_text().startswith("FIT Profiler Report")
    assert (log_dir / "test-profile.txt").is_file() and list(log_dir.glob("events.out.tfevents.*"))
