"""Wall time from ``python train.py`` to the first epoch at 97% validation accuracy, and the CLI's start-up.

Bakes the default project and runs it as a user would (``python train.py``, default config, only
the log directory moved to a scratch folder), with ``PYTHONPATH=<project>/src`` instead of an
install. When a run has ended, the first ``val/acc`` point at or above the threshold is read from
its TensorBoard event file: the logger stamps every point with the wall-clock time it was logged,
so the time to accuracy is that stamp minus the moment the process was started.

Start-up is timed apart, in alternation: ``python train.py --help`` (imports the project, builds
the parser) against ``python -c "import lightning"`` (the floor any Lightning script pays); their
difference is what the CLI adds. The time to accuracy after start-up is the first figure less the
median ``--help`` time.

Rich draws the progress bar as on a terminal (into a log file), so its cost is counted; ``--no-tty``
runs it as a batch job whose output goes to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import bake, machine, to_flags

TARGET_AFTER_STARTUP_S = 15.0
TARGET_STARTUP_OVERHEAD_S = 0.5


def project_env(project: Path, tty: bool) -> dict[str, str]:
    """The environment of every run: the baked sources first on the path, nothing installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project / "src"), env.get("PYTHONPATH")]))
    if tty:
        env["TTY_COMPATIBLE"] = "1"  # Rich draws as on a terminal, although stdout is a file
    else:
        env.pop("TTY_COMPATIBLE", None)
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``command`` from process start to exit; fails loudly if it fails.

    The CPU time barely moves when other jobs share the machine, so it tells a real change of
    the start-up from noise in the wall time.
    """
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, cpu


def startup_times(
    project: Path, env: dict[str, str], repetitions: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, CPU) seconds of ``train.py --help`` and ``import lightning`` in turn, after an untimed pair."""
    help_command = [sys.executable, "train.py", "--help"]
    import_command = [sys.executable, "-c", "import lightning"]
    timed_run(help_command, project, env)  # untimed: fills the page cache
    timed_run(import_command, project, env)
    helps, imports = [], []
    for _ in range(repetitions):
        helps.append(timed_run(help_command, project, env))
        imports.append(timed_run(import_command, project, env))
    return helps, imports


class ValAccuracyWatcher:
    """Reads the ``val/acc`` points of a run's TensorBoard event files as they grow.

    The logger flushes after every write, so a point is on disk by the end of its epoch. Each file
    is re-read only when its size changed, and then only from where the last read stopped.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.accumulators: dict[Path, Any] = {}
        self.sizes: dict[Path, int] = {}
        self.points: dict[Path, list[tuple[float, float]]] = {}

    def poll(self) -> list[tuple[float, float]]:
        """(wall time, value) of every point so far, oldest first."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for path in self.log_dir.rglob("events.out.tfevents.*"):
            size = path.stat().st_size
            if self.sizes.get(path) == size:
                continue
            self.sizes[path] = size
            if path not in self.accumulators:
                self.accumulators[path] = EventAccumulator(str(path), size_guidance={"scalars": 0})
            accumulator = self.accumulators[path]
            accumulator.Reload()
            if "val/acc" in accumulator.Tags()["scalars"]:
                self.points[path] = [
                    (event.wall_time, event.value) for event in accumulator.Scalars("val/acc")
                ]
        return sorted(point for points in self.points.values() for point in points)


