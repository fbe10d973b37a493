"""Automatic precision and matmul settings for whatever hardware the run lands on."""

import torch


def uses_cuda(accelerator: object) -> bool:
    """Whether a Trainer ``accelerator`` setting will place the run on CUDA devices."""
    name = str(accelerator).lower()
    return name in {"auto", "gpu", "cuda"} and torch.cuda.is_available()


def has_native_bf16() -> bool:
    """Whether the CUDA device computes in bfloat16 natively: compute capability 8.0 (Ampere) or newer.

    Not ``torch.cuda.is_bf16_supported()``, which also counts emulation (V100, T4): there bf16 is
    slower than float16, which those devices run on their tensor cores.
    """
    return torch.cuda.get_device_capability()[0] >= 8


def auto_precision(accelerator: object) -> str:
    """bf16-mixed on CUDA devices with native bf16, 16-mixed on older CUDA devices, else 32-true.

    Mixed precision on CPU and MPS is slower than float32 for most models, so those keep full
    precision.
    """
    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if has_native_bf16() else "16-mixed"


def enable_tf32_if_supported(accelerator: object) -> bool:
    """Let float32 matmuls use TF32 tensor cores on Ampere and newer GPUs (about 1e-3 relative error)."""
    if not uses_cuda(accelerator) or not has_native_bf16():  # TF32 arrived with bf16, in Ampere
        return False
    torch.set_float32_matmul_precision("high")
    return True


def auto_benchmark(accelerator: object, deterministic: object) -> bool:
    """cuDNN's autotuner on CUDA unless the run must be deterministic: it times each convolution's
    algorithms once per input shape and keeps the fastest, which pays off for fixed shapes."""
    return uses_cuda(accelerator) and deterministic in (False, None)
