"""Write a small image folder to try ``--dataset imagefolder:PATH`` without downloading
anything: one sub-folder per class (circle, square, triangle) of RGB PNG files, drawn with Pillow
at random positions, sizes and colours on a noisy background.

    python examples/make_image_folder.py shapes --per-class 60 --size 50x55
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(shape: str, rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """One image of ``shape``: a filled shape over Gaussian noise."""
    noise = rng.normal(128, 40, size=(height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(noise, "RGB")
    pen = ImageDraw.Draw(image)
    r = rng.uniform(0.2, 0.35) * min(height, width)
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", default="50x55", help="HxW in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(args.seed)
    for shape in CLASSES:
        folder = args.folder / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            draw(shape, rng, height, width).save(folder / f"{shape}-{i:04d}.png")
    print(f"wrote {len(CLASSES) * args.per_class} images in {len(CLASSES)} classes to "
          f"{args.folder}")


if __name__ == "__main__":
    main()
