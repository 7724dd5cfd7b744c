"""Serving export of the bare model: serialised StableHLO (jax.export), without the licence.

python -m isnn_jax.export --workdir DIR --out FILE.isnn [--force]

The file is a zip archive of the network (parameters as constants, batch size symbolic, lowered
for CPU, CUDA and TPU) and its public metadata; it holds no secret and no key: the caller
applies the licence's transform first (isnn_jax.runtime.export).
"""

import json
import sys
from pathlib import Path

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.runtime.export import PLATFORMS, export_workdir

SHOWN = ("image_shape", "num_classes", "licence_fingerprint", "model_fingerprint",
         "checkpoint_step")


@command
def main(argv: list[str] | None = None) -> int:
    """Export a workdir's newest checkpoint (errors: isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.export", description=__doc__)
    parser.add_argument("--workdir", required=True, help="trained workdir")
    parser.add_argument("--out", required=True, help="export file to write (e.g. model.isnn)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    meta = export_workdir(args.workdir, args.out, force=args.force)
    print(json.dumps({"export": str(args.out), "bytes": Path(args.out).stat().st_size,
                      "platforms": list(PLATFORMS), **{k: meta[k] for k in SHOWN}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
