"""Leak tracing: which registered licence unlocks a leaked model?

python -m isnn_jax.trace --model PATH --registry DIR [--json]
python -m isnn_jax.trace --command 'CMD' --dataset NAME --registry DIR --expose_legal_inputs

--model (a workdir or an export, run locally; nothing leaves the machine): every registered
licence, revoked ones included, on the whole verification set, with an exact paired test
against every alternative (isnn_jax.seller.trace). --command (a suspect's service, untrusted):
each licence gets fresh images under it and as few as a sequential test needs; no clean image
is ever sent (isnn_jax.seller.black_box_trace). Exit 0 traced, 1 not traced, 2 bad input.
"""

import json
import sys

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.cli.models import (add_model_arguments, add_trace_arguments, check_exposure,
                                 resolve_data, resolve_model)
from isnn_jax.seller.black_box_trace import format_black_box
from isnn_jax.seller.trace import format_trace, trace_suspect


@command
def main(argv: list[str] | None = None) -> int:
    """Exit 0 when traced to a licence, 1 when not, 2 on an error (isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.trace", description=__doc__)
    add_model_arguments(parser)
    add_trace_arguments(parser)
    args = parser.parse_args(argv)
    check_exposure(args)
    classify, meta, model = resolve_model(args)
    images, labels, described = resolve_data(args, meta)
    options = dict(beta=args.beta, unlocked_accuracy=args.unlocked_accuracy,
                   baseline_images=args.baseline_images,
                   max_images_per_licence=args.max_images_per_licence) if args.command else {}
    report = trace_suspect(args.registry, classify, model, images, labels,
                           black_box=bool(args.command), num_classes=meta.get("num_classes"),
                           alpha=args.alpha, random_licences=args.random_licences,
                           seed=args.seed, **options)
    report.update(model=args.model or args.command, dataset=described)
    text = format_black_box(report) if args.command else format_trace(report)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else text)
    return 0 if report["traced"] else 1


if __name__ == "__main__":
    sys.exit(main())
