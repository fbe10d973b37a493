"""Learning-rate schedules by keyword; a horizon (``total_steps``, ``T_max``, ``total_iters``) the config
leaves unset is the run's length: optimizer steps, or epochs with ``interval: epoch``."""

import contextlib
import inspect
from typing import Any

from torch.optim import Optimizer, lr_scheduler

HORIZONS = ("total_steps", "T_max", "total_iters")


def unset_horizon(make: Any) -> str | None:
    """The horizon keyword that ``make`` (a class or partial) leaves None. jsonargparse's partials hold every
    config argument as a keyword; a hand-written one only those it sets (its signature has the rest)."""
    arguments = dict(getattr(make, "keywords", {}))
    with contextlib.suppress(TypeError, ValueError):  # a callable without a readable signature
        arguments = {name: p.default for name, p in inspect.signature(make).parameters.items()} | arguments
    return next((name for name in HORIZONS if name in arguments and arguments[name] is None), None)


def build_scheduler(make: Any, optimizer: Optimizer, horizon: int) -> Any:
    """The scheduler, with ``horizon`` passed by its own keyword where the config left it unset."""
    keyword = unset_horizon(make)
    if keyword is None:
        return make(optimizer)
    if horizon < 1:
        raise ValueError(
            f"model.scheduler: {keyword} comes from the run's length, which is not known (set it)"
        )
    return make(optimizer, **{keyword: horizon})


class OneCycleLR(lr_scheduler.OneCycleLR):
    """torch's, peaking at the optimizer's learning rate unless ``max_lr`` is given."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float] | None = None,
        total_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        peak = [group["lr"] for group in optimizer.param_groups] if max_lr is None else max_lr
        super().__init__(optimizer, max_lr=peak, total_steps=total_steps, **kwargs)


class CosineAnnealingLR(lr_scheduler.CosineAnnealingLR):
    """torch's, with ``T_max`` optional: the run's length."""

    def __init__(self, optimizer: Optimizer, T_max: int | None = None, **kwargs: Any) -> None:  # noqa: N803
        super().__init__(optimizer, T_max=T_max, **kwargs)  # type: ignore[arg-type]


class LinearLR(lr_scheduler.LinearLR):
    """torch's, with ``total_iters`` the run's length unless given (not 5)."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, **kwargs: Any) -> None:
        super().__init__(optimizer, total_iters=total_iters, **kwargs)  # type: ignore[arg-type]


class PolynomialLR(lr_scheduler.PolynomialLR):
    """torch's, with ``total_iters`` the run's length unless given (not 5)."""

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, **kwargs: Any) -> None:
        super().__init__(optimizer, total_iters=total_iters, **kwargs)  # type: ignore[arg-type]
