"""Buyer inference: classify image files, directories or .npy arrays with the licence.

python -m isnn_jax.predict --workdir DIR --licence FILE [--json] INPUTS...
python -m isnn_jax.predict --export FILE --licence FILE [--json] INPUTS...

Images are read and resized to the model's image shape (isnn_jax.runtime.images), the licence's
keyed transform is applied, and the network runs in fixed-size jitted batches. Prints one line
per image (input, class index, class name, probability), or JSON with --json.
"""

import json
import sys

from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.protection.licence import Licence
from isnn_jax.runtime.predict import format_predictions, predict_files


@command
def main(argv: list[str] | None = None) -> int:
    """Print the predicted class of every input (errors: isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.predict", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="trained workdir (newest checkpoint)")
    source.add_argument("--export", help="export file from python -m isnn_jax.export")
    parser.add_argument("--licence", required=True, help="the buyer's licence file")
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG files, directories, .npy arrays")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--batch_size", type=int, default=256,
                        help="images per jitted batch (default 256)")
    parser.add_argument("--no-resize", dest="resize", action="store_false",
                        help="refuse image files of another size instead of resizing them")
    parser.add_argument("--convert", action="store_true",
                        help="convert RGB to grey (or grey to RGB) and composite transparency")
    args = parser.parse_args(argv)
    licence = Licence.load(args.licence)
    records = predict_files(args.workdir or args.export, licence, args.inputs,
                            resize=args.resize, convert=args.convert, batch_size=args.batch_size)
    print(json.dumps({"model": str(args.workdir or args.export), "licence": licence.fingerprint(),
                      "predictions": records}, indent=2, ensure_ascii=False) if args.json
          else format_predictions(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
