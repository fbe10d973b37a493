"""Writes the data of the example configs, offline and the same on every run:

    python scripts/make_example_data.py [--out data]

- ``OUT/digits_png/<class>/<n>.png``: scikit-learn's 1,797 handwritten digits (8x8 grey-scale) as
  PNG files in one folder per class, for ``configs/examples/images.yaml``: the layout of your own
  images;
- ``OUT/cars.csv``: every one of the 1,728 cars of the UCI car-evaluation kind (six categorical
  columns) with a noisy price (numeric) and an acceptability class from a hierarchical rule like
  the one behind the original data set, for ``configs/examples/tabular.yaml``.
"""

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

COLUMNS = {
    "buying": ("vhigh", "high", "med", "low"),
    "maint": ("vhigh", "high", "med", "low"),
    "doors": ("2", "3", "4", "5more"),
    "persons": ("2", "4", "more"),
    "lug_boot": ("small", "med", "big"),
    "safety": ("low", "med", "high"),
}
COST = {"vhigh": 3, "high": 2, "med": 1, "low": 0}
BASE_PRICE = {"vhigh": 38.0, "high": 26.0, "med": 18.0, "low": 12.0}
"""Thousands, by buying cost; each car's price scatters around it (log-normal, 10 %)."""
TECH = {("med", "acc"): "acc", ("med", "high"): "good", ("high", "acc"): "good", ("high", "high"): "vgood"}
# CAR from PRICE and TECH, as the original's decision model does (TECH "bad" is always unacc).
CAR = {
    "vhigh": {"acc": "unacc", "good": "unacc", "vgood": "acc"},
    "high": {"acc": "unacc", "good": "acc", "vgood": "acc"},
    "med": {"acc": "acc", "good": "acc", "vgood": "good"},
    "low": {"acc": "acc", "good": "good", "vgood": "vgood"},
}


def price_level(buying: str, maint: str) -> str:
    """What the car costs to buy and to keep, together."""
    return ("low", "low", "low", "med", "high", "vhigh", "vhigh")[COST[buying] + COST[maint]]


def comfort_level(doors: str, persons: str, lug_boot: str) -> str:
    """Room for people and luggage; a two-seater is never comfortable enough."""
    if persons == "2":
        return "low"
    points = {"2": 0, "3": 1, "4": 2, "5more": 2}[doors] + {"small": 0, "med": 1, "big": 2}[lug_boot]
    points += persons == "more"
    return "low" if points <= 1 else "acc" if points <= 3 else "high"


def tech_level(comfort: str, safety: str) -> str:
    """The car's safety and comfort together; poor in either makes it unacceptable."""
    if safety == "low" or comfort == "low":
        return "bad"
    return TECH[safety, comfort]


def acceptability(buying: str, maint: str, doors: str, persons: str, lug_boot: str, safety: str) -> str:
    """unacc, acc, good or vgood: CAR(PRICE(buying, maint), TECH(COMFORT(doors, persons, lug_boot), safety)),
    the hierarchy of the original data set's decision model."""
    tech = tech_level(comfort_level(doors, persons, lug_boot), safety)
    return "unacc" if tech == "bad" else CAR[price_level(buying, maint)][tech]


def write_cars_table(out: Path) -> Path:
    """``out/cars.csv``: the columns of COLUMNS, ``price`` and ``class``; one row per combination."""
    path = out / "cars.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow([*COLUMNS, "price", "class"])
        for car in itertools.product(*COLUMNS.values()):
            price = BASE_PRICE[car[0]] * noise.lognormal(0.0, 0.1)
            writer.writerow([*car, f"{price:.1f}", acceptability(*car)])
    return path


def write_digit_images(out: Path) -> Path:
    """``out/digits_png/<digit>/<n>.png``: each scikit-learn digit as an 8x8 grey-scale PNG file."""
    from sklearn.datasets import load_digits

    root = out / "digits_png"
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    for number, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{number:04d}.png")  # uint8 (H, W): mode L
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder to write into (%(default)s)")
    out = parser.parse_args(argv).out
    print(f"Wrote {write_digit_images(out)}/ and {write_cars_table(out)}")


if __name__ == "__main__":
    main()
