"""Export a checkpoint's network for inference without Lightning; the file takes ``--output``'s place only
once, loaded back as a deployment would, it computes the network's outputs on other batch sizes."""

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
from torch import Tensor

from {{ cookiecutter.package_name }}.engine.predict import unwritable
from {{ cookiecutter.package_name }}.engine.sizes import load_module

ATOL = RTOL = 1e-4  # other runtimes sum in another order; float32 agrees to ~1e-6
EXAMPLE_BATCH_SIZE = 2  # torch.export would fix a batch dimension of 1 as a constant
PARITY_BATCH_SIZES = (1, 16)  # neither is the example's: the batch dimension must be dynamic
DYNAMIC_BATCH = ({0: torch.export.Dim("batch")},)

Runner = Callable[[Tensor], Tensor]


def fail(message: str, status: int = 1) -> NoReturn:
    """Stops in one line, without a traceback; status 2 for bad input."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(status)


def to_torchscript(net: L.LightningModule, example: Tensor, path: Path) -> Runner:
    """Traced, which suits networks without branches; Lightning's method keeps the tracer off its Trainer."""
    net.to_torchscript(path, method="trace", example_inputs=example)
    return torch.jit.load(path, map_location="cpu")


def to_torch_export(net: L.LightningModule, example: Tensor, path: Path) -> Runner:
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=DYNAMIC_BATCH), path)
    return torch.export.load(path).module()


def to_onnx(net: L.LightningModule, example: Tensor, path: Path) -> Runner:
    """Its input is named ``input``, its output as the task says (``output_name``), else ``output``."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as error:
        fail(f"format onnx needs the '{error.name}' package: pip install -e \".[export]\"")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # not that torchvision's operators are missing
    output_names = [getattr(net, "output_name", "output")]
    options = {"input_names": ["input"], "dynamic_shapes": DYNAMIC_BATCH, "external_data": False}  # one file
    net.to_onnx(path, example, dynamo=True, output_names=output_names, **options)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


EXPORTERS: dict[str, Callable[[L.LightningModule, Tensor, Path], Runner]] = {
    "onnx": to_onnx,
    "torchscript": to_torchscript,
    "torch_export": to_torch_export,
}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}


def load_network(ckpt_path: Path) -> tuple[L.LightningModule, Tensor]:
    """The checkpoint's module in eval mode, uncompiled for the exporters to trace, and its example inputs."""
    try:
        model = load_module(ckpt_path, compile=False)
        examples = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("example_input_array")
    except Exception as error:  # a file of any other kind fails in many ways: name the first
        reason = f"{type(error).__name__}: " + str(error).strip().split("\n")[0].split(". ")[0]
        fail(f"ckpt_path: '{ckpt_path}' is not a checkpoint of train.py ({reason})", 2)
    if not isinstance(examples, Tensor) or len(examples) < 1:
        fail(f"ckpt_path: '{ckpt_path}' keeps no example inputs to export with", 2)
    return model.eval(), examples


@contextmanager
def written_beside(output: Path) -> Iterator[Path]:
    """A hidden path with ``output``'s suffix (which exporters need), renamed to it at the end or removed
    on any error (a failed check, Ctrl-C)."""
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        yield partial
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not after argparse's usage text."""
        fail(f"{message}\n(for the arguments: {self.prog} --help)", 2)


def main(args: list[str] | None = None) -> Path:
    """Writes the checkpoint's network as ``--format`` and returns the file; exit status 2 for bad input."""
    parser = OneLineParser(prog="python export.py", description=__doc__)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint that train.py wrote")
    parser.add_argument("--format", required=True, choices=sorted(EXPORTERS), help="onnx: the export extra")
    parser.add_argument("--output", type=Path, help="default: the checkpoint's path with .onnx, .pt or .pt2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    options = parser.parse_args(args)
    ckpt_path = options.ckpt_path
    output = options.output or ckpt_path.with_suffix(SUFFIXES[options.format])
    if not ckpt_path.is_file():
        parser.error(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    if output.exists() and output.samefile(ckpt_path):
        fail(f"output: '{output}' is the checkpoint itself (--ckpt_path); name another file with --output", 2)
    if output.is_file() and not options.overwrite:
        fail(f"output: '{output}' exists; pass --overwrite to replace it", 2)
    if reason := unwritable(output):
        fail(f"output: '{output}' {reason}", 2)
    net, examples = load_network(ckpt_path)
    with warnings.catch_warnings(), torch.no_grad(), written_beside(output) as partial:
        # TorchScript is deprecated, yet it is what LibTorch (C++) loads
        warnings.filterwarnings("ignore", message=r"`(torch\.jit\.\w+|LightningModule\.to_torchscript)`")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        example = examples[torch.arange(EXAMPLE_BATCH_SIZE) % len(examples)]
        runner = EXPORTERS[options.format](net, example, partial)
        for size in PARITY_BATCH_SIZES:
            inputs = examples.flip(0)[torch.arange(size) % len(examples)]  # other inputs than the example's
            try:
                torch.testing.assert_close(runner(inputs), net(inputs), atol=ATOL, rtol=RTOL)
            except AssertionError as error:
                found = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
                fail(f"parity: the exported model differs on a batch of {size}: {found}")
    sizes = "batches of " + " and ".join(map(str, PARITY_BATCH_SIZES))
    print(f"Exported {output} ({options.format}). Outputs match within atol {ATOL}, rtol {RTOL} ({sizes}).")
    return output
