"""Your own data: image folders, .npz arrays, any TFDS name, resizing, training augmentation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from isnn_jax.data import (DataError, DatasetNotFoundError, augment_options, batch_indices,
                           data_options, describe, load_split, to_float)
from isnn_jax.data import pipeline
from isnn_jax.data.common import share_bounds
from isnn_jax.data.images import fit_image, to_grey
from isnn_jax.data.streams import TrainStreams, augment
from isnn_jax.training.config import ConfigError, default_config


def write_image(path: Path, array: np.ndarray) -> Path:
    """One image file (PNG or JPEG by suffix) of a uint8 HW or HWC array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(path)
    return path


def grey_folder(root: Path, counts: Mapping[str, int] | None = None, size: tuple[int, int] = (6, 5),
                classes: Sequence[str] = ("zebra", "ant", "moth")) -> dict[str, list[np.ndarray]]:
    """Grey PNGs whose pixels encode (split, class, index); returns them in the expected order
    (sorted class, then sorted file name)."""
    counts = counts or {"train": 4, "test": 2}
    expected: dict[str, list[np.ndarray]] = {}
    for split, count in counts.items():
        expected[split] = []
        for label, name in enumerate(sorted(classes)):
            for index in range(count):
                value = 100 * (split == "test") + 10 * label + index
                image = np.full((*size, 1), value, np.uint8)
                image[0, 0, 0] = 255 - index  # not uniform: a flip or crop would show
                write_image(root / split / name / f"{index:03d}.png", image)
                expected[split].append(image)
    return expected


# --- image_folder ------------------------------------------------------------------------------

def test_image_folder_pixels_labels_classes_in_sorted_order(tmp_path: Path) -> None:
    expected = grey_folder(tmp_path)
    spec = describe("image_folder", source_dir=str(tmp_path))
    assert spec.class_names == ("ant", "moth", "zebra") and spec.num_classes == 3
    assert spec.image_shape == (6, 5, 1)
    for split in ("train", "test"):
        images, labels = load_split("image_folder", split, source_dir=str(tmp_path))
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, np.stack(expected[split]))
        per_class = len(expected[split]) // 3
        np.testing.assert_array_equal(labels, np.repeat(np.arange(3), per_class))


def test_image_folder_rgb_grey_and_sizes_fitted_to_image_shape(tmp_path: Path) -> None:
    red = np.zeros((12, 20, 3), np.uint8)
    red[..., 0] = 200
    write_image(tmp_path / "train" / "colour" / "a.png", red)
    write_image(tmp_path / "train" / "colour" / "b.jpg", np.full((30, 16, 3), 90, np.uint8))
    write_image(tmp_path / "train" / "grey" / "c.png", np.full((9, 9), 77, np.uint8))
    write_image(tmp_path / "test" / "colour" / "d.png", red)
    write_image(tmp_path / "test" / "grey" / "e.png", np.full((7, 7), 5, np.uint8))
    spec = describe("image_folder", source_dir=str(tmp_path), image_shape=(8, 8, 3))
    assert spec.image_shape == (8, 8, 3) and spec.class_names == ("colour", "grey")
    images, labels = load_split("image_folder", "train", source_dir=str(tmp_path),
                                image_shape=(8, 8, 3))
    assert images.shape == (3, 8, 8, 3) and labels.tolist() == [0, 0, 1]
    assert (images[0, ..., 0] == 200).all() and (images[0, ..., 1:] == 0).all()
    assert np.abs(images[1].astype(int) - 90).max() <= 2  # JPEG
    assert (images[2] == 77).all()  # grey copied to R, G and B
    grey, _ = load_split("image_folder", "test", source_dir=str(tmp_path), image_shape=(4, 4, 1))
    assert grey.shape == (2, 4, 4, 1)
    assert (grey[0] == to_grey(np.array([[200, 0, 0]], np.uint8))[0, 0]).all()
    assert (grey[1] == 5).all()


