"""Cluster launches that run the same command again: a SLURM job requeued any number of times, at
any phase of its run, and torchrun's elastic restarts each continue one run in one directory, as a
stop at that point and ``--ckpt_path last`` would, and end with the test of the best checkpoint.

SLURM is simulated as a job sees it: its variables, stand-in ``srun`` and ``scontrol`` on PATH,
SIGUSR1 before the time limit (``#SBATCH --signal``), and ``scripts/slurm.sh`` run again as SLURM
runs a requeued job, with ``SLURM_RESTART_COUNT`` raised.
"""

import os
import random
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from {{ cookiecutter.package_name }}.engine.run_identity import restart_count

from conftest import PROJECT_ROOT, RunCLI, process_env, run_train_py

STEPS = 5
SHORT = (
    "--trainer.max_epochs", "4", "--trainer.limit_train_batches", str(STEPS),
    "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
    "--trainer.deterministic", "true",
)  # fmt: skip
PLAN = "SIGNAL_PLAN"
"""``restart=phase`` pairs, ``;``-separated: where each start of the job receives its signal."""


class SignalPlan(Callback):
    """Sends this process ``SIGNAL`` (USR1, as SLURM does before the time limit, or TERM) where the
    plan says for this start: ``train:STEP`` after that step, ``validation:EPOCH`` during that
    epoch's validation, ``test`` during the final test."""

    def __init__(self) -> None:
        plan = dict(item.split("=") for item in os.environ.get(PLAN, "").split(";") if item)
        self.phase = plan.get(str(restart_count()), "")
        self.signal = getattr(signal, f"SIG{os.environ.get('SIGNAL', 'USR1')}")

    def send(self, phase: str) -> None:
        if phase == self.phase:
            self.phase = ""
            os.kill(os.getpid(), self.signal)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.send(f"train:{trainer.global_step}")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not trainer.sanity_checking:
            self.send(f"validation:{trainer.current_epoch}")

    def on_test_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.send("test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def slurm(tmp_path: Path) -> dict[str, str]:
    """A one-task SLURM job's environment, with ``srun`` and a ``scontrol`` that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    job = str(random.randint(10000, 99999))
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": job, "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NNODES": "1",
        "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "1", "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
        "MASTER_PORT": str(free_port()),
    }  # fmt: skip


def run_job(env: dict[str, str], root: Path, plan: str, restart: int) -> subprocess.CompletedProcess[str]:
    """``sbatch scripts/slurm.sh FLAGS`` as SLURM starts it for the ``restart``-th time."""
    started = {**process_env(), **env, PLAN: plan, "SLURM_RESTART_COUNT": str(restart)}
    if restart == 0:
        del started["SLURM_RESTART_COUNT"]
    flags = ["--trainer.default_root_dir", str(root), *SHORT, f"--trainer.callbacks+={__name__}.SignalPlan"]
    command = ["bash", "scripts/slurm.sh", *flags]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=started, capture_output=True, text=True, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_requeued_slurm_job_continues_one_run_through_every_phase(
    slurm: dict[str, str], tmp_path: Path
) -> None:
    """Time runs out mid-epoch, then in a validation, then in the test: each start saves, requeues
    and the next one continues the same run; the last tests the best checkpoint and exits 0. The
    weights are those of a run stopped by SIGTERM at the same step and resumed with ``last``."""
    root, plan = tmp_path / "job", "0=train:7;1=validation:2;2=test"
    requeues = tmp_path / "scontrol.log"
    for restart in range(3):
        stopped = run_job(slurm, root, plan, restart)
        assert stopped.returncode == 0, stopped.stderr[-3000:]
        assert "Traceback" not in stopped.stderr
        assert f"SLURM: requeued job {slurm['SLURM_JOB_ID']}" in stopped.stderr
        assert requeues.read_text().splitlines() == [f"requeue {slurm['SLURM_JOB_ID']}"] * (restart + 1)
        if restart:
            assert f"Restart {restart} of this job: continuing {root / 'version_0'}" in stopped.stdout
    run = root / "version_0"
    assert torch.load(run / "checkpoints" / "interrupted.ckpt", weights_only=True)["global_step"] == 7
    finished = run_job(slurm, root, plan, 3)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Test: " in finished.stdout and "Best checkpoint: " in finished.stdout
    assert sorted(path.name for path in root.iterdir()) == ["version_0"]  # one run, one directory
    assert len(list((run / "checkpoints").glob("epoch*.ckpt"))) == 1  # one best checkpoint
    assert len(requeues.read_text().splitlines()) == 3

    reference = tmp_path / "reference"
    # The script's own settings, on one process: DDP, no DataLoader workers (1 CPU per task).
    flags = ("--trainer.default_root_dir", str(reference), *SHORT, "--trainer.strategy", "ddp",
             "--data.num_workers", "0")  # fmt: skip
    manual = {PLAN: "0=train:7", "SIGNAL": "TERM"}
    callback = f"--trainer.callbacks+={__name__}.SignalPlan"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in manual.items():
            patch.setenv(name, value)
        assert run_train_py(*flags, callback).returncode == 143
    assert run_train_py(*flags, "--ckpt_path", "last").returncode == 0
    ours, theirs = weights(run), weights(reference / "version_0")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_ckpt_path_last_with_nothing_to_resume_starts_a_new_run_and_says_so(tmp_path: Path) -> None:
    """One command for a job's first start and its restarts: Lightning's own meaning of ``last``."""
    first = run_train_py("--trainer.default_root_dir", str(tmp_path), *SHORT, "--trainer.max_epochs", "1",
                         "--ckpt_path", "last")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"ckpt_path: 'last' found no checkpoint in {tmp_path}; starting a new run" in first.stdout
    assert (tmp_path / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_torchrun_elastic_restarts_continue_the_run(tmp_path: Path) -> None:
    """A worker stopped by SIGTERM exits 143; torchrun starts it again and it continues its run."""
    env = {**process_env(), PLAN: "0=train:7", "SIGNAL": "TERM"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
        "--max-restarts", "1", "train.py", "--trainer.default_root_dir", str(tmp_path), *SHORT,
        "--data.num_workers", "0", f"--trainer.callbacks+={__name__}.SignalPlan",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Restart 1 of this job: continuing {tmp_path / 'version_0'}" in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["version_0"]
    last = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 * STEPS


def test_every_example_in_the_slurm_script_parses(
    run_cli: RunCLI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``sbatch ... scripts/slurm.sh FLAGS`` examples in its comments: their flags are train.py's."""
    script = (PROJECT_ROOT / "scripts" / "slurm.sh").read_text()
    examples = [line for line in script.splitlines() if line.startswith("#") and "sbatch " in line]
    assert len(examples) >= 2
    for example in examples:
        flags = shlex.split(example.split("scripts/slurm.sh", 1)[1].split("#", 1)[0])
        with pytest.raises(SystemExit) as exit_info:
            run_cli(*flags, "--print_config")
        assert exit_info.value.code == 0, capsys.readouterr().err
