"""Write Fashion-MNIST as an image folder: OUT/train/<class>/<index>.png and OUT/test/...

PYTHONPATH=. python benchmarks/make_image_folder.py OUT [--limit N] [--source_dir DIR]

Reads the local IDX files that the `fashion_mnist_idx` dataset reads (default: where the Debian
package dataset-fashion-mnist installs them) and writes each image as an 8-bit grey PNG named
after its index in the split. Class folders are filesystem-safe class names ("T-shirt_top",
"Ankle_boot", ...). `--limit N` writes the first N images of each split. Train on the result with
--config.data.name=image_folder --config.data.source_dir=OUT.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from PIL import Image

from isnn_jax.data.fashion_mnist_idx import DEFAULT_SOURCE_DIR, read_split
from isnn_jax.data.pipeline import FASHION_MNIST_CLASS_NAMES


def folder_name(class_name: str) -> str:
    """A class name as a folder name: runs of characters other than letters, digits, '-' and
    '.' become one '_' ("T-shirt/top" -> "T-shirt_top", "Ankle boot" -> "Ankle_boot")."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", class_name).strip("_")


def write_split(out: Path, split: str, source_dir: str, limit: int) -> int:
    """Write one split's PNGs; returns how many were written."""
    images, labels = read_split(source_dir, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    folders = [out / split / folder_name(name) for name in FASHION_MNIST_CLASS_NAMES]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(labels) - 1, 0)))
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image[..., 0]).save(folders[int(label)] / f"{index:0{width}d}.png")
    return len(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (train/ and test/ inside)")
    parser.add_argument("--limit", type=int, default=0,
                        help="write only the first N images of each split (default: all)")
    parser.add_argument("--source_dir", default=DEFAULT_SOURCE_DIR,
                        help=f"the Fashion-MNIST IDX files (default {DEFAULT_SOURCE_DIR})")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error("--limit must be >= 0")
    start = time.perf_counter()
    counts = {split: write_split(args.out, split, args.source_dir, args.limit)
              for split in ("train", "test")}
    print(f"wrote {counts['train']} train and {counts['test']} test PNGs to {args.out} "
          f"({len(FASHION_MNIST_CLASS_NAMES)} classes) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
