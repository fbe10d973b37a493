"""Which run a command acts on: the checkpoint that ``last`` means, the run directory a run writes
to, and whether a checkpoint fits the config it is resumed or predicted with.

A run lives in ``default_root_dir/<logger name>/version_N``: its ``config.yaml``, its logs and its
``checkpoints/``. A resumed run writes on into the directory of its checkpoint, so that its curves,
its best checkpoint and early stopping cover the whole run.
"""

import os
import re
import shlex
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_only

from {{ cookiecutter.package_name }}.engine.sizes import class_of, takes

RUN_PREFIX = "version_"
RESUMABLE = ("last.ckpt", "interrupted.ckpt")
LAUNCH_FILE = "launch.txt"
"""In a run's directory: the launch (SLURM job, torchrun run) whose restarts continue this run."""

# Settings that change how fast a run goes, not what it computes: they may differ on resume.
SPEED_ONLY = {"model.compile", "data.num_workers", "data.persistent_workers"}
# What a checkpoint's learning-rate schedule was planned for: the run's total optimizer steps.
HORIZON = ("max_epochs", "max_steps", "limit_train_batches", "accumulate_grad_batches")
SHOWN = 4
"""Differing settings named in a refusal; the rest are counted."""
# Keywords of a schedule with an end, saved in its state: a run's length was planned into them.
HORIZONS = ("total_steps", "T_max", "total_iters")


def experiment_dir(trainer: Namespace) -> Path:
    """Where the runs of this config's experiment live: ``default_root_dir/<logger name>``."""
    root = Path(trainer.default_root_dir)
    logger = trainer.get("logger")
    if isinstance(logger, Namespace):
        return root / (logger.get("init_args", Namespace()).get("name") or "")
    return root / "lightning_logs" if logger in (True, None) else root  # Lightning's own defaults


