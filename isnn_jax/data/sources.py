"""Every kind of dataset name, described and read the same way.

A name is one of the packaged `DATASETS`, any other TFDS name (its image and label features
found in the builder's info, or named by image_key/label_key), `image_folder` (folder.py) or
`arrays` (arrays.py). `describe` says what a name gives (the image shape after resizing, the
classes) without reading its images; `load_split` reads a process's share of a split, which
`open_records` opens without reading (a TFDS name's records, for the streaming input);
`data_options` turns a config's data group into the keyword arguments of both (and of
`streams.load_streams` and `streaming.open_streams`). With `image_shape` every source, the
packaged ones included, is converted, resized and centre-cropped to that shape (images.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from isnn_jax.data import pipeline
from isnn_jax.data.arrays import describe_arrays, load_arrays_split
from isnn_jax.data.common import (SHAPE_FIX, DataError, check_augment, check_image_shape,
                                  check_share)
from isnn_jax.data.folder import folder_shape, load_folder_split, scan_folder
from isnn_jax.data.pipeline import (ARRAYS, DATASETS, FILE_FORMAT, IMAGE_FOLDER, OWN_DATA,
                                    DatasetSpec, builder_kwargs, prepare, process_split)


def _unused_keys(name: str, image_key: str, label_key: str) -> None:
    if image_key or label_key:
        raise DataError(f"image_key and label_key name TFDS features; {name} has none: leave "
                        f"--config.data.image_key and --config.data.label_key empty")


def _tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(name, data_dir=data_dir, file_format=FILE_FORMAT)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"unknown dataset {name!r}: not a packaged name ({', '.join(DATASETS)}), "
                        f"not {' or '.join(OWN_DATA)} (your own images), and not a TFDS name "
                        f"(see `tfds.list_builders()`); check the spelling of "
                        f"--config.data.name") from None


def _listing(features: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} ({type(feature).__name__})" for key, feature in features.items())


def find_feature(name: str, features: Mapping[str, Any], key: str, kind: type,
                 option: str) -> str:
    """The feature of `kind` to read: the one named `key`, else the only one of that kind."""
    word = kind.__name__
    if key:
        if key not in features:
            raise DataError(f"TFDS {name!r} has no feature {key!r}; its features: "
                            f"{_listing(features)}; set --config.data.{option} to one of them")
        if not isinstance(features[key], kind):
            raise DataError(f"TFDS {name!r} feature {key!r} is a {type(features[key]).__name__}, "
                            f"not a {word}; its features: {_listing(features)}")
        return key
    found = [k for k, feature in features.items() if isinstance(feature, kind)]
    if len(found) != 1:
        which = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise DataError(f"TFDS {name!r} has {which} {word} features, so which to read is not "
                        f"clear; its features: {_listing(features)}; name one with "
                        f"--config.data.{option}=KEY")
    return found[0]


def tfds_spec(name: str, builder: tfds.core.DatasetBuilder, image_key: str, label_key: str,
              image_shape: tuple[int, int, int] | None) -> DatasetSpec:
    """The spec of a TFDS name that is not packaged, from its builder's features."""
    features = builder.info.features
    image_key = find_feature(name, features, image_key, tfds.features.Image, "image_key")
    label_key = find_feature(name, features, label_key, tfds.features.ClassLabel, "label_key")
    own = tuple(features[image_key].shape)
    if image_shape is None:
        if len(own) != 3 or any(v is None for v in own):
            raise DataError(f"TFDS {name!r} images ({image_key!r}) have no fixed shape {own}; "
                            f"set {SHAPE_FIX} to resize and centre-crop them to one")
        image_shape = own  # type: ignore[assignment]
    label = features[label_key]
    shape = tuple(int(v) for v in image_shape)
    return DatasetSpec(name, name, shape, int(label.num_classes),  # type: ignore[arg-type]
                       tuple(label.names), image_key=image_key, label_key=label_key)


def _packaged_spec(name: str, data_dir: str | None, source_dir: str | None, image_key: str,
                   label_key: str, image_shape: tuple[int, int, int] | None) -> DatasetSpec:
    spec = DATASETS[name]
    builder_kwargs(spec, data_dir, source_dir)  # refuses a source_dir it would not use
    if image_key not in ("", spec.image_key) or label_key not in ("", spec.label_key):
        raise DataError(f"{name} has the features {spec.image_key!r} and {spec.label_key!r}; "
                        f"leave --config.data.image_key and --config.data.label_key empty")
    return dataclasses.replace(spec, image_shape=image_shape or spec.image_shape)


def describe(name: str, *, data_dir: str | None = None, source_dir: str | None = None,
             image_key: str = "", label_key: str = "",
             image_shape: Sequence[int] = ()) -> DatasetSpec:
    """What `load_split(name, ...)` with the same options gives, without reading its images:
    the image shape after resizing, the number and names of the classes.

    A packaged name is known without I/O; another TFDS name reads its builder's info (no
    download); image_folder lists the folder and reads one file's header; arrays reads the
    arrays' headers and the labels. Bad options or data are a DataError (a ValueError) naming
    the fix; missing files a DatasetNotFoundError.
    """
    shape = check_image_shape(image_shape)
    if name == IMAGE_FOLDER:
        _unused_keys(name, image_key, label_key)
        folder = scan_folder(source_dir)
        classes = folder.class_names
        return DatasetSpec(name, "", folder_shape(folder, shape), len(classes), classes,
                           offline=True, accepts_source_dir=True, image_key="", label_key="")
    if name == ARRAYS:
        _unused_keys(name, image_key, label_key)
        own, classes = describe_arrays(source_dir, shape)
        return DatasetSpec(name, "", own, len(classes), classes, offline=True,
                           accepts_source_dir=True, image_key="", label_key="")
    if name in DATASETS:
        return _packaged_spec(name, data_dir, source_dir, image_key, label_key, shape)
    if source_dir is not None:
        builder_kwargs(DatasetSpec(name, name, (1, 1, 1), 0, ()), data_dir, source_dir)
    return tfds_spec(name, _tfds_builder(name, data_dir), image_key, label_key, shape)


