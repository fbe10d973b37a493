"""Learning-rate schedules that take their horizon from the run: ``(optimizer, total_steps)``.

``Classifier`` builds its schedule with the optimizer and the run's total number of optimizer steps
(computed by the Trainer from the epochs, the batches and gradient accumulation) and steps it after
every optimizer step. torch's ``CosineAnnealingLR`` and ``PolynomialLR`` already take the horizon as
their second argument and are used as they are; ``OneCycleLR`` below is torch's, reordered.
"""

from typing import Literal

from torch.optim import Optimizer, lr_scheduler


class OneCycleLR(lr_scheduler.OneCycleLR):
    """torch's ``OneCycleLR`` with the horizon as its second argument, and the peak learning rate
    the optimizer's by default, so that the learning rate is set in one place (the optimizer).

    torch's takes ``max_lr`` second and the horizon as a keyword, which would leave the run's
    length to be typed into the config by hand, and go stale when ``max_epochs`` changes.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        max_lr: float | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        peak = max_lr if max_lr is not None else [group["lr"] for group in optimizer.param_groups]
        super().__init__(
            optimizer,
            max_lr=peak,
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        )
