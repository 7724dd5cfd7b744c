"""Data layer: offline TFDS builders, TensorFlow-free loading, process shares, batch order."""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds

from isnn_jax.data import (
    DATASETS,
    DatasetNotFoundError,
    IdxFormatError,
    batch_indices,
    epoch_permutation,
    load_split,
    steps_per_epoch,
    to_float,
)
from isnn_jax.data.fashion_mnist_idx import (
    DEFAULT_SOURCE_DIR,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    parse_idx,
    source_config,
)
from isnn_jax.data import pipeline
from isnn_jax.data.pipeline import records_to_arrays

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 20, "test": 10}


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """An uncompressed IDX payload: big-endian magic, dimensions, then uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_source(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny Fashion-MNIST-shaped IDX .gz files with known pixels; returns what was written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, (image_file, label_file) in FILES.items():
        images = rng.integers(0, 256, (SIZES[split], 28, 28), dtype=np.uint8)
        labels = (np.arange(SIZES[split]) % 10).astype(np.uint8)
        (root / image_file).write_bytes(gzip.compress(idx_bytes(IMAGES_MAGIC, images)))
        (root / label_file).write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, labels)))
        written[split] = (images[..., None], labels)
    return written


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One TFDS data dir per module, so digits is prepared once."""
    return str(tmp_path_factory.mktemp("tfds"))


def test_digits_builder_shapes_range_and_determinism(data_dir: str) -> None:
    train_x, train_y = load_split("digits", "train", data_dir=data_dir)
    test_x, test_y = load_split("digits", "test", data_dir=data_dir)
    assert train_x.shape[0] + test_x.shape[0] == 1797
    assert (train_x.shape[0], test_x.shape[0]) == (1437, 360)
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert x.shape[1:] == (8, 8, 1) and x.dtype == np.uint8
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
    assert train_x.min() == 0 and train_x.max() == 255
    allowed = {int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)}
    assert set(np.unique(train_x).tolist()) <= allowed
    again_x, again_y = load_split("digits", "train", data_dir=data_dir)
    np.testing.assert_array_equal(again_x, train_x)
    np.testing.assert_array_equal(again_y, train_y)


def test_digits_rebuilt_elsewhere_gives_the_same_split(tmp_path: Path, data_dir: str) -> None:
    fresh_x, fresh_y = load_split("digits", "test", data_dir=str(tmp_path))
    cached_x, cached_y = load_split("digits", "test", data_dir=data_dir)
    np.testing.assert_array_equal(fresh_x, cached_x)
    np.testing.assert_array_equal(fresh_y, cached_y)


def test_fashion_idx_builder_returns_exact_pixels_and_labels(tmp_path: Path) -> None:
    written = write_fake_source(tmp_path / "src")
    for split, (images, labels) in written.items():
        x, y = load_split("fashion_mnist_idx", split, data_dir=str(tmp_path / "tfds"),
                          source_dir=str(tmp_path / "src"))
        assert x.dtype == np.uint8 and y.dtype == np.int32
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)
    builder = tfds.builder("isnn_fashion_mnist", data_dir=str(tmp_path / "tfds"),
                           source_dir=str(tmp_path / "src"))
    assert builder.info.features["label"].names[0] == "T-shirt/top"
    assert builder.info.features["label"].num_classes == 10


def test_fashion_cache_is_keyed_by_source_content(tmp_path: Path) -> None:
    write_fake_source(tmp_path / "a", seed=1)
    write_fake_source(tmp_path / "b", seed=1)
    write_fake_source(tmp_path / "c", seed=2)
    assert source_config(tmp_path / "a").name == source_config(tmp_path / "b").name
    assert source_config(tmp_path / "a").name != source_config(tmp_path / "c").name
    x_a, _ = load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path / "tfds"),
                        source_dir=str(tmp_path / "a"))
    x_c, _ = load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path / "tfds"),
                        source_dir=str(tmp_path / "c"))
    assert not np.array_equal(x_a, x_c)


def test_missing_source_dir_raises_with_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path / "tfds"),
                   source_dir=str(missing))
    message = str(info.value)
    assert "dataset-fashion-mnist" in message and str(missing) in message
    assert "fashion_mnist" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_single_file_is_named(tmp_path: Path) -> None:
    write_fake_source(tmp_path / "src")
    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path / "tfds"),
                   source_dir=str(tmp_path / "src"))