def data_options(data: Any) -> dict[str, Any]:
    """The keyword arguments of `describe`, `load_split` and `load_streams` that a config's
    data group (`config.data`, its `to_dict()`, or the one in a workdir's metadata) sets;
    fields it lacks (older metadata) take their defaults."""
    data = data.to_dict() if hasattr(data, "to_dict") else dict(data or {})
    return {"data_dir": data.get("data_dir") or None,
            "source_dir": data.get("source_dir") or None,
            "image_key": str(data.get("image_key") or ""),
            "label_key": str(data.get("label_key") or ""),
            "image_shape": tuple(int(v) for v in data.get("image_shape") or ())}


def augment_options(data: Any) -> dict[str, Any]:
    """The training augmentation a config's data group asks for: `load_streams` keywords."""
    data = data.to_dict() if hasattr(data, "to_dict") else dict(data or {})
    options = {"random_crop": data.get("random_crop") or 0,
               "random_flip": data.get("random_flip") or False}
    check_augment(**options)
    return {"random_crop": int(options["random_crop"]),
            "random_flip": bool(options["random_flip"])}


def load_split(name: str, split: str, *, data_dir: str | None = None,
               source_dir: str | None = None, image_key: str = "", label_key: str = "",
               image_shape: Sequence[int] = (), process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int32 labels) of this process's share of `split`, prepared on first use.

    Shares are contiguous TFDS even splits. With `drop_remainder=False` the first
    `len(split) % process_count` processes get one extra example, so the shares cover the split;
    with `drop_remainder=True` those examples are dropped and every share has the same size.
    image_folder and arrays cut their splits the same way. With `image_shape` (H, W, C) the
    images are converted to C channels, resized and centre-cropped to H x W (images.py).
    """
    check_share(process_index, process_count)
    shape = check_image_shape(image_shape)
    share = {"process_index": process_index, "process_count": process_count,
             "drop_remainder": drop_remainder}
    if name == IMAGE_FOLDER:
        _unused_keys(name, image_key, label_key)
        return load_folder_split(source_dir, split, image_shape=shape, **share)
    if name == ARRAYS:
        _unused_keys(name, image_key, label_key)
        return load_arrays_split(source_dir, split, image_shape=shape, **share)
    records = open_records(name, split, data_dir=data_dir, source_dir=source_dir,
                           image_key=image_key, label_key=label_key, image_shape=image_shape,
                           **share)
    return pipeline.records_to_arrays(records.source, records.spec.image_shape,
                                      image_key=records.spec.image_key,
                                      label_key=records.spec.label_key, fit=records.fit)


@dataclasses.dataclass(frozen=True)
class Records:
    """A process's share of a TFDS split as a random-access source of decoded records, and how
    `records_to_batch` converts them (the spec's image shape and features; `fit`: resize)."""

    source: Sequence[Mapping[str, Any]]
    spec: DatasetSpec
    fit: bool

    def decode(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 NHWC images, int32 labels) of the records at `keys`, in that order."""
        return pipeline.records_to_batch(pipeline.read_records(self.source, list(keys)),
                                         self.spec.image_shape, image_key=self.spec.image_key,
                                         label_key=self.spec.label_key, fit=self.fit)


def open_records(name: str, split: str, *, data_dir: str | None = None,
                 source_dir: str | None = None, image_key: str = "", label_key: str = "",
                 image_shape: Sequence[int] = (), process_index: int = 0, process_count: int = 1,
                 drop_remainder: bool = False) -> Records:
    """This process's share of a TFDS `split` (packaged or any TFDS name, prepared on first
    use), opened but not read: the share `load_split` reads whole. image_folder and arrays
    have no such source (a DataError)."""
    check_share(process_index, process_count)
    shape = check_image_shape(image_shape)
    if name in OWN_DATA:
        raise DataError(f"{name} is read into memory; it has no TFDS record files")
    if name in DATASETS:
        spec = _packaged_spec(name, data_dir, source_dir, image_key, label_key, shape)
        builder = tfds.builder(spec.tfds_name, **builder_kwargs(spec, data_dir, source_dir))
    else:
        if source_dir is not None:
            builder_kwargs(DatasetSpec(name, name, (1, 1, 1), 0, ()), data_dir, source_dir)
        builder = _tfds_builder(name, data_dir)
        spec = tfds_spec(name, builder, image_key, label_key, shape)
    prepare(builder, spec)
    source = builder.as_data_source(split=process_split(split, process_index, process_count,
                                                        drop_remainder))
    own = DATASETS[name].image_shape if name in DATASETS else None
    return Records(source, spec, shape is not None and shape != own)
