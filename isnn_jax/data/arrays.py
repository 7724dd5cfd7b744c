"""`arrays`: your own images as one .npz file with x_train, y_train, x_test, y_test.

Save it with `numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)` (or
`savez_compressed`), optionally with `class_names=np.array(["cat", "dog", ...])`.

- Images: uint8 NHWC, or NHW (one channel is added). Float images must lie in [0, 1] and are
  converted to uint8 as round(x * 255), so they are quantised to 256 levels exactly as image
  files are; floats outside [0, 1] (or NaN) are an error rather than silently clipped. Other
  integer types are accepted when their values lie in 0..255.
- Labels: integers 0..K-1 (an (N, 1) column is accepted; floats only when every value is
  whole). K is len(class_names) when given, else the largest label + 1; the class names default
  to "0", "1", ...
- The shape of the images is x_train's, unless `image_shape` asks for another (then every image
  is converted, resized and centre-cropped: `images.fit_images`). x_test must match x_train.

Describing the data reads only the arrays' headers and the labels; a process share is the same
contiguous cut as a TFDS split's (`common.share_bounds`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from isnn_jax.data.common import (SHAPE_FIX, DataError, DatasetNotFoundError, check_image_shape,
                                  share_bounds)
from isnn_jax.data.images import fit_images

SPLITS = ("train", "test")
KEYS = ("x_train", "y_train", "x_test", "y_test")
SAVE_HINT = "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _path(source_dir: str | Path | None) -> Path:
    if not source_dir:
        raise DataError(f"arrays needs the path of an .npz file: pass "
                        f"--config.data.source_dir=FILE.npz saved with {SAVE_HINT}")
    path = Path(source_dir)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: arrays reads one .npz file saved with "
                                   f"{SAVE_HINT}; point --config.data.source_dir at it")
    return path


def _members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path} is not an .npz file ({err}); save one with {SAVE_HINT}") from None
    missing = [key for key in KEYS if key not in names]
    if missing:
        held = ", ".join(names) or "no arrays"
        raise DataError(f"{path} lacks {', '.join(missing)} (it holds {held}); save it with "
                        f"{SAVE_HINT}")
    return names


def array_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array `key` of an .npz, read from its header (no data is loaded)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(stream)
    return tuple(shape), dtype


def _load(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except ValueError as err:
        raise DataError(f"{path}: {key} cannot be read without pickle ({err}); save numbers, "
                        f"and class names as np.array(names, dtype=str)") from None


def _own_shape(path: Path, key: str) -> tuple[int, ...]:
    shape, dtype = array_header(path, key)
    if len(shape) not in (3, 4):
        raise DataError(f"{path}: {key} has shape {shape}; images must be N x H x W x C (or "
                        f"N x H x W for grey)")
    return shape[1:] if len(shape) == 4 else (*shape[1:], 1)


def _labels(path: Path, key: str, count: int) -> np.ndarray:
    labels = _load(path, key)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != count:
        raise DataError(f"{path}: {key} has shape {labels.shape} but there are {count} images; "
                        f"give one integer label per image")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            bad = labels[~np.isfinite(labels) | (labels != np.round(labels))][0]
            raise DataError(f"{path}: {key} holds the non-integer label {bad}; labels must be "
                            f"integers 0..K-1")
    elif labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {labels.dtype}; labels must be integers 0..K-1")
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: {key} holds the label {labels.min()}; labels must be integers "
                        f"0..K-1")
    return labels.astype(np.int64)


def describe_arrays(source_dir: str | Path | None, image_shape: tuple[int, int, int] | None
                    ) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """(image shape, class names) of an .npz of arrays, every label checked."""
    path = _path(source_dir)
    names = _members(path)
    shapes = {split: _own_shape(path, f"x_{split}") for split in SPLITS}
    if image_shape is None and shapes["train"] != shapes["test"]:
        raise DataError(f"{path}: x_train holds {shapes['train']} images but x_test "
                        f"{shapes['test']}; give both one shape, or set {SHAPE_FIX}")
    labels = {split: _labels(path, f"y_{split}", array_header(path, f"x_{split}")[0][0])
              for split in SPLITS}
    top = max((int(y.max()) for y in labels.values() if y.size), default=-1)
    if "class_names" in names:
        given = _load(path, "class_names")
        if given.ndim != 1 or given.dtype.kind not in "US":
            raise DataError(f"{path}: class_names must be a 1-D string array "
                            f"(np.array(names, dtype=str)), not {given.dtype} {given.shape}")
        class_names = tuple(str(n) for n in given.astype(str))
        if top >= len(class_names):
            split = next(s for s, y in labels.items() if y.size and y.max() == top)
            raise DataError(f"{path}: y_{split} holds the label {top} but class_names names "
                            f"{len(class_names)} classes; labels must be 0..{len(class_names) - 1}")
    else:
        class_names = tuple(str(i) for i in range(top + 1))
    if len(class_names) < 2:
        raise DataError(f"{path}: the labels name {len(class_names)} class; a classifier needs "
                        f"at least 2")
    shape = image_shape if image_shape is not None else shapes["train"]
    return shape, class_names  # type: ignore[return-value]


def to_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 images as they are; floats in [0, 1] as round(x * 255); integers in 0..255."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "f":
        finite = bool(np.isfinite(images).all())
        if images.size and (not finite or images.min() < 0 or images.max() > 1):
            values = "NaN or Inf values" if not finite else \
                f"floats in [{images.min():g}, {images.max():g}]"
            raise DataError(f"{where} holds {values}; float images must lie in [0, 1] (divide "
                            f"8-bit values by 255), or save them as uint8")
        return np.round(images * 255.0).astype(np.uint8)
    if images.dtype.kind in "iu":
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{where} holds {images.dtype} values in [{images.min()}, "
                            f"{images.max()}]; integer images must lie in 0..255 (uint8)")
        return images.astype(np.uint8)
    raise DataError(f"{where} has dtype {images.dtype}; save images as uint8 or floats in [0, 1]")


def load_arrays_split(source_dir: str | Path | None, split: str, *,
                      image_shape: tuple[int, int, int] | None = None, process_index: int = 0,
                      process_count: int = 1, drop_remainder: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int32 labels) of this process's share of `split` of an .npz."""
    if split not in SPLITS:
        raise DataError(f"arrays has the splits {', '.join(SPLITS)}, not {split!r}")
    image_shape = check_image_shape(image_shape)
    path = _path(source_dir)
    describe_arrays(path, image_shape)  # every label and shape checked before any image is read
    images = _load(path, f"x_{split}")
    labels = _labels(path, f"y_{split}", images.shape[0])
    start, end = share_bounds(images.shape[0], process_index, process_count, drop_remainder)
    images = images[start:end]
    if images.ndim == 3:
        images = images[..., None]
    images = fit_images(to_uint8(images, f"{path}: x_{split}"), image_shape)
    return np.ascontiguousarray(images), labels[start:end].astype(np.int32)
