"""Learning-rate schedules are torch's own, built by keyword, with the run's length only where it is unset;
weight initialisation follows each scheme's formula; bad values of either stop the CLI with one line."""

import copy
import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args
from unittest import mock

import lightning as L
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from {{ cookiecutter.package_name }} import models
from {{ cookiecutter.package_name }}.tasks import Classification, schedules
from {{ cookiecutter.package_name }}.tasks import base as task_base
from {{ cookiecutter.package_name }}.tasks.schedules import build_scheduler
from {{ cookiecutter.package_name }}.tasks.weight_init import WEIGHTED, WeightInit, initialize_weights

from conftest import TINY_RUN, RunCLI, train

# isort: split
from test_reproducibility import (
    EXACT,
    STEPS_PER_EPOCH,
    identical,
    last_weights,
    press_ctrl_c_when_epoch_starts,
)

STEPS = 12
"""Scheduler steps compared against torch's reference: past every milestone and restart in the table."""
LRS = (0.1, 0.02)
"""Two parameter groups, so that a schedule's per-group learning rates are compared too."""
LOSSES = [1.0, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3, 0.3]
"""A metric that stalls twice: ReduceLROnPlateau (patience 1) lowers the learning rate on both."""

SCHEDULER_ARGS: dict[str, dict[str, Any]] = {
    "StepLR": {"step_size": 3, "gamma": 0.5},
    "MultiStepLR": {"milestones": [2, 4], "gamma": 0.5},
    "ExponentialLR": {"gamma": 0.9},
    "CosineAnnealingLR": {"T_max": 10},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3},  # cycles SGD's momentum too
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 20},
    "CosineAnnealingWarmRestarts": {"T_0": 3},
    "PolynomialLR": {"total_iters": 8, "power": 2.0},
    "LinearLR": {"start_factor": 0.25, "total_iters": 4},
    "ConstantLR": {"factor": 0.5, "total_iters": 4},
    "ReduceLROnPlateau": {"factor": 0.5, "patience": 1},
}
"""Every torch scheduler a config can build: its required (or telling) arguments."""

NOT_FROM_A_CONFIG = {
    "LRScheduler": "the abstract base: it has no schedule of its own",
    "_LRScheduler": "the deprecated alias of the abstract base",
    "SequentialLR": "takes other scheduler objects, which a config entry cannot hold",
    "ChainedScheduler": "takes other scheduler objects, which a config entry cannot hold",
    "LambdaLR": "takes a Python callable (lr_lambda), not a config value",
    "MultiplicativeLR": "takes a Python callable (lr_lambda), not a config value",
}

HORIZON_KEYWORD = {
    schedules.OneCycleLR: "total_steps",
    schedules.CosineAnnealingLR: "T_max",
    schedules.LinearLR: "total_iters",
    schedules.PolynomialLR: "total_iters",
}
"""The project's horizon-aware schedules and the keyword that the run's length fills."""


def scheduler_classes() -> dict[str, type]:
    """Every scheduler class that torch.optim.lr_scheduler defines (not the ones it imports)."""
    return {
        name: cls
        for name, cls in inspect.getmembers(lr_scheduler, inspect.isclass)
        if cls.__module__ == lr_scheduler.__name__
        and (issubclass(cls, lr_scheduler.LRScheduler) or cls is lr_scheduler.ReduceLROnPlateau)
    }


def make_optimizer() -> torch.optim.SGD:
    """SGD with momentum (CyclicLR and OneCycleLR cycle it) over two groups of different learning rates."""
    groups = [{"params": [nn.Parameter(torch.ones(2))], "lr": lr} for lr in LRS]
    return torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)


def lr_trace(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int = STEPS) -> list[list[float]]:
    """The groups' learning rates after construction and after each of ``steps`` steps."""
    trace = [[group["lr"] for group in optimizer.param_groups]]
    for index in range(steps):
        optimizer.step()  # before the schedule's step, as Lightning orders them
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(LOSSES[index])
        else:
            scheduler.step()
        trace.append([group["lr"] for group in optimizer.param_groups])
    return trace


