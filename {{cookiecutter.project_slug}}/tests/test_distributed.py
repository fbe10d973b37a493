"""Several processes through the same train.py: DDP on CPU (gloo), data sharding, strategy configs."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.data import DigitsDataModule, EpochSeededSampler

from conftest import PROJECT_ROOT, RunCLI, train

ACCURACY_TOLERANCE = 0.03
"""DDP and one process see the same samples per step but in another order: close, not equal."""


def test_each_process_gets_its_own_share_of_every_epoch() -> None:
    datamodule = DigitsDataModule(num_workers=0)
    datamodule.setup()
    train_split = datamodule.splits["train"]
    shares = [list(EpochSeededSampler(train_split, seed=3, num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == (len(train_split) + 1) // 2
    assert set(shares[0]) | set(shares[1]) == set(range(len(train_split)))
    assert len(set(shares[0]) & set(shares[1])) <= 1  # one index repeats to even out an odd count


def test_ddp_on_two_cpu_processes_trains_like_one_process(tmp_path: Path) -> None:
    common = (
        "--trainer.max_epochs", "5", "--trainer.enable_progress_bar", "false", "--data.num_workers", "0",
    )  # fmt: skip
    # The same global batch of 64: 2 processes x 32, or 1 process x 64.
    ddp_root = tmp_path / "ddp"
    command = [
        sys.executable, "train.py", "--trainer.default_root_dir", str(ddp_root),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--data.batch_size", "32", *common,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = train(tmp_path / "single", "--trainer.accelerator", "cpu", "--trainer.devices", "1", *common)

    # Rank 0 alone writes logs, checkpoints and the console summary.
    assert [path.name for path in ddp_root.iterdir()] == ["version_0"]
    assert ddp.stdout.count("Hardware:") == 1 and "x2" in ddp.stdout
    # Each process ran half the batches of an epoch: the data was sharded, not copied.
    last = torch.load(ddp_root / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == single.trainer.global_step
    events = EventAccumulator(str(ddp_root / "version_0"))
    events.Reload()
    ddp_accuracy = events.Scalars("test/acc")[-1].value
    single_accuracy = single.trainer.callback_metrics["test/acc"].item()
    assert ddp_accuracy >= 0.9 and single_accuracy >= 0.9
    assert ddp_accuracy == pytest.approx(single_accuracy, abs=ACCURACY_TOLERANCE)


def test_the_fsdp_config_parses(run_cli: RunCLI, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--config", str(PROJECT_ROOT / "configs" / "distributed" / "fsdp.yaml"), "--print_config")
    assert exit_info.value.code == 0
    assert "FSDPStrategy" in capsys.readouterr().out


def train_py_flags(text: str, values: dict[str, str]) -> list[str]:
    """The flags a shell command line passes to train.py, with the shell's variables filled in."""
    command = text.split("train.py", 1)[1].replace("\\\n", " ")
    command = re.sub(r"\$\(\((\w+) - 1\)\)", lambda m: str(int(values[m[1]]) - 1), command)
    command = re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], command)
    return [flag for flag in shlex.split(command, comments=True) if flag != "$@"]


@pytest.mark.parametrize("launcher", ["slurm", "torchrun"])
def test_launch_commands_match_the_cli(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str], launcher: str
) -> None:
    if launcher == "slurm":
        script = PROJECT_ROOT / "scripts" / "slurm.sh"
        assert os.access(script, os.X_OK)
        if shutil.which("bash"):
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        text = script.read_text().split("srun ", 1)[1]
        values = {"SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_CPUS_PER_TASK": "8"}
    else:
        readme = (PROJECT_ROOT / "README.md").read_text()
        text = readme.split("torchrun ", 1)[1].split("```", 1)[0]
        values = {}
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*train_py_flags(text, values), "--print_config")
    assert exit_info.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (trainer["num_nodes"], str(trainer["devices"]), trainer["strategy"]) == (2, "4", "ddp")
