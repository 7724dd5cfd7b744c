"""Image files to uint8 HWC arrays, and any image to one (H, W, C): channels, resize, centre crop.

Resizing uses Pillow's bilinear filter, which widens its support when it shrinks (so it
averages the pixels it drops instead of aliasing), works on uint8 directly and gives the same
bytes on every machine: a NumPy or `jax.image` resize would go through floats and round on
the way back, and `jax.image` would run on the accelerator, whose float results need not match
the CPU's. The shorter side is scaled to fit and the longer one centre-cropped, so the aspect
ratio is kept and nothing is stretched; an image already of the asked size is left untouched.

Channels: grey to RGB copies the grey value to R, G and B; RGB to grey is ITU-R 601-2 luma
(L = 0.299 R + 0.587 G + 0.114 B, in Pillow's fixed-point arithmetic, so arrays and files agree).
Transparent pixels are composited onto black; 16-bit images are scaled to 8 bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from isnn_jax.data.common import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_ALPHA_MODES = ("LA", "RGBA", "PA")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_ORIENTATION_KEYS = {"exif", "xmp", "XML:com.adobe.xmp"}  # where Pillow finds an orientation


def mode_channels(mode: str) -> int:
    """The channels an image of Pillow `mode` decodes to here: 1 (grey) or 3 (colour)."""
    return 1 if mode in GREY_MODES else 3


def channels_word(count: int) -> str:
    """'grey (1 channel)' or 'RGB (3 channels)'."""
    return {1: "grey (1 channel)", 3: "RGB (3 channels)"}.get(count, f"{count} channels")


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] to [..., 1] by ITU-R 601-2 luma, bit for bit as Pillow's convert('L')."""
    wide = rgb.astype(np.uint32)
    luma = (wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 images [..., C] with C in 1..4 as [..., channels] (alpha of C=2 or 4 dropped)."""
    have = images.shape[-1]
    if have in (2, 4):
        images, have = images[..., :-1], have - 1
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        return to_grey(images)
    raise DataError(f"cannot convert images with {have} channels to {channels}; give grey "
                    f"(1) or RGB (3) images")


def fit_image(image: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """One uint8 HWC image as `image_shape`: channels converted, the shorter side resized to
    fit (bilinear), the longer one centre-cropped."""
    height, width, channels = image_shape
    image = convert_channels(image, channels)
    have_h, have_w = image.shape[:2]
    if (have_h, have_w) == (height, width):
        return image
    scale = max(height / have_h, width / have_w)
    new_h = max(height, int(round(have_h * scale)))
    new_w = max(width, int(round(have_w * scale)))
    if (new_h, new_w) != (have_h, have_w):
        plane = image[..., 0] if channels == 1 else image
        resized = Image.fromarray(np.ascontiguousarray(plane)).resize(
            (new_w, new_h), Image.Resampling.BILINEAR)
        image = np.asarray(resized).reshape(new_h, new_w, channels)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


def fit_images(images: np.ndarray, image_shape: tuple[int, int, int] | None) -> np.ndarray:
    """uint8 NHWC images as `image_shape` (None: as they are)."""
    if image_shape is None or tuple(images.shape[1:]) == tuple(image_shape):
        return images
    images = convert_channels(images, image_shape[2])
    if tuple(images.shape[1:3]) == tuple(image_shape[:2]):
        return np.ascontiguousarray(images)
    out = np.empty((images.shape[0], *image_shape), np.uint8)
    for index, image in enumerate(images):
        out[index] = fit_image(image, image_shape)
    return out


def _unreadable(path: Path, err: BaseException) -> DataError:
    return DataError(f"{path} cannot be read as an image ({type(err).__name__}: {err}); "
                     f"replace or delete the file")


def read_header(path: Path) -> tuple[int, int, int]:
    """(height, width, channels) a file decodes to, from its header only (EXIF turns included)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.info.keys() & _ORIENTATION_KEYS and image.getexif().get(0x0112) in _TURNED:
                width, height = height, width
            return height, width, mode_channels(image.mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        raise _unreadable(path, err) from None


def _composite_alpha(array: np.ndarray) -> np.ndarray:
    """uint8 [..., C+1] with alpha last onto black: round(colour * alpha / 255)."""
    colour, alpha = array[..., :-1].astype(np.uint32), array[..., -1:].astype(np.uint32)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def _to_uint8(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    if mode.startswith("I;16") or (mode == "I" and array.size and array.max() > 255):
        if mode == "I" and (array.min() < 0 or array.max() > 65535):
            raise DataError(f"{path}: 32-bit pixels outside [0, 65535]; save it as an 8- or "
                            f"16-bit image")
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise DataError(f"{path}: floating-point pixels outside [0, 1]; save it as an 8-bit "
                            f"image")
        return np.round(array * 255.0).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8) if array.dtype != np.uint8 else array


def decode_file(path: Path) -> np.ndarray:
    """One image file as uint8 HWC, grey (1 channel) or RGB (3); a DataError names a bad file."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.info.keys() & _ORIENTATION_KEYS:  # (checking costs a sixth of a small PNG)
                image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode == "P":
                mode = "RGBA" if "transparency" in image.info else "RGB"
                image = image.convert(mode)
            elif mode == "1":
                image, mode = image.convert("L"), "L"
            elif mode not in GREY_MODES + ("RGB", "RGBA"):
                mode = "RGBA" if mode == "PA" else "RGB"
                image = image.convert(mode)  # CMYK, YCbCr, LAB, HSV, PA
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        raise _unreadable(path, err) from None
    array = _to_uint8(array, mode, path)
    if array.ndim == 2:
        array = array[..., None]
    if mode in _ALPHA_MODES:
        array = _composite_alpha(array)
    return array
