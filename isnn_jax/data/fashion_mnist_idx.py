"""TFDS builder `isnn_fashion_mnist`: Fashion-MNIST from local IDX .gz files, with no network.

The raw files come from a directory (default: where the Debian package `dataset-fashion-mnist`
installs them). The builder config is named after a SHA-256 of those files, so the prepared
cache (`<data_dir>/isnn_fashion_mnist/src_<hash>/<version>`) always matches the source files:
another directory with the same files reuses it, changed files get a fresh one.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from isnn_jax.data.pipeline import FASHION_MNIST_CLASS_NAMES, DatasetNotFoundError

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SHAPE: tuple[int, int, int] = (28, 28, 1)
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
SPLIT_FILES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
})


class IdxFormatError(ValueError):
    """An IDX file is not what Fashion-MNIST should be (magic number, sizes, labels)."""


def missing_source_message(missing: Path) -> str:
    """Names the missing path and the three ways to get the data."""
    return (f"Fashion-MNIST IDX data not found: {missing} does not exist.\n"
            f"Fix one of: install the files with `apt-get install -y dataset-fashion-mnist` "
            f"(they go to {DEFAULT_SOURCE_DIR}); or point the source directory option "
            f"(`source_dir=`, config.data.source_dir) at a directory holding "
            f"{', '.join(f for pair in SPLIT_FILES.values() for f in pair)}; or, on a machine "
            f"with internet, use the TFDS name `fashion_mnist` instead.")


def source_files(source_dir: str | Path) -> dict[str, Path]:
    """The four IDX paths by file name; DatasetNotFoundError names the first missing one."""
    root = Path(source_dir)
    if not root.is_dir():
        raise DatasetNotFoundError(missing_source_message(root))
    paths = {name: root / name for pair in SPLIT_FILES.values() for name in pair}
    for path in paths.values():
        if not path.is_file():
            raise DatasetNotFoundError(missing_source_message(path))
    return paths


def source_fingerprint(source_dir: str | Path) -> str:
    """SHA-256 over the four files' names and bytes: the identity of the prepared cache."""
    digest = hashlib.sha256()
    for name, path in sorted(source_files(source_dir).items()):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def parse_idx(data: bytes, expected_magic: int, origin: str) -> np.ndarray:
    """Decode one uncompressed IDX payload (big-endian header), validating magic and sizes."""
    if len(data) < 4:
        raise IdxFormatError(f"{origin}: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise IdxFormatError(f"{origin}: IDX magic number 0x{magic:08x}, expected "
                             f"0x{expected_magic:08x}; the file is corrupt or not this kind")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{origin}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header
    if len(data) != expected:
        raise IdxFormatError(f"{origin}: {len(data)} bytes but header shape {shape} "
                             f"needs {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_gz(path: Path, expected_magic: int) -> np.ndarray:
    """Decompress and parse one IDX .gz file; gzip damage becomes an IdxFormatError."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise IdxFormatError(f"{path}: not a readable gzip file ({e})") from e
    return parse_idx(data, expected_magic, str(path))


def read_split(source_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N,28,28,1) images, uint8 labels) of one split, validated against each other."""
    paths = source_files(source_dir)
    image_file, label_file = SPLIT_FILES[split]
    images = read_idx_gz(paths[image_file], IMAGES_MAGIC)
    labels = read_idx_gz(paths[label_file], LABELS_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise IdxFormatError(f"{paths[image_file]}: images are {images.shape[1:]}, "
                             f"expected {IMAGE_SHAPE[:2]}")
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(f"{paths[image_file]} has {images.shape[0]} images but "
                             f"{paths[label_file]} has {labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASS_NAMES):
        raise IdxFormatError(f"{paths[label_file]}: label {int(labels.max())} out of range")
    return images[..., None], labels


@dataclasses.dataclass(eq=False)
class IdxSourceConfig(tfds.core.BuilderConfig):
    """Config carrying the raw-file directory; its name is the files' fingerprint."""

    source_dir: str = DEFAULT_SOURCE_DIR


def source_config(source_dir: str | Path | None = None) -> IdxSourceConfig:
    """The content-named config for a source directory (reads and hashes the files)."""
    root = Path(source_dir or DEFAULT_SOURCE_DIR).resolve()
    return IdxSourceConfig(name=f"src_{source_fingerprint(root)[:16]}", source_dir=str(root),
                           description=f"Fashion-MNIST IDX files from {root}")


class IsnnFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (train 60,000 / test 10,000, 28x28x1 uint8) from local IDX .gz files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, source_dir: str | Path | None = None,
                 config: IdxSourceConfig | str | None = None, **kwargs: Any) -> None:
        """Pick the content-named config of `source_dir` unless a config is given."""
        if config is None:
            config = source_config(source_dir)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        """Features: raw uint8 tensor (fast NumPy decoding) and the 10 class names."""
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST read from local IDX files, in file order.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(FASHION_MNIST_CLASS_NAMES)),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        """One generator per split, reading from the config's source directory."""
        del dl_manager  # nothing to download
        source_dir = self.builder_config.source_dir
        return {split: self._generate_examples(*read_split(source_dir, split))
                for split in SPLIT_FILES}

    def _generate_examples(self, images: np.ndarray,
                           labels: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """Examples keyed by their index in the IDX file (order preserved)."""
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": int(label)}
