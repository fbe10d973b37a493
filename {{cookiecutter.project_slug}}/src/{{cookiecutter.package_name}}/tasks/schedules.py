"""Learning-rate schedules as torch defines them, and the run's length for the ones that need it.

Any scheduler class (torch's or your own) is built from the optimizer and its config arguments,
all by keyword. Where a schedule has a horizon keyword (``total_steps``, ``T_max``, ``total_iters``)
that the config leaves unset (null), the task passes the run's length by that keyword: optimizer
steps with ``interval: step``, epochs with ``interval: epoch``. torch makes ``T_max`` of its
``CosineAnnealingLR`` required and gives ``total_iters`` a default of 5; the classes below leave
them unset instead, and take ``OneCycleLR``'s peak from the optimizer's learning rate.
"""

import inspect
from typing import Any, Literal

from torch.optim import Optimizer, lr_scheduler

HORIZONS = ("total_steps", "T_max", "total_iters")


def unset_horizon(make: Any) -> str | None:
    """The horizon keyword that ``make`` (a class, or a partial of one) takes and leaves unset (None).

    jsonargparse's partials carry every argument of the config as a keyword; a partial written in
    Python carries only those it sets, and its signature shows the class's defaults for the rest.
    """
    keywords = getattr(make, "keywords", {})
    given = next((name for name in HORIZONS if name in keywords), None)
    if given is not None:
        return given if keywords[given] is None else None
    try:
        parameters = inspect.signature(make).parameters
    except (TypeError, ValueError):  # a callable without a readable signature: nothing to fill
        return None
    return next((name for name in HORIZONS if name in parameters and parameters[name].default is None), None)


def build_scheduler(make: Any, optimizer: Optimizer, horizon: int) -> Any:
    """The scheduler, with ``horizon`` passed by its own keyword where the config left it unset."""
    keyword = unset_horizon(make)
    if keyword is not None and horizon < 1:
        raise ValueError(
            f"model.scheduler: {keyword} comes from the run's length, which is not known (set it)"
        )
    return make(optimizer, **({keyword: horizon} if keyword else {}))


def given(value: int | None, name: str) -> int:
    """The horizon that ``build_scheduler`` passes; built without it, the schedule could not end."""
    if value is None:
        raise ValueError(
            f"model.scheduler.init_args.{name}: build the schedule with build_scheduler, or set it"
        )
    return value


class OneCycleLR(lr_scheduler.OneCycleLR):
    """torch's, with ``max_lr`` the optimizer's learning rate unless given, and ``total_steps`` the run's."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | None = None,
        total_steps: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        peak = max_lr if max_lr is not None else [group["lr"] for group in optimizer.param_groups]
        super().__init__(
            optimizer, max_lr=peak, total_steps=total_steps, pct_start=pct_start,
            anneal_strategy=anneal_strategy, div_factor=div_factor, final_div_factor=final_div_factor,
        )  # fmt: skip


class CosineAnnealingLR(lr_scheduler.CosineAnnealingLR):
    """torch's, with ``T_max`` the run's length unless given."""

    def __init__(self, optimizer: Optimizer, T_max: int | None = None, eta_min: float = 0.0) -> None:  # noqa: N803
        super().__init__(optimizer, T_max=given(T_max, "T_max"), eta_min=eta_min)


class LinearLR(lr_scheduler.LinearLR):
    """torch's, with ``total_iters`` the run's length unless given."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1 / 3,
        end_factor: float = 1.0,
        total_iters: int | None = None,
    ) -> None:
        iters = given(total_iters, "total_iters")
        super().__init__(optimizer, start_factor=start_factor, end_factor=end_factor, total_iters=iters)


class PolynomialLR(lr_scheduler.PolynomialLR):
    """torch's, with ``total_iters`` the run's length unless given."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, power: float = 1.0) -> None:
        super().__init__(optimizer, total_iters=given(total_iters, "total_iters"), power=power)
