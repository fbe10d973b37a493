"""Precision, TF32 and cuDNN's autotuner chosen for the hardware the run lands on (config value ``null``)."""

import pkgutil

import torch
from jsonargparse import Namespace
from lightning.pytorch.plugins.precision import Precision


def uses_cuda(accelerator: object) -> bool:
    return str(accelerator).lower() in {"auto", "gpu", "cuda"} and torch.cuda.is_available()


def ampere_or_newer(accelerator: object) -> bool:
    """Native bf16 and TF32; not ``torch.cuda.is_bf16_supported()``, which counts emulation (V100, T4)."""
    return uses_cuda(accelerator) and torch.cuda.get_device_capability()[0] >= 8


def auto_precision(accelerator: object) -> str:
    """Mixed precision on CUDA only: on CPU and MPS it is slower than float32 for most models."""
    if ampere_or_newer(accelerator):
        return "bf16-mixed"
    return "16-mixed" if uses_cuda(accelerator) else "32-true"


def enable_tf32_if_supported(accelerator: object) -> bool:
    """TF32 matmuls (about 1e-3 relative error) on Ampere and newer."""
    enabled = ampere_or_newer(accelerator)
    if enabled:
        torch.set_float32_matmul_precision("high")
    return enabled


def auto_benchmark(accelerator: object, deterministic: object) -> bool:
    """cuDNN's autotuner, fastest per input shape, on CUDA unless the run must be deterministic."""
    return uses_cuda(accelerator) and deterministic in (False, None)


def fill_in_hardware(trainer: Namespace) -> bool:
    """Sets what the config leaves ``null`` (precision, autotuner) for the hardware; True if TF32 is on."""
    plugins = [pkgutil.resolve_name(p.class_path) for p in trainer.plugins or [] if isinstance(p, Namespace)]
    if trainer.precision is None and not any(issubclass(kind, Precision) for kind in plugins):
        trainer.precision = auto_precision(trainer.accelerator)  # Lightning refuses it beside a plugin
    if trainer.benchmark is None:
        trainer.benchmark = auto_benchmark(trainer.accelerator, trainer.deterministic)
    return enable_tf32_if_supported(trainer.accelerator)
