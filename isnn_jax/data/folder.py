"""`image_folder`: your own images as SOURCE/train/<class>/*.png|jpg|jpeg and SOURCE/test/<class>/*.

The class names are the sorted folder names under train/ (test/ must have the same folders);
the label of an image is its folder's position in that order. A split's examples are ordered by
class, then by file name, so every run and every process sees the same order, and a process
share is the same contiguous cut as a TFDS split's (`common.share_bounds`). Only the files of
the share are decoded. Hidden files and files of other suffixes are skipped; sub-folders of a
class folder are not searched.

All images must decode to one shape, the first train image's, unless `image_shape` asks for
one: then every image is converted to its channel count, resized and centre-cropped
(`images.fit_image`). Decoding runs on a thread pool: Pillow releases the interpreter lock
while it inflates and decodes a file, so threads overlap the decoding of one file with the
opening and reading of the next.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from isnn_jax.data.common import (SHAPE_FIX, DataError, DatasetNotFoundError, check_image_shape,
                                  share_bounds)
from isnn_jax.data.images import (IMAGE_SUFFIXES, channels_word, decode_file, fit_image,
                                  read_header)

SPLITS = ("train", "test")
LAYOUT = "SOURCE/train/<class>/*.png|jpg|jpeg and SOURCE/test/<class>/*"
CHUNK = 256  # files one pool task decodes
WORKERS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The files of an image folder: its classes and, per split, (path, label) in read order."""

    root: Path
    class_names: tuple[str, ...]
    files: Mapping[str, tuple[tuple[Path, int], ...]]

    @property
    def reference(self) -> Path:
        """The first train image: the one whose shape all others must have."""
        return self.files["train"][0][0]


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def _class_folders(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if _visible(e) and e.is_dir())


def _images_in(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _visible(e) and e.is_file()
                      and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def scan_folder(source_dir: str | Path | None) -> ImageFolder:
    """List an image folder (no file is opened); a clear error for each layout problem."""
    if not source_dir:
        raise DataError(f"image_folder needs the folder of your images: pass "
                        f"--config.data.source_dir=DIR (source_dir=DIR) laid out as {LAYOUT}")
    root = Path(source_dir)
    for path in (root, *(root / split for split in SPLITS)):
        if not path.is_dir():
            raise DatasetNotFoundError(f"{path} not found: image_folder reads {LAYOUT} "
                                       f"(SOURCE = {root}); create it or point "
                                       f"--config.data.source_dir at such a folder")
    class_names = tuple(_class_folders(root / "train"))
    if not class_names:
        loose = _images_in(root / "train")
        where = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(f"{root / 'train'} has no class folders{where}; put each class's images "
                        f"in train/<class name>/ and test/<class name>/")
    test_names = tuple(_class_folders(root / "test"))
    if test_names != class_names:
        extra = sorted(set(test_names) - set(class_names))
        missing = sorted(set(class_names) - set(test_names))
        parts = ([f"only in test/: {', '.join(extra)}"] if extra else []) + \
                ([f"missing from test/: {', '.join(missing)}"] if missing else [])
        raise DataError(f"{root}: test/ and train/ must have the same class folders "
                        f"({'; '.join(parts)}); add or rename folders so that they match")
    files: dict[str, tuple[tuple[Path, int], ...]] = {}
    for split in SPLITS:
        listed: list[tuple[Path, int]] = []
        for label, name in enumerate(class_names):
            folder = root / split / name
            names = _images_in(folder)
            if not names:
                raise DataError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images; add "
                                f"some, or remove the class from both train/ and test/")
            listed.extend((folder / file, label) for file in names)
        files[split] = tuple(listed)
    return ImageFolder(root, class_names, files)


def folder_shape(folder: ImageFolder,
                 image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The shape every image of `folder` becomes: `image_shape`, else the first train image's."""
    return image_shape if image_shape is not None else read_header(folder.reference)


def _mismatch(reference: Path, want: tuple[int, ...], path: Path,
              have: tuple[int, ...]) -> DataError:
    if want[2] != have[2]:
        return DataError(f"images differ in channels: {reference} is {channels_word(want[2])} but "
                         f"{path} is {channels_word(have[2])}; convert the files to one kind, or "
                         f"set {SHAPE_FIX} to convert every image to C channels")
    return DataError(f"images differ in size: {reference} is {want[1]}x{want[0]} but {path} is "
                     f"{have[1]}x{have[0]} (width x height); set {SHAPE_FIX} to resize and "
                     f"centre-crop every image to one size")


def decode_files(files: tuple[tuple[Path, int], ...], shape: tuple[int, int, int], *,
                 fit: bool, reference: Path, workers: int = WORKERS) -> np.ndarray:
    """uint8 (N, *shape) images of `files`, decoded on `workers` threads; the first bad file
    (in file order) is the error."""
    images = np.empty((len(files), *shape), np.uint8)

    def decode_chunk(start: int) -> None:
        for index in range(start, min(start + CHUNK, len(files))):
            path = files[index][0]
            image = decode_file(path)
            if fit:
                image = fit_image(image, shape)
            elif image.shape != shape:
                raise _mismatch(reference, shape, path, image.shape)
            images[index] = image

    starts = range(0, len(files), CHUNK)
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            decode_chunk(start)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(workers)
        try:
            for _ in pool.map(decode_chunk, starts):  # re-raises the first failed chunk's error
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return images


def load_folder_split(source_dir: str | Path | None, split: str, *,
                      image_shape: tuple[int, int, int] | None = None, process_index: int = 0,
                      process_count: int = 1, drop_remainder: bool = False,
                      workers: int = WORKERS) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int32 labels) of this process's share of `split` of an image folder."""
    if split not in SPLITS:
        raise DataError(f"image_folder has the splits {', '.join(SPLITS)}, not {split!r}")
    image_shape = check_image_shape(image_shape)
    folder = scan_folder(source_dir)
    shape = folder_shape(folder, image_shape)
    start, end = share_bounds(len(folder.files[split]), process_index, process_count,
                              drop_remainder)
    files = folder.files[split][start:end]
    images = decode_files(files, shape, fit=image_shape is not None,
                          reference=folder.reference, workers=workers)
    labels = np.array([label for _, label in files], np.int32)
    return images, labels
