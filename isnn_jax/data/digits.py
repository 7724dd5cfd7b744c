"""TFDS builder `isnn_digits`: scikit-learn's bundled 8x8 digits, needing no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SHAPE: tuple[int, int, int] = (8, 8, 1)
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MAX_VALUE = 16  # load_digits pixel range is 0..16


def scale_to_uint8(images: np.ndarray) -> np.ndarray:
    """0..16 pixel counts to uint8 0..255 via round-half-up(v * 255 / 16)."""
    return np.floor(np.asarray(images, np.float64) * (255.0 / MAX_VALUE) + 0.5).astype(np.uint8)


def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Deterministic stratified train/test split of all 1,797 digits: {split: (images, labels)}."""
    # Deferred: scikit-learn takes about a second to import and is needed only the first time
    # the digits are built (afterwards TFDS reads its own files).
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = scale_to_uint8(bunch.images)[..., None]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


class IsnnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits: 1,437 train / 360 test 8x8x1 uint8 images, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        """Features: raw uint8 tensor (fast NumPy decoding) and labels 0..9."""
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn load_digits, scaled to 0..255, stratified 80/20 split.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        """Both splits from the bundled data; nothing is downloaded."""
        del dl_manager
        return {split: self._generate_examples(images, labels)
                for split, (images, labels) in digits_splits().items()}

    def _generate_examples(self, images: np.ndarray,
                           labels: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """Examples keyed by their position in the split (order preserved)."""
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": int(label)}
