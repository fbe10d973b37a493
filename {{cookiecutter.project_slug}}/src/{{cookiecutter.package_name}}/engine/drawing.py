"""Pictures for TensorBoard drawn with torch alone: a colour scale, digits, a matrix, an image grid.

No plotting library: these run wherever the model trains, cost milliseconds, and return float RGB
tensors (3, H, W) in [0, 1], the form ``SummaryWriter.add_image`` takes.
"""

import functools
import math

import torch
from torch import Tensor

# Viridis, from dark purple (0) through teal to yellow (1): even steps of lightness, so the values
# read the same to colour-blind eyes and in greyscale.
VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]) / 255
WHITE, BLACK = torch.ones(3), torch.zeros(3)
GREEN, RED = torch.tensor([0.3, 0.9, 0.3]), torch.tensor([1.0, 0.35, 0.3])
# The digits 0-9 in a 3x5 pixel font, row by row: class numbers and counts without a font file.
FONT = torch.tensor(
    [
        [int(bit) for bit in glyph]
        for glyph in (
            *("111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001"),
            *("111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111"),
        )
    ],
    dtype=torch.bool,
).view(10, 5, 3)


def colormap(values: Tensor) -> Tensor:
    """Values in [0, 1] of any shape (...) to RGB colours (3, ...) on the viridis scale."""
    position = values.float().clamp(0, 1) * (len(VIRIDIS) - 1)
    low = position.floor().long().clamp(max=len(VIRIDIS) - 2)
    weight = (position - low).unsqueeze(-1)
    return (VIRIDIS[low] * (1 - weight) + VIRIDIS[low + 1] * weight).movedim(-1, 0)


@functools.lru_cache(maxsize=1024)
def number_mask(number: int, scale: int) -> Tensor:
    """The pixels (H, W) of a non-negative integer, one column between digits, each pixel ``scale`` wide."""
    glyphs = torch.cat([torch.nn.functional.pad(FONT[int(d)], (0, 1)) for d in str(number)], dim=1)[:, :-1]
    return glyphs.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def draw_number(
    image: Tensor, number: int, box: tuple[int, int, int, int], colour: Tensor, fill: float = 0.4
) -> None:
    """Writes ``number`` into ``image`` (3, H, W), centred in ``box`` (top, left, height, width).

    The digits take up to ``fill`` of the box's height; a box too small for them stays blank.
    """
    top, left, height, width = box
    scale = min(int(height * fill) // 5, (width - 2) // (4 * len(str(number)) - 1))
    if scale < 1:
        return
    mask = number_mask(number, scale)
    top, left = top + (height - mask.shape[0]) // 2, left + (width - mask.shape[1]) // 2
    region = image[:, top : top + mask.shape[0], left : left + mask.shape[1]]
    region[:, mask] = colour[:, None]


def render_confusion_matrix(matrix: Tensor, cell: int = 0) -> Tensor:
    """The matrix as an RGB image (3, H, W) in [0, 1], with class numbers on the top and left edges.

    Rows are true classes, columns predictions. Colour is the share of the row (so rare classes are
    as visible as common ones: the diagonal is each class's recall); the numbers are counts.
    ``cell`` is the side of one cell in pixels; by default about 480 pixels in all, at most 40 each.
    """
    n = matrix.shape[0]
    cell = cell or max(2, min(40, 480 // n))
    counts = matrix.detach().cpu().long()
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    image = torch.ones(3, (n + 1) * cell, (n + 1) * cell)  # a white margin for the class numbers
    image[:, cell:, cell:] = colormap(shares).repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    if cell >= 12:  # room for digits
        for i in range(n):
            draw_number(image, i, (cell * (i + 1), 0, cell, cell), BLACK)
            draw_number(image, i, (0, cell * (i + 1), cell, cell), BLACK)
            for j in range(n):
                if counts[i, j]:
                    colour = BLACK if shares[i, j] > 0.6 else WHITE  # dark on yellow, light on purple
                    box = (cell * (i + 1), cell * (j + 1), cell, cell)
                    draw_number(image, int(counts[i, j]), box, colour)
    return image


def render_grid(images: Tensor, targets: Tensor, predictions: Tensor, tile: int = 64) -> Tensor:
    """Images (N, C, H, W) as one RGB grid (3, H', W') in [0, 1], labelled: true (green), predicted (red).

    Every image is stretched to its own min..max (inputs are normalised, often negative) and
    enlarged to about ``tile`` pixels by repeating pixels, which keeps small images crisp.
    """
    x = images.detach().float().cpu()
    x = x[:, :1].expand(-1, 3, -1, -1) if x.shape[1] != 3 else x
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low).clamp(min=1e-8)
    scale = max(1, tile // max(x.shape[-2:]))
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    height, width = x.shape[-2:]
    label, pad = 16, 3  # the strip under each image for its two class numbers, and the gaps
    columns = math.ceil(math.sqrt(len(x)))
    rows = math.ceil(len(x) / columns)
    grid = torch.full((3, rows * (height + label + pad) + pad, columns * (width + pad) + pad), 0.3)
    labels = zip(targets.long().tolist(), predictions.long().tolist(), strict=True)
    for k, (image, (target, prediction)) in enumerate(zip(x, labels, strict=True)):
        top, left = pad + (k // columns) * (height + label + pad), pad + (k % columns) * (width + pad)
        grid[:, top : top + height, left : left + width] = image
        half = width // 2
        draw_number(grid, target, (top + height, left, label, half), GREEN, fill=0.7)
        draw_number(grid, prediction, (top + height, left + half, label, width - half), RED, fill=0.7)
    return grid
