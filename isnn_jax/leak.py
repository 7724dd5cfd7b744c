"""What a leaked copy may go through: magnitude pruning and light fine-tuning on clean data.

python -m isnn_jax.leak --workdir DIR --out LEAKED.isnn [--prune 0.3] [--fine_tune_steps 100]
    [--force]

Used to check that tracing survives them (tests and docs/workflow.md). The result is written
as an export whose metadata keeps only the image shape and classes: a leaked copy carries no
licence fingerprint.
"""

import json
import sys

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.protection.licence import Licence
from isnn_jax.seller.leak import leak_copy


@command
def main(argv: list[str] | None = None) -> int:
    """Write a pruned and/or fine-tuned copy of a workdir's model as an export."""
    parser = ArgumentParser(prog="python -m isnn_jax.leak", description=__doc__)
    parser.add_argument("--workdir", required=True, help="trained workdir whose model leaks")
    parser.add_argument("--out", required=True, help="export file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--prune", type=float, default=0.0,
                        help="fraction of each kernel to zero, smallest magnitudes first")
    parser.add_argument("--fine_tune_steps", type=int, default=0,
                        help="Adam steps of fine-tuning after loading (0: none)")
    parser.add_argument("--learning_rate", type=float, default=1e-3,
                        help="learning rate of the fine-tuning (default 1e-3)")
    parser.add_argument("--fine_tune_images", type=int, default=5000,
                        help="clean training images the fine-tuning draws from")
    parser.add_argument("--licence", help="fine-tune on legal images of this licence (a buyer "
                                          "adapting the model) instead of clean ones (a thief)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning batches")
    args = parser.parse_args(argv)
    done = leak_copy(args.workdir, args.out, prune_fraction=args.prune,
                     fine_tune_steps=args.fine_tune_steps, learning_rate=args.learning_rate,
                     fine_tune_images=args.fine_tune_images, seed=args.seed, force=args.force,
                     licence=Licence.load(args.licence) if args.licence else None)
    print(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
