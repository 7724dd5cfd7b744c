"""Datasets for isnn_jax: offline TFDS builders and a TensorFlow-free NumPy loading pipeline.

Importing this package registers the TFDS builders `isnn_digits` and `isnn_fashion_mnist`.

Imports nothing of isnn_jax: the pipeline knows nothing of licences, models or training.
"""

from isnn_jax.data.pipeline import (
    DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
    batch_indices,
    epoch_permutation,
    get_spec,
    load_split,
    steps_per_epoch,
    to_float,
)
from isnn_jax.data.digits import IsnnDigits  # registers `isnn_digits`
from isnn_jax.data.fashion_mnist_idx import IdxFormatError, IsnnFashionMnist  # registers builder

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IdxFormatError",
    "IsnnDigits",
    "IsnnFashionMnist",
    "batch_indices",
    "epoch_permutation",
    "get_spec",
    "load_split",
    "steps_per_epoch",
    "to_float",
]