def test_corrupted_magic_number_is_a_clear_error(tmp_path: Path) -> None:
    write_fake_source(tmp_path / "src")
    bad = idx_bytes(0x00000999, np.zeros((20, 28, 28), np.uint8))
    (tmp_path / "src" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(IdxFormatError, match="magic number 0x00000999"):
        load_split("fashion_mnist_idx", "train", data_dir=str(tmp_path / "tfds"),
                   source_dir=str(tmp_path / "src"))


def test_idx_size_mismatch_and_bad_gzip_are_errors(tmp_path: Path) -> None:
    payload = idx_bytes(LABELS_MAGIC, np.arange(5, dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="needs"):
        parse_idx(payload[:-1], LABELS_MAGIC, "labels")
    np.testing.assert_array_equal(parse_idx(payload, LABELS_MAGIC, "labels"), np.arange(5))
    write_fake_source(tmp_path / "src")
    (tmp_path / "src" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(IdxFormatError, match="gzip"):
        load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path / "tfds"),
                   source_dir=str(tmp_path / "src"))


@pytest.mark.parametrize("count", [1, 3, 7])
def test_process_shares_are_disjoint_and_cover_the_split(data_dir: str, count: int) -> None:
    full_x, full_y = load_split("digits", "test", data_dir=data_dir)
    shares = [load_split("digits", "test", data_dir=data_dir, process_index=i,
                         process_count=count) for i in range(count)]
    sizes = [len(y) for _, y in shares]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(full_y)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in shares]), full_x)
    np.testing.assert_array_equal(np.concatenate([y for _, y in shares]), full_y)


def test_drop_remainder_gives_equal_shares(data_dir: str) -> None:
    shares = [load_split("digits", "test", data_dir=data_dir, process_index=i, process_count=7,
                         drop_remainder=True)[1] for i in range(7)]
    assert {len(s) for s in shares} == {360 // 7}


def test_bad_process_index_and_names(data_dir: str) -> None:
    with pytest.raises(ValueError, match="process_index"):
        load_split("digits", "test", data_dir=data_dir, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="digits, fashion_mnist_idx, mnist"):
        load_split("imagenet", "train", data_dir=data_dir)
    with pytest.raises(ValueError, match="source_dir"):
        load_split("digits", "test", data_dir=data_dir, source_dir="/tmp")


def test_batch_indices_deterministic_and_a_permutation_per_epoch() -> None:
    n, b, seed = 103, 10, 42
    per_epoch = steps_per_epoch(n, b)
    assert per_epoch == 10
    epoch0 = np.concatenate([batch_indices(n, b, seed, s) for s in range(per_epoch)])
    assert len(epoch0) == per_epoch * b and len(np.unique(epoch0)) == len(epoch0)
    assert epoch0.min() >= 0 and epoch0.max() < n
    np.testing.assert_array_equal(epoch0, epoch_permutation(n, seed, 0)[:per_epoch * b])
    resumed = [batch_indices(n, b, seed, s) for s in range(per_epoch, 2 * per_epoch)]
    np.testing.assert_array_equal(resumed[3], batch_indices(n, b, seed, per_epoch + 3))
    assert not np.array_equal(np.concatenate(resumed), epoch0)
    assert not np.array_equal(batch_indices(n, b, seed + 1, 0), batch_indices(n, b, seed, 0))
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(5, 6, seed, 0)


def test_to_float_range_and_dtype() -> None:
    images = np.array([[0, 128, 255]], np.uint8)
    out = to_float(images)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(TypeError):
        to_float(out)


def test_records_to_arrays_checks_shape() -> None:
    records = [{"image": np.full((2, 2, 1), i, np.uint8), "label": i} for i in range(5)]
    images, labels = records_to_arrays(records, (2, 2, 1), chunk=2)
    assert images.shape == (5, 2, 2, 1) and labels.tolist() == list(range(5))
    with pytest.raises(ValueError, match="shape"):
        records_to_arrays(records, (3, 3, 1))


def item_by_item(source: Sequence[Mapping[str, Any]], keys: list[int]) -> list[Any]:
    """Per-item reads: tfds.testing.mock_data (4.9.10) serves `source[i]` but its
    `__getitems__` is an unbound partial that raises TypeError."""
    return [source[k] for k in keys]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_standard_names_through_mocked_tfds(tmp_path: Path, name: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DATASETS[name]
    monkeypatch.setattr(pipeline, "read_records", item_by_item)
    with tfds.testing.mock_data(num_examples=12):
        images, labels = load_split(name, "train", data_dir=str(tmp_path))
    assert images.shape == (12, *spec.image_shape) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < spec.num_classes


def test_failed_download_names_offline_alternatives(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Failed to resolve host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist", "train", data_dir=str(tmp_path))
    message = str(info.value)
    assert "internet" in message and "'digits'" in message and "'fashion_mnist_idx'" in message


def test_missing_tensorflow_for_standard_names_is_explained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tf(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("Failed to encode example: No module named 'tensorflow'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_tf)
    with pytest.raises(ImportError, match="tensorflow-cpu"):
        load_split("cifar10", "test", data_dir=str(tmp_path))


@pytest.mark.skipif(not Path(DEFAULT_SOURCE_DIR).is_dir(),
                    reason="Fashion-MNIST IDX files not installed (dataset-fashion-mnist)")
def test_real_fashion_mnist_test_split(tmp_path: Path) -> None:
    images, labels = load_split("fashion_mnist_idx", "test", data_dir=str(tmp_path))
    assert images.shape == (10_000, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 1000))
