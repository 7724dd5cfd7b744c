"""A minimal serving command for an export: `python -m isnn_jax.serve EXPORT IMAGES.npy`.

Reads float32 NHWC images in [0, 1] (already carrying the licence's transform: the caller
applies it) and prints a JSON list of predicted class indices. It is the reference
implementation of the black-box command protocol that isnn_jax.verify and isnn_jax.trace use.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Command line: classify a .npy batch with an exported model."""
    parser = argparse.ArgumentParser(prog="python -m isnn_jax.serve", description=__doc__)
    parser.add_argument("export", help="export file from python -m isnn_jax.export")
    parser.add_argument("images", help=".npy file of float32 NHWC images in [0, 1]")
    parser.add_argument("--batch_size", type=int, default=1024)
    args = parser.parse_args(argv)
    from isnn_jax.bare_model import from_export
    from isnn_jax.black_box import model_classifier

    try:
        model = from_export(args.export)
        images = np.load(args.images, allow_pickle=False)
        from isnn_jax.api import check_image_batch

        labels = model_classifier(model, args.batch_size)(check_image_batch(images,
                                                                            model.image_shape))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps([int(label) for label in labels]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
