"""Datasets for isnn_jax: offline TFDS builders and a TensorFlow-free NumPy loading pipeline,
for the packaged names, any TFDS name, and your own images (image_folder, arrays).

Importing this package registers the TFDS builders `isnn_digits` and `isnn_fashion_mnist`.

Imports nothing of isnn_jax: the pipeline knows nothing of licences, models or training.
"""

from isnn_jax.data.common import DataError
from isnn_jax.data.pipeline import (
    ARRAYS,
    DATASETS,
    IMAGE_FOLDER,
    DatasetNotFoundError,
    DatasetSpec,
    batch_indices,
    epoch_permutation,
    get_spec,
    steps_per_epoch,
    to_float,
)
from isnn_jax.data.sources import augment_options, data_options, describe, load_split
from isnn_jax.data.digits import IsnnDigits  # registers `isnn_digits`
from isnn_jax.data.fashion_mnist_idx import IdxFormatError, IsnnFashionMnist  # registers builder

__all__ = [
    "ARRAYS",
    "DATASETS",
    "DataError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IMAGE_FOLDER",
    "IdxFormatError",
    "IsnnDigits",
    "IsnnFashionMnist",
    "augment_options",
    "batch_indices",
    "data_options",
    "describe",
    "epoch_permutation",
    "get_spec",
    "load_split",
    "steps_per_epoch",
    "to_float",
]
