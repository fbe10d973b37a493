"""Export a trained network for inference without Lightning: ONNX, TorchScript or ``torch.export``.

    python export.py --ckpt_path CHECKPOINT --format onnx

The network is rebuilt from the checkpoint's hyperparameters, switched to eval mode (dropout off,
batch-norm statistics frozen) and exported alone, without loss, metrics or optimizer, with a
dynamic batch dimension. The written file is then loaded back the way a deployment would load it,
and its outputs are compared with the PyTorch network's on batches of other sizes than the one it
was exported with. A mismatch deletes the file and exits with status 1.

The file is written beside its place and renamed there once it passed the check: an existing one
(replaced only with ``--overwrite``) stays whole until then, and the checkpoint is never written over.
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
from torch import Tensor, nn

from {{ cookiecutter.package_name }}.engine.run_files import unwritable
from {{ cookiecutter.package_name }}.engine.sizes import load_module

ATOL = RTOL = 1e-4
"""Parity tolerance on the outputs: other runtimes sum in another order, float32 agrees to ~1e-6."""
EXAMPLE_BATCH_SIZE = 2
"""Exported with 2 samples: ``torch.export`` would fix a batch dimension of 1 as a constant."""
PARITY_BATCH_SIZES = (1, 16)
"""Neither is the example's size, so the check also proves that the batch dimension is dynamic."""
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}
INSTALL_EXPORT = 'pip install -e ".[export]"'

Runner = Callable[[Tensor], Tensor]


class ExportError(Exception):
    """A problem to report in one line, without a traceback; ``status`` 2 for bad input."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def quiet() -> Iterator[None]:
    """Silences what the exporters say about PyTorch itself on every call, whatever the model."""
    onnx_logger = logging.getLogger("torch.onnx")  # e.g. that torchvision's operators are not installed
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, yet it is what LibTorch (C++) loads.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        onnx_logger.setLevel(level)


def batch_dimension() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch")}


def to_torchscript(net: nn.Module, example: Tensor, path: Path) -> Runner:
    """Traced: records the tensor operations of one call, which suits networks without branches.
    A LightningModule traces through its own ``to_torchscript``, which skips its Trainer."""
    if isinstance(net, L.LightningModule):
        traced = net.to_torchscript(method="trace", example_inputs=example)
    else:
        traced = torch.jit.trace(net, example)
    torch.jit.save(traced, str(path))
    return torch.jit.load(str(path), map_location="cpu")


def to_torch_export(net: nn.Module, example: Tensor, path: Path) -> Runner:
    program = torch.export.export(net, (example,), dynamic_shapes=(batch_dimension(),))
    torch.export.save(program, path)
    return torch.export.load(path).module()


def to_onnx(net: nn.Module, example: Tensor, path: Path) -> Runner:
    """The ``torch.export``-based exporter; the input is named ``input``, the output as the task says
    (its ``output_name``: ``logits``, ``prediction``), else ``output``."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as error:
        raise ExportError(f"format onnx needs the '{error.name}' package: {INSTALL_EXPORT}") from None
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=[getattr(net, "output_name", "output")],
        dynamic_shapes=(batch_dimension(),),
        external_data=False,  # the weights inside the one file
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


EXPORTERS: dict[str, Callable[[nn.Module, Tensor, Path], Runner]] = {
    "onnx": to_onnx,
    "torchscript": to_torchscript,
    "torch_export": to_torch_export,
}


def load_network(ckpt_path: Path) -> tuple[nn.Module, Tensor]:
    """The checkpoint's module, whatever its class, in eval mode, and the example inputs it keeps;
    what is exported is its ``forward``."""
    try:
        # Uncompiled: exporters trace the network's own code. The weights are the same.
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


def check_parity(net: nn.Module, runner: Runner, examples: Tensor) -> float:
    """The largest absolute difference between the exported and the PyTorch outputs, or an error."""
    largest = 0.0
    for size in PARITY_BATCH_SIZES:
        inputs = batch_of(examples.flip(0), size)  # other inputs than the exported example's
        with torch.no_grad():
            expected, actual = net(inputs), runner(inputs)
        if actual.shape != expected.shape:
            shapes = f"{tuple(actual.shape)}, not {tuple(expected.shape)}"
            raise ExportError(f"parity: the exported model's outputs have shape {shapes}, for {size} inputs")
        difference = (actual - expected).abs().max().item()
        if not torch.allclose(actual, expected, atol=ATOL, rtol=RTOL):
            raise ExportError(
                f"parity: the exported model differs from the PyTorch one by up to {difference:.3g}"
                f" on a batch of {size} (atol {ATOL}, rtol {RTOL})"
            )
        largest = max(largest, difference)
    return largest


def partial_path(output: Path) -> Path:
    """Where the file is written before it is checked: beside ``output``, with its suffix (the
    exporters and their loaders go by it), hidden."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def output_problem(ckpt_path: Path, output: Path, overwrite: bool) -> str | None:
    """The one-line error for an output path that would destroy something or cannot be written
    (``run_files.unwritable``), or None."""
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
    """A path to write, renamed to ``output`` when the block ends; an error (a failed check, Ctrl-C)
    removes it and leaves ``output`` as it was."""
    partial = partial_path(output)
    try:
        yield partial
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def export(
    ckpt_path: Path, format: str, output: Path | None = None, overwrite: bool = False
) -> tuple[Path, float]:
    """Writes the network of ``ckpt_path`` as ``format``; returns the file and the parity gap.

    ``output`` defaults to the checkpoint's path with the format's suffix; an existing file there is
    an error unless ``overwrite``, and the checkpoint itself always is.
    """
    output = output or ckpt_path.with_suffix(SUFFIXES[format])
    if problem := output_problem(ckpt_path, output, overwrite):
        raise ExportError(problem, status=2)
    net, examples = load_network(ckpt_path)
    with quiet(), torch.no_grad(), written_beside(output) as partial:
        runner = EXPORTERS[format](net, batch_of(examples, EXAMPLE_BATCH_SIZE), partial)
        difference = check_parity(net, runner, examples)
    return output, difference


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n(for the arguments: {self.prog} --help)\n")
        raise SystemExit(2)


def main(args: list[str] | None = None) -> Path:
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
    try:
        path, difference = export(options.ckpt_path, options.format, options.output, options.overwrite)
    except ExportError as error:
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(error.status) from None
    print(
        f"Exported {path} ({options.format}). Outputs match the PyTorch model within atol {ATOL}, rtol {RTOL}"
        f" on batches of {' and '.join(map(str, PARITY_BATCH_SIZES))} (largest difference {difference:.2g})."
    )
    return path


if __name__ == "__main__":
    main()
