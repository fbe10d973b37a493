"""Values that are legal to the parser but cannot train, or surely train nothing: each stops ``train.py``
before training with one line naming its key (exit status 2), or is warned of in one line."""

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import PROJECT_ROOT, TINY_RUN, RunCLI, refusal

SHORT_RUN = (
    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches",
    "1", "--trainer.max_epochs", "2", *TINY_RUN,
)  # fmt: skip
REGRESSION = ("--config", str(PROJECT_ROOT / "configs" / "examples" / "regression.yaml"))


def one_error_line(run_cli: RunCLI, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line ``train.py ARGS`` stops with (exit status 2), without its ``error: `` prefix."""
    err = refusal(run_cli, capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no settings"),
        ("# every line a comment\n", "holds no settings"),
        ("[1, 2]\n", "holds a list, not keys"),
        ("just words\n", "holds a str, not keys"),
    ],
    ids=["empty", "comments only", "a list", "a string"],
)
def test_a_config_file_without_keys_is_named(
    run_cli: RunCLI, capsys, tmp_path_factory: pytest.TempPathFactory, text: str, says: str
) -> None:
    path = tmp_path_factory.mktemp("configs") / "mine.yaml"
    path.write_text(text)
    error = one_error_line(run_cli, capsys, "--config", str(path), *TINY_RUN)
    assert error.startswith(f"config: {path}: ") and says in error


@pytest.mark.parametrize(
    ("schedule", "horizon"),
    [
        (("--model.interval", "step"), "total_steps"),  # the default OneCycleLR: optimizer steps
        (
            (
                "--model.scheduler",
                "{{ cookiecutter.package_name }}.tasks.schedules.CosineAnnealingLR",
                "--model.interval",
                "epoch",
            ),
            "T_max",
        ),
    ],
    ids=["steps", "epochs"],
)
def test_a_run_without_an_end_is_refused_where_the_schedule_takes_its_horizon_from_it(
    run_cli: RunCLI, capsys, tmp_path: Path, schedule: tuple[str, ...], horizon: str
) -> None:
    # -1 is Lightning's "no end": a schedule over the run's length would have an infinite one.
    error = one_error_line(run_cli, capsys, *SHORT_RUN, "--trainer.max_epochs", "-1", *schedule)
    assert error.startswith("trainer.max_epochs: -1 sets no end") and f"init_args.{horizon}" in error
    assert not list(tmp_path.rglob("version_*")), "nothing was trained: no run to list"


@pytest.mark.parametrize(
    "schedule",
    [
        (),
        ("--model.scheduler", "null"),
        ("--model.scheduler", "torch.optim.lr_scheduler.ExponentialLR", "--model.scheduler.gamma", "0.9"),
    ],
    ids=["OneCycleLR", "constant", "ExponentialLR"],
)
def test_a_learning_rate_of_zero_is_warned_of_with_its_key(
    run_cli: RunCLI, schedule: tuple[str, ...]
) -> None:
    with pytest.warns(UserWarning, match=r"^model\.optimizer\.init_args\.lr: 0 .*trains nothing$"):
        run_cli("fit", "--model.optimizer.lr", "0", *schedule, "--trainer.fast_dev_run", "true", *TINY_RUN)


class OneOutputTooMany(torch.nn.Module):
    """A network that gives one value per sample more than the task's size: a head of the wrong width."""

    def __init__(self, num_classes: Any = None, num_outputs: Any = None, extra: int = 1) -> None:
        super().__init__()
        width = (num_classes if num_classes is not None else num_outputs) + extra
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize(
    ("config", "shapes"),
    [
        ((), r"outputs of shape \(\d+, \d+\)"),  # whatever task configs/default.yaml trains
        (REGRESSION, r"outputs of shape \(\d+, 2\) do not fit targets of shape \(\d+,\)"),
    ],
    ids=["default", "regression"],
)
def test_a_network_whose_outputs_do_not_fit_the_task_is_named_before_training(
    run_cli: RunCLI,
    capsys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: tuple[str, ...],
    shapes: str,
) -> None:
    steps: list[int] = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda *args, **kwargs: steps.append(1))
    net = ("--model.net", f"{__name__}.OneOutputTooMany")
    error = one_error_line(run_cli, capsys, *config, *net, *SHORT_RUN)
    assert re.match(rf"model\.net: {shapes}", error), error
    assert not steps, "no optimizer step may run with a network that does not fit"
    assert not list(tmp_path.rglob("version_*")), "nothing was trained: no run to list"
