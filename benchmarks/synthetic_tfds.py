"""The synthetic TFDS dataset of benchmarks/pipeline.py: random 28x28x1 images, as array_record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

SHAPE = (28, 28, 1)


class IsnnPipelineBench(tfds.core.GeneratorBasedBuilder):
    """Random uint8 28x28x1 images (raw bytes, like the packaged datasets) with labels 0..9;
    one builder config per train size (`n<examples>`), 1,000 test images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f"n{n}")
                       for n in (2_000, 20_000, 60_000, 600_000)]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description="Synthetic images for benchmarks/pipeline.py.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=SHAPE, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(num_classes=10)}),
            disable_shuffling=True)

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager
        train = int(self.builder_config.name[1:])
        return {"train": self._generate_examples(train, 0),
                "test": self._generate_examples(1_000, 1)}

    def _generate_examples(self, count: int, seed: int) -> Iterator[tuple[int, dict[str, Any]]]:
        rng = np.random.default_rng(seed)
        for start in range(0, count, 10_000):
            size = min(10_000, count - start)
            images = rng.integers(0, 256, (size, *SHAPE), dtype=np.uint8)
            labels = rng.integers(0, 10, size)
            for offset in range(size):
                yield start + offset, {"image": images[offset], "label": int(labels[offset])}
