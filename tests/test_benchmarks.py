"""The benchmarks still run against the current template and print their figures (not their speed)."""

import json
import re
import sys

import pytest

from conftest import TEMPLATE, run

BENCHMARKS = TEMPLATE / "benchmarks"


def test_overhead_prints_the_three_loops_and_the_ratio_last() -> None:
    result = run(sys.executable, BENCHMARKS / "overhead.py", "--quick", cwd=TEMPLATE, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    medians = {}
    for name, label, epochs in (
        ("A", "project fit loop", 2),
        ("B", "hand-written loop", 6),  # one B beside each of A's and C's epochs, and one after each fit
        ("C", "Lightning floor", 2),
    ):
        found = re.search(rf"{name} \({label}\): median ([\d.]+) s/epoch over {epochs} epochs", result.stdout)
        assert found, result.stdout
        medians[name] = float(found[1])
    ratios = re.search(r"ratios of the medians: A/B ([\d.]+) .*, C/B ([\d.]+), A/C ([\d.]+) ", result.stdout)
    assert ratios, result.stdout
    for (top, bottom), printed in zip(("AB", "CB", "AC"), ratios.groups(), strict=True):
        assert abs(float(printed) - medians[top] / medians[bottom]) <= 0.01
    assert re.search(r"throughput, .*: A \d+, B \d+, C \d+", result.stdout), result.stdout
    per_step = r"per training step, median: A ([\d.]+) ms, B ([\d.]+) ms, C ([\d.]+) ms; A/B ([\d.]+)"
    step = re.search(per_step, result.stdout)
    assert step and abs(float(step[4]) - float(step[1]) / float(step[2])) <= 0.01, result.stdout
    besides = r"per epoch besides its training steps .*: A -?\d+ ms, B -?\d+ ms, C -?\d+ ms"
    assert re.search(besides, result.stdout), result.stdout
    outside = r"per epoch outside its training steps, .*: A -?\d+ ms, C -?\d+ ms; A/C (-?[\d.]+|inf) \(target"
    assert re.search(outside, result.stdout), result.stdout
    ratio = re.fullmatch(r"overhead ratio: (\d+\.\d\d)", lines[-1])
    assert ratio, lines[-1]
    assert abs(float(ratio[1]) - medians["A"] / medians["B"]) <= 0.01  # the last line: A/B of the medians


def test_overhead_on_cuda_without_a_gpu_fails_in_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run(sys.executable, BENCHMARKS / "overhead.py", "--device", "cuda", cwd=TEMPLATE, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""  # fails before any work
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    assert "--device cuda needs a CUDA device" in result.stderr


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
