"""The benchmarks still run against the current template and print their figures (not their speed)."""

import json
import re
import sys

from conftest import TEMPLATE, run

BENCHMARKS = TEMPLATE / "benchmarks"


def test_overhead_prints_both_loops_and_the_ratio_last() -> None:
    result = run(sys.executable, BENCHMARKS / "overhead.py", "--quick", cwd=TEMPLATE, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    a_median = re.search(r"A \(project fit loop\): median ([\d.]+) s/epoch over 2 epochs", result.stdout)
    b_median = re.search(r"B \(hand-written loop\): median ([\d.]+) s/epoch over 3 epochs", result.stdout)
    assert a_median and b_median, result.stdout
    ratio = re.fullmatch(r"overhead ratio: (\d+\.\d\d)", lines[-1])
    assert ratio, lines[-1]
    expected = float(a_median[1]) / float(b_median[1])
    assert abs(float(ratio[1]) - expected) <= 0.01  # the last line is the ratio of the two medians


def test_time_to_accuracy_reaches_97_percent_and_reports_start_up() -> None:
    result = run(
        sys.executable, BENCHMARKS / "time_to_accuracy.py", "--quick", "--startup-repetitions", "1",
        cwd=TEMPLATE, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert summary["seconds_to_accuracy"] > summary["startup_seconds"] > 0  # training comes after start-up
    assert summary["import_lightning_seconds"] > 0
    assert re.search(r"run 1: val/acc >= 0\.97 after [\d.]+ s, epoch \d+", result.stdout), result.stdout
    assert "start-up overhead of the CLI over import lightning:" in result.stdout.splitlines()[-1]