def test_the_scheduler_table_covers_every_torch_scheduler() -> None:
    """A scheduler that a newer torch adds fails here until it joins a table, so none goes untested."""
    found = set(scheduler_classes())
    assert found - set(SCHEDULER_ARGS) - set(NOT_FROM_A_CONFIG) == set(), "add it to SCHEDULER_ARGS"
    assert set(SCHEDULER_ARGS) <= found, "a tested scheduler is gone from torch"
    assert not set(SCHEDULER_ARGS) & set(NOT_FROM_A_CONFIG)


@pytest.mark.parametrize("name", SCHEDULER_ARGS)
def test_every_torch_scheduler_is_built_exactly_as_torch_builds_it(name: str) -> None:
    """build_scheduler adds nothing to a fully configured torch schedule: no horizon, no positional value."""
    cls, args = getattr(lr_scheduler, name), SCHEDULER_ARGS[name]
    optimizer, reference_optimizer = make_optimizer(), make_optimizer()
    scheduler = build_scheduler(functools.partial(cls, **args), optimizer, horizon=50)
    reference = cls(reference_optimizer, **args)
    assert type(scheduler) is cls
    trace = lr_trace(scheduler, optimizer)
    assert trace == lr_trace(reference, reference_optimizer)
    assert len({lrs[0] for lrs in trace}) > 1, "the schedule never changed the learning rate"


@pytest.mark.parametrize("cls", HORIZON_KEYWORD, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("form", ["class", "partial with None"])
def test_an_unset_horizon_is_the_runs_length(cls: type, form: str) -> None:
    """Left unset, the horizon is the run's: the schedule is torch's given that keyword, step for step."""
    keyword, horizon = HORIZON_KEYWORD[cls], 9
    make = cls if form == "class" else functools.partial(cls, **{keyword: None})
    optimizer, reference_optimizer = make_optimizer(), make_optimizer()
    scheduler = build_scheduler(make, optimizer, horizon)
    torch_cls = getattr(lr_scheduler, cls.__name__)
    peak = {"max_lr": list(LRS)} if cls is schedules.OneCycleLR else {}  # the optimizer's own rates
    reference = torch_cls(reference_optimizer, **{keyword: horizon}, **peak)
    assert getattr(scheduler, keyword) == horizon
    assert lr_trace(scheduler, optimizer, horizon) == lr_trace(reference, reference_optimizer, horizon)


@pytest.mark.parametrize("cls", HORIZON_KEYWORD, ids=lambda cls: cls.__name__)
def test_a_partial_that_omits_the_horizon_gets_the_runs_length(cls: type) -> None:
    """``partial(OneCycleLR, pct_start=0.5)``, as Python code writes it, leaves the horizon unset too."""
    make = functools.partial(cls)
    assert getattr(build_scheduler(make, make_optimizer(), 9), HORIZON_KEYWORD[cls]) == 9


@pytest.mark.parametrize("cls", HORIZON_KEYWORD, ids=lambda cls: cls.__name__)
def test_a_horizon_the_config_sets_is_kept(cls: type) -> None:
    """An explicit horizon wins over the run's length: the config says how long the schedule is."""
    keyword = HORIZON_KEYWORD[cls]
    scheduler = build_scheduler(functools.partial(cls, **{keyword: 7}), make_optimizer(), horizon=50)
    assert getattr(scheduler, keyword) == 7


@pytest.mark.parametrize("cls", HORIZON_KEYWORD, ids=lambda cls: cls.__name__)
def test_an_unset_horizon_needs_a_known_run_length(cls: type) -> None:
    """With no run length (epochs unknown: -1), an unset horizon is an error naming the key to set."""
    keyword = HORIZON_KEYWORD[cls]
    with pytest.raises(ValueError, match=rf"^model\.scheduler: {keyword} comes from the run's length"):
        build_scheduler(functools.partial(cls, **{keyword: None}), make_optimizer(), horizon=-1)


def test_one_cycle_keeps_a_configured_peak() -> None:
    """OneCycleLR's peak is the optimizer's learning rate only where the config gives none."""
    optimizer, make = make_optimizer(), functools.partial(schedules.OneCycleLR, max_lr=0.5, total_steps=None)
    scheduler = build_scheduler(make, optimizer, 10)
    assert [group["max_lr"] for group in optimizer.param_groups] == [0.5, 0.5]
    assert scheduler.total_steps == 10


def test_a_schedule_without_a_horizon_gets_none() -> None:
    """ExponentialLR takes no horizon: the run's length once reached gamma, passed by position."""
    optimizer = make_optimizer()
    scheduler = build_scheduler(functools.partial(lr_scheduler.ExponentialLR, gamma=0.9), optimizer, 50)
    assert scheduler.gamma == 0.9
    trace = lr_trace(scheduler, optimizer, steps=3)
    assert [lrs[0] for lrs in trace] == pytest.approx([LRS[0] * 0.9**step for step in range(4)])


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_an_exponential_schedule_steps_after_every_optimizer_step(run_cli: RunCLI) -> None:
    """Through the CLI, gamma reaches torch's ExponentialLR and the schedule steps once per batch."""
    cli = run_cli(
        "fit", "--model.scheduler", "torch.optim.lr_scheduler.ExponentialLR",
        "--model.scheduler.init_args.gamma", "0.5", "--trainer.fast_dev_run", "2", *TINY_RUN,
    )  # fmt: skip
    steps = cli.trainer.global_step
    assert steps == 2
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, lr_scheduler.ExponentialLR) and config.scheduler.gamma == 0.5
    (group,) = cli.trainer.optimizers[0].param_groups
    assert group["lr"] == pytest.approx(0.003 * 0.5**steps)


