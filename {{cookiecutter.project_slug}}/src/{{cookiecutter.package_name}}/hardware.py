"""Automatic precision and matmul settings for whatever hardware the run lands on."""

import torch


def uses_cuda(accelerator: object) -> bool:
    """Whether a Trainer ``accelerator`` setting will place the run on CUDA devices."""
    name = str(accelerator).lower()
    return name in {"auto", "gpu", "cuda"} and torch.cuda.is_available()


def auto_precision(accelerator: object) -> str:
    """bf16-mixed on CUDA devices that support it, 16-mixed on older CUDA devices, else 32-true.

    Mixed precision on CPU and MPS is slower than float32 for most models, so those keep full
    precision.
    """
    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def enable_tf32_if_supported(accelerator: object) -> bool:
    """Let float32 matmuls use TF32 tensor cores on Ampere and newer GPUs (about 1e-3 relative error)."""
    if not uses_cuda(accelerator) or torch.cuda.get_device_capability()[0] < 8:
        return False
    torch.set_float32_matmul_precision("high")
    return True