def test_image_folder_shares_are_contiguous_and_cover_the_split(tmp_path: Path) -> None:
    grey_folder(tmp_path, {"train": 3, "test": 1}, classes=("a", "b", "c"))  # 9 train images
    full_x, full_y = load_split("image_folder", "train", source_dir=str(tmp_path))
    for count in (1, 2, 4):
        shares = [load_split("image_folder", "train", source_dir=str(tmp_path),
                             process_index=i, process_count=count) for i in range(count)]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in shares]), full_x)
        np.testing.assert_array_equal(np.concatenate([y for _, y in shares]), full_y)
        assert [len(y) for _, y in shares] == [9 // count + (i < 9 % count) for i in range(count)]
    dropped = [load_split("image_folder", "train", source_dir=str(tmp_path), process_index=i,
                          process_count=4, drop_remainder=True)[1] for i in range(4)]
    assert [len(y) for y in dropped] == [2, 2, 2, 2]


def test_share_bounds_cut_as_tfds_even_splits() -> None:
    from tensorflow_datasets.core import splits as splits_lib

    for n in range(1, 24):
        infos = splits_lib.SplitDict([splits_lib.SplitInfo(name="train", shard_lengths=[n],
                                                           num_bytes=0)])
        for count in range(1, 7):
            for drop in (False, True):
                for index, split in enumerate(tfds.even_splits("train", n=count,
                                                               drop_remainder=drop)):
                    cut = split.to_absolute(infos)[0]  # None: from the start, to the end
                    bounds = (cut.from_ or 0, n if cut.to is None else cut.to)
                    assert bounds == share_bounds(n, index, count, drop)


def test_image_folder_empty_class_folder_is_named(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    (tmp_path / "test" / "empty").mkdir()
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"train/empty holds no \.png/\.jpg/\.jpeg images"):
        describe("image_folder", source_dir=str(tmp_path))


def test_image_folder_corrupt_file_is_named(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    bad = tmp_path / "train" / "moth" / "002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=f"{bad} cannot be read as an image"):
        load_split("image_folder", "train", source_dir=str(tmp_path))


def test_image_folder_mixed_channels_names_one_file_of_each(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    rgb = write_image(tmp_path / "train" / "moth" / "zz.png", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(DataError) as info:
        load_split("image_folder", "train", source_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "train" / "ant" / "000.png") in message and str(rgb) in message
    assert "grey (1 channel)" in message and "RGB (3 channels)" in message
    assert "--config.data.image_shape=(H,W,C)" in message
    images, _ = load_split("image_folder", "train", source_dir=str(tmp_path),
                           image_shape=(6, 5, 1))
    assert images.shape == (13, 6, 5, 1)


def test_image_folder_sizes_differ_without_image_shape(tmp_path: Path) -> None:
    grey_folder(tmp_path)
    odd = write_image(tmp_path / "test" / "zebra" / "big.png", np.zeros((9, 9), np.uint8))
    with pytest.raises(DataError) as info:
        load_split("image_folder", "test", source_dir=str(tmp_path))
    message = str(info.value)
    assert "differ in size" in message and str(odd) in message and "5x6" in message
    assert str(tmp_path / "train" / "ant" / "000.png") in message
    assert "--config.data.image_shape=(H,W,C)" in message


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="source_dir"):
        describe("image_folder")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        describe("image_folder", source_dir=str(tmp_path / "nowhere"))
    grey_folder(tmp_path, {"train": 1})
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'test'} not found"):
        describe("image_folder", source_dir=str(tmp_path))
    grey_folder(tmp_path, {"test": 1}, classes=("ant", "moth", "wasp"))
    with pytest.raises(DataError, match="only in test/: wasp; missing from test/: zebra"):
        describe("image_folder", source_dir=str(tmp_path))
    loose = tmp_path / "loose"
    write_image(loose / "train" / "a.png", np.zeros((4, 4), np.uint8))
    (loose / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        describe("image_folder", source_dir=str(loose))
    with pytest.raises(DataError, match="image_key"):
        describe("image_folder", source_dir=str(tmp_path), image_key="picture")
    with pytest.raises(DataError, match="splits train, test"):
        load_split("image_folder", "validation", source_dir=str(tmp_path))


# --- arrays ------------------------------------------------------------------------------------

def save_arrays(path: Path, **arrays: Any) -> str:
    rng = np.random.default_rng(0)
    defaults = {"x_train": rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8),
                "y_train": np.arange(7) % 3,
                "x_test": rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8),
                "y_test": np.array([2, 1, 0])}
    np.savez(path, **{**defaults, **arrays})
    return str(path)


def test_arrays_round_trip_shares_and_class_names(tmp_path: Path) -> None:
    path = save_arrays(tmp_path / "data.npz", class_names=np.array(["cat", "dog", "eel"]))
    with np.load(path) as data:
        x_train, y_train = data["x_train"], data["y_train"]
    spec = describe("arrays", source_dir=path)
    assert spec.image_shape == (4, 4, 3) and spec.class_names == ("cat", "dog", "eel")
    images, labels = load_split("arrays", "train", source_dir=path)
    np.testing.assert_array_equal(images, x_train)
    np.testing.assert_array_equal(labels, y_train)
    assert labels.dtype == np.int32
    shares = [load_split("arrays", "train", source_dir=path, process_index=i,
                         process_count=3)[1] for i in range(3)]
    assert [len(s) for s in shares] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(shares), y_train)


