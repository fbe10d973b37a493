"""Export a checkpoint's network for inference without Lightning: ONNX, TorchScript or ``torch.export``.

The file is written beside ``--output``, loaded back as a deployment would and compared with the PyTorch
network on other batch sizes than the exported one; only then does it take ``--output``'s place.
"""

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

from {{ cookiecutter.package_name }}.engine.run_files import unwritable
from {{ cookiecutter.package_name }}.engine.sizes import load_module

ATOL = RTOL = 1e-4
"""Parity tolerance on the outputs: other runtimes sum in another order, float32 agrees to ~1e-6."""
EXAMPLE_BATCH_SIZE = 2
"""Exported with 2 samples: ``torch.export`` would fix a batch dimension of 1 as a constant."""
PARITY_BATCH_SIZES = (1, 16)
"""Neither is the example's size, so the check also proves that the batch dimension is dynamic."""
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}
INSTALL = 'pip install -e ".[export]"'
DYNAMIC_BATCH = ({0: torch.export.Dim("batch")},)

Runner = Callable[[Tensor], Tensor]


class ExportError(Exception):
    """A problem to report in one line, without a traceback; ``status`` 2 for bad input."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def quiet() -> Iterator[None]:
    """Silences what the exporters say on every call about PyTorch itself, whatever the model."""
    onnx_logger = logging.getLogger("torch.onnx")  # e.g. that torchvision's operators are not installed
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, yet it is what LibTorch (C++) loads
            warnings.filterwarnings("ignore", message=r"`(torch\.jit\.\w+|LightningModule\.to_torchscript)`")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        onnx_logger.setLevel(level)


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
        raise ExportError(f"format onnx needs the '{error.name}' package: {INSTALL}") from None
    net.to_onnx(
        path,
        example,
        dynamo=True,
        input_names=["input"],
        output_names=[getattr(net, "output_name", "output")],
        dynamic_shapes=DYNAMIC_BATCH,
        external_data=False,  # the weights inside the one file
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


EXPORTERS: dict[str, Callable[[L.LightningModule, Tensor, Path], Runner]] = {
    "onnx": to_onnx,
    "torchscript": to_torchscript,
    "torch_export": to_torch_export,
}


def load_network(ckpt_path: Path) -> tuple[L.LightningModule, Tensor]:
    """The checkpoint's module in eval mode, uncompiled for the exporters to trace, and its example inputs."""
    try:
        model = load_module(ckpt_path, compile=False)
        examples = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("example_input_array")
    except Exception as error:  # a file of any other kind fails in many ways: name the first
        first_sentence = str(error).strip().split("\n")[0].split(". ")[0]
        reason = f"not a checkpoint of train.py ({type(error).__name__}: {first_sentence})"
        raise ExportError(f"ckpt_path: '{ckpt_path}' is {reason}", status=2) from None
    if not isinstance(examples, Tensor) or len(examples) < 1:
        raise ExportError(f"ckpt_path: '{ckpt_path}' keeps no example inputs to export with", status=2)
    return model.eval(), examples


def batch_of(examples: Tensor, size: int) -> Tensor:
    """``size`` inputs cycled from the examples: real values of the right dtype, any batch size."""
    return examples[torch.arange(size) % len(examples)]


def check_parity(net: L.LightningModule, runner: Runner, examples: Tensor) -> float:
    """The largest absolute difference between the exported and the PyTorch outputs, or an error."""
    largest = 0.0
    for size in PARITY_BATCH_SIZES:
        inputs = batch_of(examples.flip(0), size)  # other inputs than the exported example's
        expected, actual = net(inputs), runner(inputs)
        try:
            torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)
        except AssertionError as error:
            found = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise ExportError(f"parity: the exported model differs on a batch of {size}: {found}") from None
        largest = max(largest, (actual - expected).abs().max().item())
    return largest


def output_problem(ckpt_path: Path, output: Path, overwrite: bool) -> str | None:
    """The one-line error for an output path that would destroy a file or cannot be written, or None."""
    if output.exists() and ckpt_path.exists() and output.samefile(ckpt_path):
        return f"output: '{output}' is the checkpoint itself (--ckpt_path); name another file with --output"
    if output.is_dir():
        return f"output: '{output}' is a directory; name the file to write with --output"
    if output.exists() and not overwrite:
        return f"output: '{output}' exists; pass --overwrite to replace it"
    reason = unwritable(output)
    return f"output: '{output}' {reason}" if reason else None


@contextmanager
def written_beside(output: Path) -> Iterator[Path]:
    """A hidden path beside ``output``, renamed to it at the end or removed on an error (a failed check,
    Ctrl-C). Not ``checkpoint_io.replacing``: exporters need a path with the suffix, not a handle."""
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        yield partial
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument in one line, not after argparse's usage text."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n(for the arguments: {self.prog} --help)\n")
        raise SystemExit(2)


def main(args: list[str] | None = None) -> Path:
    """Writes the checkpoint's network as ``--format`` and returns the file; exit status 2 for bad input."""
    parser = OneLineParser(
        prog="python export.py",
        description="Export the network of a checkpoint and check that the file computes the same outputs.",
    )
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint that train.py wrote")
    parser.add_argument("--format", required=True, choices=sorted(EXPORTERS), help="onnx: the export extra")
    parser.add_argument("--output", type=Path, help="default: the checkpoint's path with .onnx, .pt or .pt2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    options = parser.parse_args(args)
    if not options.ckpt_path.is_file():
        parser.error(f"ckpt_path: no checkpoint file at '{options.ckpt_path}'")
    output = options.output or options.ckpt_path.with_suffix(SUFFIXES[options.format])
    try:
        if problem := output_problem(options.ckpt_path, output, options.overwrite):
            raise ExportError(problem, status=2)
        net, examples = load_network(options.ckpt_path)
        with quiet(), torch.no_grad(), written_beside(output) as partial:
            runner = EXPORTERS[options.format](net, batch_of(examples, EXAMPLE_BATCH_SIZE), partial)
            difference = check_parity(net, runner, examples)
    except ExportError as error:
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(error.status) from None
    sizes = " and ".join(map(str, PARITY_BATCH_SIZES))
    print(
        f"Exported {output} ({options.format}). Outputs match the PyTorch model within atol {ATOL}, rtol"
        f" {RTOL} on batches of {sizes} (largest difference {difference:.2g})."
    )
    return output
