"""Which run a command acts on: the checkpoint ``last`` means, the ``version_N`` directory a run writes
to (a resumed run writes on into its own), and whether a checkpoint fits the config."""

import os
import re
import warnings
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_only

from {{ cookiecutter.package_name }}.engine.sizes import class_of, takes

RUN_PREFIX = "version_"
RESUMABLE = ("last.ckpt", "interrupted.ckpt")
LAUNCH_FILE = "launch.txt"  # in a run's directory: the SLURM job or torchrun run whose restarts continue it


def experiment_dir(trainer: Namespace) -> Path:
    """Where this config's runs live: ``default_root_dir/<logger name>``."""
    root = Path(trainer.default_root_dir)
    logger = trainer.get("logger")
    if isinstance(logger, Namespace):
        return root / (logger.get("init_args", Namespace()).get("name") or "")
    return root / "lightning_logs" if logger in (True, None) else root  # Lightning's own defaults


def newest_in(*checkpoints: Path) -> Path | None:
    """The newest ``last.ckpt`` or ``interrupted.ckpt`` in these ``checkpoints`` directories."""
    saved = [path for folder in checkpoints for name in RESUMABLE if (path := folder / name).exists()]
    return max(saved, key=lambda path: path.stat().st_mtime_ns, default=None)


def find_last(experiment: Path) -> Path | None:
    """What ``last`` means: the newest of this experiment's runs, never of one nested below it."""
    return newest_in(experiment / "checkpoints", *experiment.glob(f"{RUN_PREFIX}*/checkpoints"))


def launch() -> tuple[str, int] | None:
    """``(id, restart)`` of a SLURM job or torchrun's workers: the id stays the same across restarts."""
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


def restart_point(experiment: Path) -> tuple[Path, Path | None] | None:
    """On a launch's restart: the run it started and its newest checkpoint (None: none yet)."""
    started = launch()
    if started is None or started[1] == 0:
        return None
    records = experiment.glob(f"{RUN_PREFIX}*/{LAUNCH_FILE}")
    runs = [record.parent for record in records if record.read_text().strip() == started[0]]
    run = max(runs, key=lambda path: path.stat().st_mtime_ns, default=None)
    return None if run is None else (run, newest_in(run / "checkpoints"))


def make_root_absolute(trainer: Namespace) -> None:
    """So that the run's ``config.yaml`` and the commands printed for it work from any directory."""
    trainer.default_root_dir = str(Path(trainer.default_root_dir).resolve())
    logger = trainer.get("logger")
    if isinstance(logger, Namespace) and "save_dir" in (logger.get("init_args") or Namespace()):
        logger.init_args.save_dir = trainer.default_root_dir  # linked to it (TrainCLI)


def resolve_ckpt_path(
    trainer: Namespace, ckpt_path: str | None, evaluating: bool
) -> tuple[str | None, Path | None, list[str]]:
    """The checkpoint to start from (a restart's own, ``last``'s newest, or the path given), the run a
    launch's restart continues, and notes to print; a ValueError names what is missing."""
    make_root_absolute(trainer)
    experiment, run, notes = experiment_dir(trainer), None, []
    restart = None if evaluating else restart_point(experiment)
    if restart is not None:  # SLURM's requeue, torchrun's restart: the same command, the same run
        run, newest = restart
        notes.append(f"Restart {restart_count()} of this job: continuing {run}")
        if newest is not None or ckpt_path == "last":
            ckpt_path = None if newest is None else str(newest)
    if ckpt_path == "last":
        ckpt_path = None if (newest := find_last(experiment)) is None else str(newest)
        if ckpt_path is None and evaluating:
            raise ValueError(f"ckpt_path: 'last' found no last.ckpt or interrupted.ckpt in {experiment}")
        if ckpt_path is None:  # Lightning's own meaning: nothing to resume yet, so start
            notes.append(f"ckpt_path: 'last' found no checkpoint in {experiment}; starting a new run")
    elif ckpt_path is not None and not Path(ckpt_path).exists():  # (FSDP saves folders)
        raise ValueError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    return ckpt_path, run, notes


def claim_run(experiment: Path) -> Path:
    """Creates the next free ``version_N``: ``mkdir`` succeeds in one of several concurrent starts only."""
    experiment.mkdir(parents=True, exist_ok=True)
    taken = (path.name.removeprefix(RUN_PREFIX) for path in experiment.glob(f"{RUN_PREFIX}*"))
    version = max((int(number) for number in taken if number.isdigit()), default=-1) + 1
    while True:
        run = experiment / f"{RUN_PREFIX}{version}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            version += 1


def fix_run_dir(trainer: Namespace, ckpt_path: str | None, restarted_run: Path | None) -> Path | None:
    """Sets the run's ``version_N`` (a restart's or resumed checkpoint's own, else a new one) as the logger's
    version, or as ``default_root_dir`` without a logger; None where Lightning or the config picks one."""
    logger = trainer.get("logger")
    init_args = (logger.get("init_args") or Namespace()) if isinstance(logger, Namespace) else Namespace()
    ours = logger is False or (
        isinstance(logger, Namespace)
        and not trainer.get("fast_dev_run")
        and takes(class_of(logger.class_path), "version") is not None
    )
    if not ours or init_args.get("version") is not None or rank_zero_only.rank != 0:
        return None
    experiment = experiment_dir(trainer)
    resumed = Path(ckpt_path).resolve().parent.parent if ckpt_path else None  # the run of its checkpoints/
    if restarted_run is not None:
        run = restarted_run
    elif resumed and resumed.parent == experiment.resolve() and re.fullmatch(r"version_\d+", resumed.name):
        run = experiment / resumed.name
    else:
        run = claim_run(experiment)
    if (started := launch()) is not None:
        (run / LAUNCH_FILE).write_text(started[0] + "\n")
    if logger is False:  # Lightning would write straight into default_root_dir, over the last run
        trainer.default_root_dir = str(run)
    else:
        init_args.version = int(run.name.removeprefix(RUN_PREFIX))
        logger.init_args = init_args
    if not unused(run):  # a resumed run writes on into its own checkpoints/, as it should
        directory = re.escape(str(run / "checkpoints"))
        warnings.filterwarnings("ignore", message=f"Checkpoint directory {directory} exists and is not empty")
    return run


def unused(run: Path) -> bool:
    """Whether a run directory holds nothing but its launch record."""
    return run.is_dir() and all(path.name == LAUNCH_FILE for path in run.iterdir())