def find_last(experiment: Path) -> Path | None:
    """The newest ``last.ckpt`` or ``interrupted.ckpt`` of this experiment's runs.

    Only ``version_*/checkpoints`` right under the experiment (or its own ``checkpoints/``, when
    runs have no logger): another experiment or a tune trial nested below is never picked.
    """
    candidates = [
        path
        for name in RESUMABLE
        for pattern in (f"{RUN_PREFIX}*/checkpoints/{name}", f"checkpoints/{name}")
        for path in experiment.glob(pattern)
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def launch() -> tuple[str, int] | None:
    """``(id, restart)`` of a launch that restarts the same command: a SLURM job (requeued after a
    preemption or a time-limit signal) or torchrun's workers (``--max-restarts``); else None.

    The id stays the same across restarts; the restart count is 0 at the first start.
    """
    env = os.environ
    if "SLURM_JOB_ID" in env:
        array = env.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{env.get('SLURM_ARRAY_TASK_ID')}" if array else env["SLURM_JOB_ID"]
        elastic = int(env.get("TORCHELASTIC_RESTART_COUNT", 0))
        return f"slurm-{job}", int(env.get("SLURM_RESTART_COUNT", 0)) + elastic
    if "TORCHELASTIC_RESTART_COUNT" in env:
        return f"torchrun-{env.get('TORCHELASTIC_RUN_ID', 'none')}", int(env["TORCHELASTIC_RESTART_COUNT"])
    return None


def restart_count() -> int:
    started = launch()
    return 0 if started is None else started[1]


def run_of_launch(experiment: Path, launch_id: str) -> Path | None:
    """The newest run directory of this experiment that ``launch_id`` started, if any."""
    runs = [
        path.parent
        for path in experiment.glob(f"{RUN_PREFIX}*/{LAUNCH_FILE}")
        if path.read_text().strip() == launch_id
    ]
    return max(runs, key=lambda path: path.stat().st_mtime_ns, default=None)


def newest_in(checkpoints: Path) -> Path | None:
    """The newest ``last.ckpt`` or ``interrupted.ckpt`` in one run's ``checkpoints`` directory."""
    saved = [path for name in RESUMABLE if (path := checkpoints / name).is_file()]
    return max(saved, key=lambda path: path.stat().st_mtime_ns, default=None)


def restart_point(experiment: Path) -> tuple[Path, Path | None] | None:
    """On a restart of a launch: its run directory and the checkpoint to continue from (None: the
    restart came before the first checkpoint); None on a first start or outside such launches."""
    started = launch()
    if started is None or started[1] == 0:
        return None
    run = run_of_launch(experiment, started[0])
    return None if run is None else (run, newest_in(run / "checkpoints"))


def run_of(checkpoint: Path, experiment: Path) -> int | None:
    """The version of the run the checkpoint belongs to, if that run is one of this experiment's."""
    run_dir = checkpoint.resolve().parent.parent
    number = run_dir.name.removeprefix(RUN_PREFIX)
    if run_dir.parent != experiment.resolve() or not run_dir.name.startswith(RUN_PREFIX):
        return None
    return int(number) if number.isdigit() else None


def claim_run(experiment: Path) -> int:
    """Creates the next free ``version_N`` and returns N.

    ``os.mkdir`` fails for all but one of several processes that create the same directory, so
    runs started at the same moment get distinct directories (listing, then creating, would not).
    """
    experiment.mkdir(parents=True, exist_ok=True)
    taken = (path.name.removeprefix(RUN_PREFIX) for path in experiment.glob(f"{RUN_PREFIX}*"))
    version = max((int(number) for number in taken if number.isdigit()), default=-1) + 1
    while True:
        try:
            os.mkdir(experiment / f"{RUN_PREFIX}{version}")
            return version
        except FileExistsError:
            version += 1


def make_root_absolute(trainer: Namespace) -> None:
    """Records ``default_root_dir`` (and the logger's directory under it) as an absolute path, so
    that the run's ``config.yaml`` and the commands printed for it work from any directory."""
    root = str(Path(trainer.default_root_dir).resolve())
    logger = trainer.get("logger")
    if (
        isinstance(logger, Namespace)
        and logger.get("init_args", Namespace()).get("save_dir") == trainer.default_root_dir
    ):
        logger.init_args.save_dir = root
    trainer.default_root_dir = root


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's entries; memory-mapped, so that its weights are not read."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def flatten(values: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for name, value in values.items():
        if name == "_instantiator":  # how Lightning rebuilds the object, not a setting
            continue
        key = f"{prefix}.{name.removeprefix('_')}"
        if isinstance(value, Mapping):
            yield from flatten(value, key)
        else:
            yield key, list(value) if isinstance(value, tuple) else value


def differing_settings(
    checkpoint: Mapping[str, Any], model: Mapping[str, Any], data: Mapping[str, Any], predicting: bool
) -> list[str]:
    """``key (checkpoint A, config B)`` for each model and data setting where the two differ.

    Training compares everything: the network must match the weights, and the restored optimizer
    and schedule states would silently override a changed learning rate or horizon. Predicting
    rebuilds the model from the checkpoint (as export does), so only the data must match: its
    splits decide which samples are predicted.
    """
    saved = dict(flatten(checkpoint.get("hyper_parameters", {}), "model"))
    saved |= dict(flatten(checkpoint.get("datamodule_hyper_parameters", {}), "data"))
    given = dict(flatten(model, "model")) | dict(flatten(data, "data"))
    ignored = SPEED_ONLY | ({"model", "data.batch_size"} if predicting else set())
    return [
        f"{key} (checkpoint {saved.get(key)!r}, config {given.get(key)!r})"
        for key in sorted(saved.keys() | given.keys())
        if saved.get(key) != given.get(key) and not any(key == i or key.startswith(f"{i}.") for i in ignored)
    ]


def run_length(trainer: L.Trainer) -> dict[str, Any]:
    """The Trainer's settings that decide a run's total optimizer steps, as plain values."""
    return {key: getattr(trainer, key) for key in HORIZON}


def changed_horizon(checkpoint: Mapping[str, Any], trainer: L.Trainer) -> list[str]:
    """``trainer.KEY (checkpoint A, config B)`` for each setting that would move the end of the
    checkpoint's learning-rate schedule, if the schedule has an end (one-cycle, cosine, linear ...;
    not a step or exponential decay). The settings travel in the checkpoint, copied or not."""
    schedules = checkpoint.get("lr_schedulers") or []
    if not any(key in schedule for schedule in schedules for key in HORIZONS):
        return []
    saved = next((state["horizon"] for state in checkpoint.get("callbacks", {}).values()
                  if isinstance(state, Mapping) and "horizon" in state), None)  # fmt: skip
    if saved is None:
        return []
    now = run_length(trainer)
    return [
        f"trainer.{key} (checkpoint {saved.get(key)!r}, config {now[key]!r})"
        for key in HORIZON
        if saved.get(key) != now[key]
    ]


def checkpoint_misfit(
    path: Path, trainer: L.Trainer, model: L.LightningModule, data: L.LightningDataModule, evaluating: bool
) -> str | None:
    """The one-line refusal of a checkpoint whose settings differ from the config, or None.

    Its weights would not fit the network, or its restored optimizer and schedule states would
    silently override the config's values (a learning rate, the schedule's horizon). Evaluating
    (validate, test, predict) rebuilds the model from the checkpoint, so only the data must match.
    """
    if path.is_dir():  # FSDP's sharded checkpoint: Lightning checks it as it loads
        return None
    checkpoint = load_checkpoint(path)
    differing = differing_settings(checkpoint, model.hparams, data.hparams, evaluating)
    if differing:
        shown = "; ".join(differing[:SHOWN]) + (
            f"; and {len(differing) - SHOWN} more" if differing[SHOWN:] else ""
        )
        saved_config = path.resolve().parent.parent / "config.yaml"
        again = ["python", "train.py", "--config", str(saved_config), "--ckpt_path", str(path.resolve())]
        fix = (
            f"continue it with its run's settings: {shlex.join(again)}"
            if saved_config.is_file()
            else "continue it, give the settings it was made with"
        )
        return f"ckpt_path: {path} was made with other settings: {shown}. To {fix}; or start a new run"
    changed = [] if evaluating else changed_horizon(checkpoint, trainer)
    if changed:
        return (
            f"ckpt_path: the learning-rate schedule of {path} ends where its run was planned to;"
            f" {'; '.join(changed)}. To train longer, start a new run (with --model.scheduler null"
            " if it may be extended later)"
        )
    return None


def run_version(experiment: Path, ckpt_path: str | None, restarted_run: Path | None) -> int:
    """The run a restart continues, the checkpoint's own run when resuming one of this experiment's,
    else a new directory, claimed so that concurrent starts differ. A run under SLURM or torchrun
    records its launch, for the launch's restarts to find."""
    if restarted_run is not None:
        version = int(restarted_run.name.removeprefix(RUN_PREFIX))
    else:
        resumed = run_of(Path(ckpt_path), experiment) if ckpt_path else None
        version = claim_run(experiment) if resumed is None else resumed
    started = launch()
    if started is not None:
        (experiment / f"{RUN_PREFIX}{version}" / LAUNCH_FILE).write_text(started[0] + "\n")
    return version


def fix_run_version(trainer: Namespace, ckpt_path: str | None, restarted_run: Path | None) -> Path | None:
    """Sets the logger's own ``version`` argument to the run's ``version_N`` (``run_version``) before
    the logger is built, and returns that run directory; None where the logger picks its own (no
    logger of that kind, a version the config sets, fast_dev_run's, DDP's other processes).

    ``config.yaml`` records no version (``forget_run_version``): given again without ``--ckpt_path``,
    it starts a new run instead of writing into this one.
    """
    logger = trainer.get("logger")
    if not isinstance(logger, Namespace) or trainer.get("fast_dev_run") or rank_zero_only.rank != 0:
        return None
    init_args = logger.get("init_args") or Namespace()
    if not takes(class_of(logger.class_path), "version") or init_args.get("version") is not None:
        return None
    experiment = experiment_dir(trainer)
    init_args.version = run_version(experiment, ckpt_path, restarted_run)
    logger.init_args = init_args
    run = experiment / f"{RUN_PREFIX}{init_args.version}"
    if not unused(run):  # a resumed run writes on into its own checkpoints/, as it should
        expect_checkpoints_in(run)
    return run


def forget_run_version(trainer: Namespace) -> None:
    """Once the logger is built: the version ``fix_run_version`` set is no setting of the run."""
    logger = trainer.get("logger")
    if isinstance(logger, Namespace) and logger.get("init_args") is not None:
        logger.init_args.version = None


def expect_checkpoints_in(run: Path) -> None:
    """Silences Lightning's warning that ``run``'s ``checkpoints/`` is not empty, for that directory
    alone: a resumed run writes on into it, as it should."""
    directory = re.escape(str(run / "checkpoints"))
    warnings.filterwarnings("ignore", message=f"Checkpoint directory {directory} exists and is not empty")


def fix_run_dir_without_logger(trainer: Namespace, ckpt_path: str | None, restarted_run: Path | None) -> bool:
    """With ``--trainer.logger false`` Lightning writes checkpoints and ``config.yaml`` straight into
    ``default_root_dir``, where the next run would overwrite them: each run gets its ``version_N``
    there too, as ``default_root_dir``. Decided on rank 0; the others learn the checkpoint
    directory from it (ModelCheckpoint broadcasts it) and write nothing else. True if it is new."""
    if trainer.get("logger") is not False or rank_zero_only.rank != 0:
        return False
    experiment = Path(trainer.default_root_dir)
    run = experiment / f"{RUN_PREFIX}{run_version(experiment, ckpt_path, restarted_run)}"
    trainer.default_root_dir = str(run)
    if not unused(run):  # a resumed run's
        expect_checkpoints_in(run)
        return False
    return True


def unused(run: Path) -> bool:
    """Whether a run directory holds nothing but its launch record."""
    return run.is_dir() and all(path.name == LAUNCH_FILE for path in run.iterdir())
