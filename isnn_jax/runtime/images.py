"""Read image files and .npy arrays into the float32 NHWC batches in [0, 1] a model expects.

Inputs are PNG/JPEG (any format Pillow reads) files, directories of them, or .npy arrays.
Image files are converted to float in [0, 1] (8-bit / 255, 16-bit / 65535), turned upright by
their EXIF orientation, and resized to the model's height x width (area averaging when shrinking, bilinear
when enlarging; the aspect ratio is not kept). Arrays are taken as they are: their size and channels must already match.

Channels are never invented or thrown away silently: an RGB image for a one-channel model
is refused unless its three channels are equal (a grey image stored as RGB) or `convert=True`
(ITU-R 601 luma); a grey image for a three-channel model is refused unless `convert=True`
(the grey value copied to R, G and B). Transparency is refused unless fully opaque.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARRAY_SUFFIX = ".npy"
_GREY_MODES = ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class ImageError(ValueError):
    """An input cannot become a model input; the message names the file and the fix."""


def _channels_word(count: int) -> str:
    return {1: "1 channel (grey)", 3: "3 channels (RGB)"}.get(count, f"{count} channels")


def _pil_to_float(image: Image.Image, name: str) -> np.ndarray:
    """HWC float32 in [0, 1] (alpha kept as the last channel if present)."""
    mode = image.mode
    if mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
        mode = image.mode
    elif mode not in _GREY_MODES + ("LA", "RGB", "RGBA"):
        image, mode = image.convert("RGB"), "RGB"  # CMYK, YCbCr, LAB, HSV
    array = np.asarray(image)
    if mode.startswith("I;16"):
        array = array.astype(np.float32) / 65535.0
    elif mode == "I":
        if array.min() < 0 or array.max() > 65535:
            raise ImageError(f"{name}: 32-bit integer pixels outside [0, 65535]; save it as an "
                             "8- or 16-bit image")
        array = array.astype(np.float32) / (255.0 if array.max() <= 255 else 65535.0)
    elif mode == "F":
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise ImageError(f"{name}: floating-point pixels outside [0, 1]; rescale them to "
                             "[0, 1]")
    else:
        array = array.astype(np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def _drop_alpha(array: np.ndarray, name: str, convert: bool) -> np.ndarray:
    colour, alpha = array[..., :-1], array[..., -1:]
    if (alpha < 1.0).any():
        if not convert:
            raise ImageError(f"{name} has transparent pixels; flatten it onto a background "
                             "first, or pass --convert to composite it onto black")
        colour = colour * alpha
    return colour


def match_channels(array: np.ndarray, channels: int, name: str, *, convert: bool = False,
                   has_alpha: bool = False) -> np.ndarray:
    """HWC float image with exactly `channels` channels, or an ImageError naming the fix."""
    if has_alpha:
        array = _drop_alpha(array, name, convert)
    have = array.shape[-1]
    if have == channels:
        return array
    if have == 3 and channels == 1:
        if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0],
                                                                           array[..., 2]):
            return array[..., :1]  # a grey image stored as RGB: nothing is lost
        if convert:
            return (array @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if have == 1 and channels == 3 and convert:
        return np.repeat(array, 3, axis=-1)
    hint = " or pass --convert" if {have, channels} == {1, 3} else ""
    raise ImageError(f"{name} has {_channels_word(have)} but the model expects "
                     f"{_channels_word(channels)}; convert it{hint}")


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    shrink = array.shape[0] >= height and array.shape[1] >= width
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c]), mode="F")
                         .resize((width, height), method))
              for c in range(array.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def read_image(path: str | Path, image_shape: Sequence[int], *, resize: bool = True,
               convert: bool = False) -> np.ndarray:
    """One image file as float32 HWC in [0, 1] of `image_shape` (resized unless `resize=False`)."""
    path = Path(path)
    height, width, channels = (int(v) for v in image_shape)
    if not path.is_file():
        raise ImageError(f"{path} not found; pass image files, a directory of them, or a .npy "
                         "array")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes); replace it with a real image or remove it")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            has_alpha = image.mode in ("LA", "RGBA", "PA") or (
                image.mode == "P" and "transparency" in image.info)
            array = _pil_to_float(image, str(path))
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file Pillow can read; pass PNG or JPEG files "
                         "(or a .npy array)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path} is too large to decode safely; downscale it first") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{path} is damaged or truncated ({err}); re-export the image") from None
    array = match_channels(array, channels, str(path), convert=convert, has_alpha=has_alpha)
    if array.shape[:2] != (height, width):
        if not resize:
            raise ImageError(f"{path} is {array.shape[1]}x{array.shape[0]} (WxH) but the model "
                             f"expects {width}x{height}; resize it, or drop --no-resize")
        array = _resize(array, height, width)
    return array.astype(np.float32)


def read_array(path: str | Path, image_shape: Sequence[int]) -> np.ndarray:
    """A .npy array of images as float32 NHWC in [0, 1]; its size must match `image_shape`."""
    path = Path(path)
    height, width, channels = (int(v) for v in image_shape)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ImageError(f"{path} not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise ImageError(f"{path} is not a readable .npy array ({err}); save it with "
                         "numpy.save") from None
    shape = tuple(array.shape)
    if array.ndim == 3 and shape == (height, width, channels):
        array = array[None]
    elif array.ndim == 3 and channels == 1 and shape[1:] == (height, width):
        array = array[..., None]  # N x H x W grey images
    elif array.ndim == 2 and channels == 1 and shape == (height, width):
        array = array[None, ..., None]
    if array.ndim != 4:
        raise ImageError(f"{path} has shape {shape}; expected N x {height} x {width} x {channels} "
                         "(NHWC) images")
    if tuple(array.shape[1:3]) != (height, width):
        raise ImageError(f"{path} holds {array.shape[2]}x{array.shape[1]} (WxH) images but the "
                         f"model expects {width}x{height}; resize them (image files are resized "
                         "automatically)")
    if array.shape[3] != channels:
        raise ImageError(f"{path} holds images with {_channels_word(array.shape[3])} but the "
                         f"model expects {_channels_word(channels)}; convert them")
    if array.shape[0] == 0:
        raise ImageError(f"{path} holds no images (shape {shape})")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"{path} has dtype {array.dtype}; use uint8 (0-255), uint16 or float "
                         "in [0, 1]")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError(f"{path} contains NaN or Inf pixels; clean or drop those images")
    if array.min() < 0.0 or array.max() > 1.0:
        raise ImageError(f"{path} has pixel values in [{array.min():g}, {array.max():g}]; "
                         "floating-point images must lie in [0, 1] (divide 8-bit values by 255)")
    return array


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files and .npy arrays named by `inputs`, directories expanded to their image files (sorted)."""
    if not inputs:
        raise ImageError("no inputs given; pass image files, a directory of them, or a .npy array")
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"directory {item} holds no image files "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif not item.exists():
            raise ImageError(f"{item} not found; pass image files, a directory of them, or a .npy "
                             "array")
        else:
            paths.append(item)
    return paths


def read_inputs(inputs: Sequence[str | Path], image_shape: Sequence[int], *, resize: bool = True,
                convert: bool = False) -> tuple[np.ndarray, list[str]]:
    """Every input as one float32 NHWC batch in [0, 1], and a name per image."""
    images: list[np.ndarray] = []
    names: list[str] = []
    for path in expand_inputs(inputs):
        if path.suffix.lower() == ARRAY_SUFFIX:
            array = read_array(path, image_shape)
            images.extend(array)
            names.extend(f"{path}[{i}]" for i in range(array.shape[0]))
        else:
            images.append(read_image(path, image_shape, resize=resize, convert=convert))
            names.append(str(path))
    return np.stack(images).astype(np.float32), names
