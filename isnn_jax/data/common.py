"""What every data source shares: its errors, the image shape it is asked for, process shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SHAPE_FIX = "--config.data.image_shape=(H,W,C)"  # how a user asks for one size and channel count


class DatasetNotFoundError(FileNotFoundError):
    """The data is neither prepared nor obtainable here; the message says how to fix that."""


class DataError(ValueError):
    """The data exists but cannot be used as it is; the message names the file and the fix."""


def check_image_shape(image_shape: Sequence[Any] | None) -> tuple[int, int, int] | None:
    """`image_shape` as (H, W, C) with C 1 or 3, or None for () (keep the data's own shape)."""
    if image_shape is None or len(image_shape) == 0:
        return None
    try:
        shape = tuple(int(v) for v in image_shape)
        whole = all(int(v) == v for v in image_shape)
    except (TypeError, ValueError):
        shape, whole = (), False
    if not whole or len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise DataError(f"image_shape={tuple(image_shape)!r} is not (height, width, channels) "
                        f"with 1 or 3 channels; pass e.g. --config.data.image_shape=(32,32,3), "
                        f"or () for the data's own shape")
    return shape  # type: ignore[return-value]


def check_share(process_index: int, process_count: int) -> None:
    """A process share must name one of the processes."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got "
                         f"process_index={process_index}, process_count={process_count}")


def share_bounds(num_examples: int, process_index: int, process_count: int,
                 drop_remainder: bool) -> tuple[int, int]:
    """[start, end) of this process's contiguous share, exactly as `tfds.even_splits` cuts it.

    Every share has `num_examples // process_count` examples; the remainder goes one each to
    the first processes, or is dropped with `drop_remainder`.
    """
    check_share(process_index, process_count)
    per, rest = divmod(num_examples, process_count)
    start, end = per * process_index, per * (process_index + 1)
    if not drop_remainder:
        start += min(process_index, rest)
        end += min(process_index + 1, rest)
    return start, end


def check_augment(random_crop: int, random_flip: bool) -> None:
    """The augmentation options must be a padding >= 0 and a boolean."""
    try:
        whole = not isinstance(random_crop, bool) and int(random_crop) == random_crop >= 0
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise DataError(f"random_crop={random_crop!r} must be a whole number of pixels >= 0 "
                        f"(0: off), e.g. --config.data.random_crop=4")
    if not isinstance(random_flip, (bool, np.bool_)):
        raise DataError(f"random_flip={random_flip!r} must be True or False")