def first_reached(points: list[tuple[float, float]], threshold: float) -> tuple[int, float] | None:
    """(epoch, wall time) of the first point at or above ``threshold``; one point per epoch."""
    return next(((epoch, stamp) for epoch, (stamp, value) in enumerate(points) if value >= threshold), None)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ends a run as a scheduler would (SIGTERM: it saves a checkpoint and exits), killing it if stuck."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def training_run(
    project: Path, env: dict[str, str], root: Path, overrides: list[str], threshold: float, to_the_end: bool
) -> dict[str, Any]:
    """One ``python train.py``: when it first reached ``threshold``, counted from the process start.

    Stopped as soon as the threshold shows in the event file unless ``to_the_end``; the time comes
    from the logger's own stamp, so the polling interval does not enter it.
    """
    command = [sys.executable, "train.py", f"--trainer.default_root_dir={root}", *overrides]
    log = root.with_suffix(".log")
    watcher = ValAccuracyWatcher(root)
    with log.open("w") as output:
        started = time.time()
        process = subprocess.Popen(command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(0.5)
            if not to_the_end and first_reached(watcher.poll(), threshold) is not None:
                stop(process)
                break
        total = time.time() - started
    finished = process.returncode == 0
    if not finished and (to_the_end or first_reached(watcher.poll(), threshold) is None):
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{tail}")
    points = watcher.poll()
    reached = first_reached(points, threshold)
    return {
        "seconds_to_threshold": reached[1] - started if reached else None,
        "epoch": reached[0] if reached else None,
        "epochs_run": len(points),
        "best_val_acc": max((value for _, value in points), default=0.0),
        "total_seconds": total if finished else None,
    }


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one training run, 2 start-up pairs")
    parser.add_argument("--runs", type=int, help="training runs (default 3, --quick 1)")
    parser.add_argument("--startup-repetitions", type=int, help="start-up pairs (default 7, --quick 2)")
    parser.add_argument("--threshold", type=float, default=0.97, help="validation accuracy to reach")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the project's CLI for the training runs, e.g. data.num_workers=0 (repeatable)",
    )
    parser.add_argument(
        "--to-the-end",
        action="store_true",
        help="let every run finish (fit and test) instead of stopping it at the threshold",
    )
    parser.add_argument("--no-tty", action="store_true", help="let Rich see a log file, not a terminal")
    options = parser.parse_args()
    options.runs = options.runs or (1 if options.quick else 3)
    options.startup_repetitions = options.startup_repetitions or (2 if options.quick else 7)
    return options


def verdict(value: float | None, target: float) -> str:
    return "not reached" if value is None else ("met" if value < target else "not met")


def main() -> None:
    options = parse_options()
    flags = to_flags(options.override)
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="time-to-accuracy-") as scratch:
        project = bake(Path(scratch))
        env = project_env(project, tty=not options.no_tty)
        helps, imports = startup_times(project, env, options.startup_repetitions)
        help_s, import_s = (statistics.median(wall for wall, _ in pairs) for pairs in (helps, imports))
        help_cpu, import_cpu = (statistics.median(cpu for _, cpu in pairs) for pairs in (helps, imports))
        for label, median, cpu, times in (
            ("python train.py --help", help_s, help_cpu, helps),
            ("python -c 'import lightning'", import_s, import_cpu, imports),
        ):
            walls = " ".join(f"{wall:.2f}" for wall, _ in times)
            print(f"{label:29s} median {median:.2f} s wall, {cpu:.2f} s CPU  (walls: {walls})")
        runs = []
        for index in range(options.runs):
            root = Path(scratch) / f"run{index}"
            run = training_run(project, env, root, flags, options.threshold, options.to_the_end)
            runs.append(run)
            seconds = run["seconds_to_threshold"]
            reached = f"{seconds:.1f} s, epoch {run['epoch']}" if seconds is not None else "never"
            whole = run["total_seconds"]
            ending = f"whole run (fit + test) {whole:.1f} s" if whole is not None else "stopped there"
            print(
                f"run {index + 1}: val/acc >= {options.threshold:.2f} after {reached};"
                f" best {run['best_val_acc']:.4f} in {run['epochs_run']} epochs; {ending}",
                flush=True,
            )
    times = [run["seconds_to_threshold"] for run in runs]
    to_accuracy = statistics.median(times) if None not in times else None  # type: ignore[type-var]
    after_startup = to_accuracy - help_s if to_accuracy is not None else None
    overhead = help_s - import_s
    summary = {
        "seconds_to_accuracy": to_accuracy,
        "startup_seconds": help_s,
        "import_lightning_seconds": import_s,
        "startup_overhead_seconds": overhead,
        "startup_overhead_cpu_seconds": help_cpu - import_cpu,
        "seconds_after_startup": after_startup,
    }
    print(json.dumps(summary))
    if to_accuracy is None or after_startup is None:
        print(f"time to {options.threshold:.0%} validation accuracy: not reached in every run")
    else:
        print(f"time to {options.threshold:.0%} validation accuracy, start-up included: {to_accuracy:.1f} s")
        print(
            f"after start-up: {after_startup:.1f} s (target < {TARGET_AFTER_STARTUP_S:.0f} s:"
            f" {verdict(after_startup, TARGET_AFTER_STARTUP_S)})"
        )
    print(
        f"start-up overhead of the CLI over import lightning: {overhead:.2f} s"
        f" (target < {TARGET_STARTUP_OVERHEAD_S} s: {verdict(overhead, TARGET_STARTUP_OVERHEAD_S)});"
        f" in CPU time {help_cpu - import_cpu:.2f} s"
    )


if __name__ == "__main__":
    main()
