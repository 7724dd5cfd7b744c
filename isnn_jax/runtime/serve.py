"""The reference black-box service: an export answering a batch of (already keyed) images.

It implements the command protocol of isnn_jax.runtime.black_box that verification and tracing
use: float32 NHWC images in [0, 1] carrying the licence's transform in, class indices out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isnn_jax.runtime.black_box import model_classifier
from isnn_jax.runtime.export import load_export
from isnn_jax.runtime.model import check_image_batch


def serve_labels(export: str | Path, images_file: str | Path, batch_size: int = 1024) -> list[int]:
    """The class index the export predicts for each image of a .npy file."""
    model = load_export(export)
    try:
        images = np.load(images_file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read images {images_file} ({err}); pass a .npy file of float32 "
                         "NHWC images in [0, 1]") from None
    labels = model_classifier(model, batch_size)(check_image_batch(images, model.image_shape))
    return [int(label) for label in labels]
