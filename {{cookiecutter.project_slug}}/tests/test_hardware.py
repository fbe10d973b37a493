"""Automatic precision, TF32 and cuDNN's autotuner: decided from the hardware, overridable, and right on a
real GPU."""

import shutil
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.engine import hardware
from {{ cookiecutter.package_name }}.engine.sizes import load_module

from conftest import QUALITY, TINY_RUN, RunCLI

CUDA = torch.cuda.is_available()


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """Pretends a CUDA device of the given compute capability is present.

    ``is_bf16_supported`` answers True whatever the device, as torch's does by default (it counts
    emulation): the precision must not be decided from it.
    """

    def install(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)

    return install


@pytest.mark.skipif(CUDA, reason="checks the CPU-only choice")
def test_cpu_only_machines_train_in_full_precision() -> None:
    assert hardware.auto_precision("auto") == "32-true"
    assert not hardware.enable_tf32_if_supported("auto")


@pytest.mark.parametrize(
    ("gpu", "capability", "expected"),
    [
        ("P100", (6, 0), "16-mixed"),
        ("V100", (7, 0), "16-mixed"),  # bf16 only emulated: slower than float16 on its tensor cores
        ("T4", (7, 5), "16-mixed"),
        ("A100", (8, 0), "bf16-mixed"),
        ("RTX 3090", (8, 6), "bf16-mixed"),
        ("H100", (9, 0), "bf16-mixed"),
        ("B200", (10, 0), "bf16-mixed"),
    ],
)
def test_mixed_precision_follows_native_bf16_support(
    fake_cuda, gpu: str, capability: tuple[int, int], expected: str
) -> None:
    fake_cuda(capability)
    assert hardware.auto_precision("auto") == expected, gpu
    assert hardware.auto_precision("gpu") == expected
    assert hardware.auto_precision("cpu") == "32-true"  # asking for the CPU wins over a present GPU


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "dtype"), [("64-true", torch.float64), ("bf16-true", torch.bfloat16)])
def test_a_true_precision_trains_the_weights_in_its_dtype(run_cli: RunCLI, precision: str, dtype) -> None:
    # The model summary and the graph run the data's example inputs (float32) through the network.
    cli = run_cli("--trainer.precision", precision, "--trainer.fast_dev_run", "true", *TINY_RUN)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert {parameter.dtype for parameter in cli.model.parameters()} == {dtype}


@pytest.mark.parametrize(("capability", "enabled"), [((8, 0), True), ((9, 0), True), ((7, 5), False)])
def test_tf32_only_from_ampere_on(fake_cuda, capability: tuple[int, int], enabled: bool) -> None:
    fake_cuda(capability)
    before = torch.get_float32_matmul_precision()
    try:
        assert hardware.enable_tf32_if_supported("auto") is enabled
        assert torch.get_float32_matmul_precision() == ("high" if enabled else before)
    finally:
        torch.set_float32_matmul_precision(before)


def test_cudnn_autotuner_on_cuda_unless_the_run_must_be_deterministic(fake_cuda) -> None:
    assert not hardware.auto_benchmark("auto", False)  # no CUDA device (a CPU machine, or unseen)
    fake_cuda((9, 0))
    for accelerator in ("auto", "gpu", "cuda"):
        assert hardware.auto_benchmark(accelerator, False) and hardware.auto_benchmark(accelerator, None)
        assert not hardware.auto_benchmark(accelerator, True)
        assert not hardware.auto_benchmark(accelerator, "warn")  # deterministic algorithms, with warnings
    assert not hardware.auto_benchmark("cpu", False)  # asking for the CPU wins over a present GPU


@pytest.mark.parametrize(
    ("args", "autotuner"),
    [
        ((), "on" if CUDA else "off"),  # the default config: automatic
        (("--trainer.deterministic", "true"), "off"),
        (("--trainer.benchmark", "true"), "on"),  # asked for, on any machine
    ],
    ids=["automatic", "deterministic", "asked for"],
)
@pytest.mark.slow
def test_the_hardware_line_says_whether_the_autotuner_is_on(
    run_cli: RunCLI, capsys, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], autotuner: str
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # put back after
    run_cli("--trainer.fast_dev_run", "true", *args, *TINY_RUN)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Hardware: ")]
    assert line.endswith(f", cuDNN autotuner {autotuner}")
    assert torch.backends.cudnn.benchmark is (autotuner == "on")  # what the Trainer was given


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_training_on_cuda_with_automatic_precision(run_cli: RunCLI) -> None:
    metric, reached = QUALITY
    cli = run_cli("fit", "--trainer.max_epochs", "4", "--trainer.devices", "1", *TINY_RUN)
    expected = "bf16-mixed" if torch.cuda.get_device_capability()[0] >= 8 else "16-mixed"
    assert cli.trainer.precision == expected
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert next(cli.model.parameters()).device.type == "cuda"
    assert cli.trainer.callback_metrics[metric] >= reached - 0.05  # mixed precision learns as float32 does


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_model_trains_and_saves_the_usual_checkpoints(run_cli: RunCLI) -> None:
    cli = run_cli(
        "--model.compile", "true", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", *TINY_RUN,
    )  # fmt: skip
    assert cli.model.net._compiled_call_impl is not None
    assert cli.trainer.callback_metrics["test/loss"].isfinite()
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["state_dict"]
    plain = load_module(last, compile=False)  # the same module, not compiled, with the checkpoint's weights
    assert plain.net._compiled_call_impl is None
    assert saved.keys() == plain.state_dict().keys() == cli.model.state_dict().keys()