def test_a_plateau_schedule_stepped_every_batch_is_refused_before_training(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str]
) -> None:
    """ReduceLROnPlateau reads a metric logged once per epoch; with ``interval: step`` it never could."""
    with mock.patch.object(L.Trainer, "fit") as fit, pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--model.scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau", *TINY_RUN)
    assert exit_info.value.code == 2
    fit.assert_not_called()
    (error,) = error_lines(capsys)
    assert error.startswith("error: model.interval: ") and "epoch" in error


def test_a_plateau_schedule_stepped_every_epoch_reads_the_monitored_metric(run_cli: RunCLI) -> None:
    """With ``interval: epoch`` the plateau schedule trains, stepped with the monitored val/loss."""
    cli = run_cli(
        "fit", "--model.scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--model.interval", "epoch", "--trainer.fast_dev_run", "2", *TINY_RUN,
    )  # fmt: skip
    assert cli.trainer.global_step == 2
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, lr_scheduler.ReduceLROnPlateau)
    assert (config.interval, config.monitor, config.scheduler.mode) == ("epoch", "val/loss", "min")
    assert config.scheduler.best == pytest.approx(cli.trainer.callback_metrics["val/loss"].item())


BAD_SCHEDULES = {
    "a type jsonargparse rejects": (
        "torch.optim.lr_scheduler.StepLR", "--model.scheduler.init_args.step_size", "2",
        "--model.scheduler.init_args.gamma", "abc",
    ),
    "a value torch rejects": ("torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
                              "--model.scheduler.init_args.T_0", "0"),
    "a value the project's class rejects": ("{{ cookiecutter.package_name }}.tasks.schedules.OneCycleLR",
                                            "--model.scheduler.init_args.pct_start", "1.5"),
}  # fmt: skip
"""StepLR's ``step_size -1`` is no example: torch accepts it (and decays every step), so it trains."""


