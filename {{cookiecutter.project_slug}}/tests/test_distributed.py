"""Several processes through the same train.py: DDP on CPU (gloo), data sharding, strategy configs."""

import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.datamodule import EpochSeededSampler
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import DEFAULT_CONFIG, PROJECT_ROOT, QUALITY, SPLIT_SIZES, RunCLI, run_train_py, train

METRIC, BOUND = QUALITY
TEST_METRIC = METRIC.replace("val/", "test/", 1)
"""The quality metric on the test split: a task logs the same metrics for validation and test."""
TOLERANCE = 0.03
"""DDP and one process see the same samples per step but in another order: close, not equal."""


DATA = yaml.safe_load(DEFAULT_CONFIG.read_text())["data"]
"""The default config's DataModule: its class path and arguments."""


def default_datamodule() -> L.LightningDataModule:
    return class_of(DATA["class_path"])(**DATA.get("init_args", {}))


def test_each_process_gets_its_own_share_of_every_epoch() -> None:
    datamodule = default_datamodule()
    datamodule.setup("fit")
    train_split = datamodule.splits["train"]
    assert len(train_split) == SPLIT_SIZES["train"]
    shares = [
        [
            index
            for index, _ in EpochSeededSampler(train_split, seed=3, batch_size=8, num_replicas=2, rank=rank)
        ]
        for rank in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == (len(train_split) + 1) // 2
    assert set(shares[0]) | set(shares[1]) == set(range(len(train_split)))
    assert len(set(shares[0]) & set(shares[1])) <= 1  # one index repeats to even out an odd count


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_with_the_default_config_trains_like_one_process(tmp_path: Path) -> None:
    # The default config as shipped, progress bar and every callback on; only the run's length and
    # the hardware change. The same global batch: 2 processes x half of it, or 1 process x all of it.
    batch_size = DATA.get("init_args", {}).get("batch_size") or default_datamodule().hparams["batch_size"]
    common = ("--trainer.max_epochs", "5")
    ddp_root = tmp_path / "ddp"
    ddp = run_train_py(
        "--trainer.default_root_dir", str(ddp_root), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--data.batch_size", str(batch_size // 2), *common,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = train(tmp_path / "single", "--trainer.accelerator", "cpu", *common)

    # Rank 0 alone writes logs, checkpoints and the console summary.
    assert [path.name for path in ddp_root.iterdir()] == ["version_0"]
    assert ddp.stdout.count("Hardware:") == 1 and "x2" in ddp.stdout
    # Each process ran half the batches of an epoch: the data was sharded, not copied.
    last = torch.load(ddp_root / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == single.trainer.global_step
    events = EventAccumulator(str(ddp_root / "version_0"))
    events.Reload()
    ddp_quality = events.Scalars(TEST_METRIC)[-1].value
    single_quality = single.trainer.callback_metrics[TEST_METRIC].item()
    assert ddp_quality >= BOUND and single_quality >= BOUND
    assert ddp_quality == pytest.approx(single_quality, abs=TOLERANCE)
    single_loss = single.trainer.callback_metrics["test/loss"].item()
    assert events.Scalars("test/loss")[-1].value == pytest.approx(single_loss, rel=0.1)
    assert "sync_dist" not in ddp.stderr  # no advice to sync what torchmetrics already synchronised


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_test_and_both_exit_0(tmp_path: Path) -> None:
    # What `torchrun` (or srun) starts on each of two nodes, here both on this machine.
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
    ]  # fmt: skip
    flags = [
        "train.py", "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    nodes = [
        subprocess.Popen([*launch, "--node_rank", str(rank), *flags], cwd=PROJECT_ROOT, env=env, **pipes)
        for rank in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert [path.name for path in tmp_path.iterdir()] == ["version_0"]  # one run, written by rank 0
    events = EventAccumulator(str(tmp_path / "version_0"))
    events.Reload()
    assert math.isfinite(events.Scalars("test/loss")[-1].value) and TEST_METRIC in events.Tags()["scalars"]
    assert "x 2 nodes" in outputs[0][0]


class StallOneProcess(Callback):
    """Process 1 stops answering after its first epoch: a hung GPU, a deadlock, a lost node."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 1:
            time.sleep(600)


@pytest.mark.slow
def test_a_collective_that_never_completes_ends_the_run_with_an_error_naming_it(tmp_path: Path) -> None:
    started = time.monotonic()
    stalled = run_train_py(
        "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--collective_timeout", "5", f"--trainer.callbacks+={__name__}.StallOneProcess",
        timeout=240,
    )  # fmt: skip
    assert stalled.returncode == 1, stalled.stderr[-3000:]
    assert time.monotonic() - started < 120  # the timeout, not the 600 s stall
    (error,) = [line for line in stalled.stderr.splitlines() if line.startswith("error:")]
    assert (
        "collective" in error
        and "did not complete within the timeout" in error
        and "--collective_timeout" in error
    )


def test_an_in_process_run_refuses_to_launch_processes(run_cli: RunCLI, capsys, tmp_path: Path) -> None:
    # What `devices: auto` gives on a machine with two GPUs, on CPU: Lightning would run pytest's
    # own command line again in a second process.
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trainer.devices: 2 processes") and "--trainer.devices 1" in err
    assert not any(tmp_path.iterdir())


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