def test_arrays_float_nhw_images_and_default_class_names(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 5 * 6 * 6).reshape(5, 6, 6)
    path = save_arrays(tmp_path / "f.npz", x_train=x, y_train=np.array([0, 1, 0, 1, 3]),
                       x_test=x[:2], y_test=np.array([[1], [0]]))
    spec = describe("arrays", source_dir=path)
    assert spec.image_shape == (6, 6, 1) and spec.class_names == ("0", "1", "2", "3")
    images, labels = load_split("arrays", "test", source_dir=path)
    assert images.shape == (2, 6, 6, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], np.round(x[:2] * 255).astype(np.uint8))
    assert labels.tolist() == [1, 0]
    fitted, _ = load_split("arrays", "train", source_dir=path, image_shape=(3, 3, 3))
    assert fitted.shape == (5, 3, 3, 3)


def test_arrays_bad_labels_and_values_are_named(tmp_path: Path) -> None:
    names = np.array(["a", "b", "c"])
    path = save_arrays(tmp_path / "a.npz", y_test=np.array([0, 3, 1]), class_names=names)
    with pytest.raises(DataError, match="y_test holds the label 3 but class_names names 3"):
        describe("arrays", source_dir=path)
    path = save_arrays(tmp_path / "b.npz", y_train=np.array([0, 1, -1, 0, 1, 0, 1]))
    with pytest.raises(DataError, match="y_train holds the label -1"):
        load_split("arrays", "train", source_dir=path)
    path = save_arrays(tmp_path / "c.npz", y_train=np.array([0, 1, 0.5, 0, 1, 0, 1]))
    with pytest.raises(DataError, match="non-integer label 0.5"):
        describe("arrays", source_dir=path)
    path = save_arrays(tmp_path / "d.npz", x_test=np.full((3, 4, 4, 3), 1.5))
    with pytest.raises(DataError, match=r"x_test holds floats in \[1.5, 1.5\]"):
        load_split("arrays", "test", source_dir=path)
    path = save_arrays(tmp_path / "e.npz", y_train=np.arange(6))
    with pytest.raises(DataError, match="one integer label per image"):
        describe("arrays", source_dir=path)
    np.savez(tmp_path / "f.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="lacks y_train, x_test, y_test"):
        describe("arrays", source_dir=str(tmp_path / "f.npz"))
    with pytest.raises(DatasetNotFoundError, match="none.npz not found"):
        describe("arrays", source_dir=str(tmp_path / "none.npz"))


# --- other TFDS names, resizing ----------------------------------------------------------------

def item_by_item(source: Sequence[Mapping[str, Any]], keys: list[int]) -> list[Any]:
    """tfds.testing.mock_data serves `source[i]` but not `__getitems__` (test_data.py)."""
    return [source[k] for k in keys]


def test_tfds_name_with_named_features_resized(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as info:
        describe("smallnorb", data_dir=str(tmp_path))
    assert "image, image2" in str(info.value) and "--config.data.image_key" in str(info.value)
    options = {"data_dir": str(tmp_path), "image_key": "image2", "label_key": "label_category"}
    with pytest.raises(DataError, match="label_key"):
        describe("smallnorb", data_dir=str(tmp_path), image_key="image2")
    with pytest.raises(DataError, match="no feature 'picture'"):
        describe("smallnorb", data_dir=str(tmp_path), image_key="picture")
    spec = describe("smallnorb", **options, image_shape=(32, 32, 3))
    assert spec.image_shape == (32, 32, 3) and spec.num_classes == 5
    assert spec.class_names[0] == "four-legged animals"
    monkeypatch.setattr(pipeline, "read_records", item_by_item)
    with tfds.testing.mock_data(num_examples=6):
        images, labels = load_split("smallnorb", "train", **options, image_shape=(32, 32, 3))
        own, _ = load_split("smallnorb", "test", **options)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert (images[..., 0] == images[..., 1]).all()  # grey copied to R, G and B
    assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < 5
    assert own.shape == (6, 96, 96, 1)


def test_packaged_tfds_name_resized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert describe("mnist", image_shape=(32, 32, 3)).image_shape == (32, 32, 3)
    monkeypatch.setattr(pipeline, "read_records", item_by_item)
    with tfds.testing.mock_data(num_examples=5):
        images, labels = load_split("mnist", "test", data_dir=str(tmp_path),
                                    image_shape=(32, 32, 3))
    assert images.shape == (5, 32, 32, 3) and labels.max() < 10


def test_variable_size_tfds_images_need_image_shape(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no fixed shape \(None, None, 3\)"):
        describe("oxford_iiit_pet", data_dir=str(tmp_path), image_key="image",
                 label_key="label")
    with pytest.raises(DataError, match="unknown dataset 'no_such_set'.*image_folder"):
        describe("no_such_set", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="image_shape"):
        describe("digits", image_shape=(8, 8))


def test_fit_image_crops_the_centre_and_converts_like_pillow() -> None:
    wide = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8, 1)
    np.testing.assert_array_equal(fit_image(wide, (4, 4, 1)), wide[:, 2:6])  # no resampling
    assert fit_image(wide, (4, 8, 1)) is wide
    assert fit_image(wide, (2, 2, 3)).shape == (2, 2, 3)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(to_grey(rgb)[..., 0], pillow)


def test_data_options_from_config_and_old_metadata() -> None:
    config = default_config()
    config.data.source_dir = "/some/where"
    config.data.image_shape = (32, 32, 3)
    assert data_options(config.data) == {"data_dir": None, "source_dir": "/some/where",
                                         "image_key": "", "label_key": "",
                                         "image_shape": (32, 32, 3)}
    stored = json.loads(json.dumps(config.data.to_dict()))  # as metadata keeps it
    assert data_options(stored) == data_options(config.data)
    assert data_options({"data_dir": "/d"})["image_shape"] == ()  # older metadata
    assert augment_options({}) == {"random_crop": 0, "random_flip": False}
    with pytest.raises(DataError, match="random_crop"):
        augment_options({"random_crop": -2})


# --- training augmentation ---------------------------------------------------------------------

def streams_of(seed: int = 3, **augmentation: Any) -> TrainStreams:
    rng = np.random.default_rng(0)
    shards = tuple((rng.integers(0, 256, (20, 6, 6, 1), dtype=np.uint8),
                    np.arange(20, dtype=np.int32) % 4) for _ in range(2))
    return TrainStreams(shards, 5, seed, 0, **augmentation)


def test_augmentation_is_a_pure_function_of_seed_and_step() -> None:
    first, again = streams_of(random_crop=2, random_flip=True), streams_of(random_crop=2,
                                                                          random_flip=True)
    for step in (0, 1, 7):
        np.testing.assert_array_equal(first.batch(step)["image"], again.batch(step)["image"])
    assert not np.array_equal(first.batch(0)["image"], first.batch(1)["image"])
    plain = streams_of()
    np.testing.assert_array_equal(first.batch(2)["label"], plain.batch(2)["label"])
    assert not np.array_equal(first.batch(2)["image"], plain.batch(2)["image"])
    other = streams_of(seed=4, random_crop=2, random_flip=True)
    assert not np.array_equal(other.batch(0)["image"], first.batch(0)["image"])
    # Each stream's augmentation depends on its stream index only: one process reading stream 1
    # sees what the two-stream process sees in the second half of its batch.
    alone = TrainStreams(first.shards[1:], 5, 3, 1, random_crop=2, random_flip=True)
    np.testing.assert_array_equal(alone.batch(5)["image"], first.batch(5)["image"][5:])


def test_augmentation_off_leaves_batches_unchanged() -> None:
    streams = streams_of()
    for step in (0, 3):
        expected = [images[batch_indices(20, 5, 3 + s * 1_000_003, step)]
                    for s, (images, _) in enumerate(streams.shards)]
        np.testing.assert_array_equal(streams.batch(step)["image"],
                                      to_float(np.concatenate(expected)))


def test_crop_and_flip_are_windows_and_mirrors() -> None:
    images = np.random.default_rng(2).integers(1, 256, (16, 5, 7, 3), dtype=np.uint8)
    flipped = augment(images, np.random.default_rng(0), 0, True)
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)]
    kept = [np.array_equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    cropped = augment(images, np.random.default_rng(0), 2, False)
    assert cropped.shape == images.shape
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for crop, pad in zip(cropped, padded):
        assert any(np.array_equal(crop, pad[t:t + 5, l:l + 7])
                   for t in range(5) for l in range(5))


# --- training on an image folder ---------------------------------------------------------------

def tiny_folder_config(tmp_path: Path, source: Path):
    from tiny_config import tiny_config

    config = tiny_config(str(tmp_path / "tfds"), batch_size=16, epochs=1, log_every_steps=1)
    config.data.name = "image_folder"
    config.data.source_dir = str(source)
    config.data.image_shape = (8, 8, 1)
    return config


def test_bad_folder_is_a_config_error_before_anything_is_written(tmp_path: Path) -> None:
    from isnn_jax.training.loop import train_and_evaluate

    grey_folder(tmp_path / "src")
    (tmp_path / "src" / "train" / "empty").mkdir()
    (tmp_path / "src" / "test" / "empty").mkdir()
    config = tiny_folder_config(tmp_path, tmp_path / "src")
    config.protect = False
    with pytest.raises(ConfigError, match="empty holds no"):
        train_and_evaluate(config, tmp_path / "w", None)
    assert not (tmp_path / "w").exists()
    config.data.random_crop = -1
    with pytest.raises(ConfigError, match="random_crop"):
        train_and_evaluate(config, tmp_path / "w", None)
    config.data.random_crop = 0
    config.data.image_shape = ()
    for split in ("train", "test"):
        (tmp_path / "src" / split / "empty").rmdir()
    write_image(tmp_path / "src" / "train" / "zebra" / "big.png", np.zeros((9, 9), np.uint8))
    with pytest.raises(ConfigError, match="differ in size"):  # found while reading the images
        train_and_evaluate(config, tmp_path / "w", None)
    assert not (tmp_path / "w").exists()  # the data is read before the workdir is made


@pytest.mark.slow
def test_train_and_evaluate_on_an_image_folder(tmp_path: Path) -> None:
    from isnn_jax import api
    from isnn_jax.protection.licence import Licence, TransformSpec
    from isnn_jax.training.loop import train_and_evaluate
    from tiny_config import EPSILON

    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 4)):
        for label, name in enumerate(("circle", "square", "triangle")):
            for index in range(count):
                image = rng.integers(0, 60, (12, 10, 3), dtype=np.uint8) + 60 * label
                write_image(tmp_path / "src" / split / name / f"{index}.png", image)
    config = tiny_folder_config(tmp_path, tmp_path / "src")
    config.data.random_crop = 1
    config.data.random_flip = True
    config.objective.near_keys = 4
    config.eval.random_licences = 2
    config.eval.near_per_class = 1
    licence = Licence.issue("(c) Seller; Buyer; folder", TransformSpec(epsilon=EPSILON))
    report = train_and_evaluate(config, tmp_path / "w", licence)
    assert report["step"] == 48 // 16 and report["num_images"] == 12
    meta = json.loads((tmp_path / "w" / "isnn_metadata.json").read_text())
    assert meta["dataset"] == "image_folder" and meta["image_shape"] == [8, 8, 1]
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["num_classes"] == 3
    images, labels = api.load_protected(tmp_path / "w").test_data()
    assert images.shape == (12, 8, 8, 1) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
