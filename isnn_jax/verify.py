"""Ownership verification: does this model respond to this licence, and only to it?

python -m isnn_jax.verify --model PATH --licence FILE [--json]
python -m isnn_jax.verify --command 'CMD' --dataset NAME --licence FILE

Accuracy with the claimed licence is tested against the best of no licence, R random licences
and chance (an exact one-sided binomial test; isnn_jax.seller.verify says why that is
conservative). Exit 0 verified, 1 not verified, 2 bad input.
"""

import json
import sys

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.cli.models import add_model_arguments, check_data_shape, resolve_data, resolve_model
from isnn_jax.protection.licence import Licence
from isnn_jax.seller.verify import format_verification, ownership_test


@command
def main(argv: list[str] | None = None) -> int:
    """Exit 0 when verified, 1 when not, 2 on an error (isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.verify", description=__doc__)
    add_model_arguments(parser)
    parser.add_argument("--licence", required=True, help="the licence whose ownership is claimed")
    args = parser.parse_args(argv)
    licence = Licence.load(args.licence)
    classify, meta, _ = resolve_model(args)
    images, labels, described = resolve_data(args, meta)
    check_data_shape(images, meta)
    report = ownership_test(classify, licence, images, labels, alpha=args.alpha,
                            random_licences=args.random_licences, seed=args.seed,
                            num_classes=meta.get("num_classes"))
    report.update(dataset=described, model=args.model or args.command)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json
          else format_verification(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
