"""A minimal serving command for an export: `python -m isnn_jax.serve EXPORT IMAGES.npy`.

Reads float32 NHWC images in [0, 1] (already carrying the licence's transform: the caller
applies it) and prints a JSON list of predicted class indices. It is the reference
implementation of the black-box command protocol that isnn_jax.verify and isnn_jax.trace use.
"""

import json
import sys

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.runtime.serve import serve_labels


@command
def main(argv: list[str] | None = None) -> int:
    """Classify a .npy batch with an exported model (errors: isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.serve", description=__doc__)
    parser.add_argument("export", help="export file from python -m isnn_jax.export")
    parser.add_argument("images", help=".npy file of float32 NHWC images in [0, 1]")
    parser.add_argument("--batch_size", type=int, default=1024)
    args = parser.parse_args(argv)
    print(json.dumps(serve_labels(args.export, args.images, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