@pytest.mark.parametrize("bad", BAD_SCHEDULES)
def test_a_bad_scheduler_argument_stops_before_training(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    """A schedule is built aside when the task is, so a bad argument costs no data loading or training."""
    with mock.patch.object(L.Trainer, "fit") as fit, pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--model.scheduler", *BAD_SCHEDULES[bad], *TINY_RUN)
    assert exit_info.value.code == 2
    fit.assert_not_called()
    (error,) = error_lines(capsys)
    assert error.startswith("error: model.scheduler")
    if bad != "a type jsonargparse rejects":
        assert error.split(": ", 2)[2] in {
            "Expected positive integer T_0, but got 0",
            "Expected float between 0 and 1 pct_start, but got 1.5",
        }


def test_a_wrongly_typed_scheduler_argument_says_what_is_wrong(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one line names the expected type and the value given, as it does for other keys."""
    with pytest.raises(SystemExit):
        run_cli("fit", "--model.scheduler", *BAD_SCHEDULES["a type jsonargparse rejects"], *TINY_RUN)
    (error,) = error_lines(capsys)
    assert "float" in error and "abc" in error


def test_an_unknown_weight_init_on_the_command_line_is_one_line(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in the scheme's name stops with the choices, not a nested report of every type tried."""
    with mock.patch.object(L.Trainer, "fit") as fit, pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--model.weight_init", "bogus", *TINY_RUN)
    assert exit_info.value.code == 2
    fit.assert_not_called()
    (error,) = error_lines(capsys)
    assert error.startswith("error: model.weight_init: Expected one of ") and "bogus" in error
    assert all(repr(choice) in error for choice in get_args(WeightInit))


NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "SmallCNN": lambda: models.SmallCNN(num_classes=10, in_channels=1),
    "EmbeddingMLP": lambda: models.EmbeddingMLP(num_classes=3, cardinalities=[4, 3], num_numeric=1),
    "MLP": lambda: models.MLP(num_features=10, num_outputs=1),
}
SCHEMES = [scheme for scheme in get_args(WeightInit) if scheme != "default"]
BIG_LAYER = 100
"""Elements from which a uniform layer's largest |w| is surely within 10% of its bound (0.9**100 ~ 3e-5)."""


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as torch.nn.init defines them: channels times the kernel's size."""
    receptive = weight[0][0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def weighted_layers(network: nn.Module) -> list[nn.Module]:
    layers = [layer for layer in network.modules() if isinstance(layer, WEIGHTED)]
    assert layers, "a network without a layer to initialise tests nothing"
    return layers


def check_scheme(weight: torch.Tensor, scheme: str) -> None:
    """Asserts that ``weight`` is a draw of ``scheme``: its bound or deviation, or orthogonality."""
    fan_in, fan_out = fans(weight)
    values, count = weight.detach().flatten(), weight.numel()
    if scheme == "orthogonal":
        rows = weight.detach().reshape(weight.shape[0], -1)
        gram = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
        torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-5, rtol=0)
        return
    std = math.sqrt(2 / fan_in) if scheme.startswith("kaiming") else math.sqrt(2 / (fan_in + fan_out))
    if scheme.endswith("uniform"):
        bound = math.sqrt(3) * std  # kaiming: sqrt(2) * sqrt(3/fan_in); xavier: sqrt(6/(fan_in+fan_out))
        assert values.abs().max() <= bound * (1 + 1e-6)
        if count >= BIG_LAYER:
            assert values.abs().max() >= 0.9 * bound
    # Five standard errors: the sample deviation's relative error is about 1/sqrt(2n).
    assert values.std().item() == pytest.approx(std, rel=5 / math.sqrt(2 * count))
    assert abs(values.mean().item()) <= 5 * std / math.sqrt(count)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("network", NETWORKS)
def test_each_scheme_follows_its_formula(network: str, scheme: str) -> None:
    """Every conv and linear weight is the scheme's draw, biases 0, norms 1 and 0, embeddings untouched."""
    torch.manual_seed(0)
    net = NETWORKS[network]()
    for layer in net.modules():  # so that the reset of norms and biases is seen, not PyTorch's own
        if isinstance(layer, nn.BatchNorm2d):
            nn.init.uniform_(layer.weight, 2, 3)
            nn.init.uniform_(layer.bias, 2, 3)
    embeddings = [layer.weight.detach().clone() for layer in net.modules() if isinstance(layer, nn.Embedding)]
    initialize_weights(net, scheme)
    for layer in weighted_layers(net):
        check_scheme(layer.weight, scheme)
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0
    for layer in net.modules():
        if isinstance(layer, nn.BatchNorm2d):
            assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)
    after = [layer.weight for layer in net.modules() if isinstance(layer, nn.Embedding)]
    assert len(after) == len(embeddings) and all(map(torch.equal, after, embeddings))


@pytest.mark.parametrize("network", NETWORKS)
def test_default_leaves_pytorchs_own_weights(network: str) -> None:
    """``default`` changes nothing: a network is exactly the one PyTorch built from the same seed."""
    torch.manual_seed(0)
    built = NETWORKS[network]()
    torch.manual_seed(0)
    net = NETWORKS[network]()
    initialize_weights(net, "default")
    for (name, value), (built_name, built_value) in zip(
        net.state_dict().items(), built.state_dict().items(), strict=True
    ):
        assert name == built_name and torch.equal(value, built_value), name
    assert any(layer.bias is not None and layer.bias.abs().sum() > 0 for layer in weighted_layers(net))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("network", NETWORKS)
def test_the_seed_decides_the_weights(network: str, scheme: str) -> None:
    """The draw comes from torch's global generator: the run's seed, so the same seed gives the same net."""
    torch.manual_seed(0)
    built = NETWORKS[network]()

    def initialised(seed: int) -> list[torch.Tensor]:
        net = copy.deepcopy(built)
        torch.manual_seed(seed)
        initialize_weights(net, scheme)
        return [layer.weight.detach() for layer in weighted_layers(net)]

    first, again, other = initialised(1), initialised(1), initialised(2)
    assert all(map(torch.equal, first, again))
    assert not any(map(torch.equal, first, other))


def test_an_unknown_scheme_names_the_key_and_the_choices() -> None:
    """Built from Python (not the CLI), a typo still says which key is wrong and what it could be."""
    with pytest.raises(ValueError, match=r"^model\.weight_init: unknown scheme 'bogus'") as error:
        initialize_weights(NETWORKS["MLP"](), "bogus")  # type: ignore[arg-type]
    assert all(scheme in str(error.value) for scheme in get_args(WeightInit))


def test_the_task_initialises_its_network_once_when_built() -> None:
    """Classification applies the scheme to its network at construction; PyTorch's bound is far lower."""
    torch.manual_seed(0)
    net = models.SmallCNN(num_classes=10, in_channels=1)
    with mock.patch.object(task_base, "initialize_weights", wraps=initialize_weights) as spy:
        task = Classification(net=net, num_classes=10, weight_init="kaiming_uniform")
    spy.assert_called_once_with(net, "kaiming_uniform")
    convs = [layer for layer in task.net.modules() if isinstance(layer, nn.Conv2d)]
    assert len(convs) == 3
    for conv in convs:
        bound = math.sqrt(6 / fans(conv.weight)[0])  # PyTorch's own: 1/sqrt(fan_in), under 0.41 of it
        assert 0.9 * bound <= conv.weight.abs().max() <= bound


@pytest.mark.slow
def test_a_resume_under_an_initialisation_scheme_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheme runs when the module is built, never over a checkpoint's weights: a run stopped
    after its second epoch and resumed from ``last`` ends with the weights of one that never stopped."""
    he = ("--model.weight_init", "kaiming_uniform", "--trainer.max_epochs", "4", *EXACT)
    whole = train(tmp_path / "whole", *he)
    press_ctrl_c_when_epoch_starts(2, monkeypatch)
    with pytest.raises(SystemExit):
        train(tmp_path / "split", *he)
    monkeypatch.undo()
    spy = mock.patch.object(task_base, "initialize_weights", wraps=initialize_weights)
    with spy as initialised:
        resumed = train(tmp_path / "split", *he, "--ckpt_path", "last")
    initialised.assert_called_once()  # when the module was built, before the checkpoint's weights
    assert resumed.trainer.global_step == whole.trainer.global_step == 4 * STEPS_PER_EPOCH
    assert identical(last_weights(resumed), last_weights(whole))
