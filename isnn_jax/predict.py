"""Buyer inference: classify image files, directories or .npy arrays with the licence.

python -m isnn_jax.predict --workdir DIR --licence FILE [--json] INPUTS...
python -m isnn_jax.predict --export FILE --licence FILE [--json] INPUTS...

Images are read and resized to the model's image shape (isnn_jax.images), the licence's keyed
transform is applied, and the network runs in fixed-size jitted batches. Prints one line per
image (input, class index, class name, probability), or JSON with --json.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import numpy as np

from isnn_jax.bare_model import BareModel, batched, from_export, from_workdir, keyed_probabilities
from isnn_jax.cli import ArgumentParser, command
from isnn_jax.images import read_inputs
from isnn_jax.licence import Licence, LicenceError


def check_licence_for(model: BareModel, licence: Licence) -> None:
    """Raise LicenceError unless the model's metadata names this licence."""
    expected = model.meta.get("licence_fingerprint")
    if expected is None:
        raise LicenceError(f"{model.source} holds an unprotected model; it takes no licence")
    if licence.fingerprint() != expected:
        raise LicenceError(f"this licence ({licence.fingerprint()}) is for a different model: "
                           f"{model.source} was trained for licence {expected}; use the licence "
                           "file that came with this model")


def predict_probabilities(model: BareModel, licence: Licence, images: np.ndarray,
                          batch_size: int = 256) -> np.ndarray:
    """Class probabilities of float32 NHWC images in [0, 1] under the licence (checked first)."""
    check_licence_for(model, licence)
    probabilities = keyed_probabilities(model.net, licence.transform)
    key = licence.key()
    return batched(lambda chunk: probabilities(key, chunk), images, batch_size)


def predictions(names: Sequence[str], probabilities: np.ndarray,
                class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """One record per input: class index, class name, its probability and all probabilities."""
    records = []
    for name, probs in zip(names, probabilities):
        index = int(probs.argmax())
        records.append({"input": name, "class": index,
                        "label": class_names[index] if class_names else str(index),
                        "probability": float(probs[index]),
                        "probabilities": [round(float(p), 6) for p in probs]})
    return records


@command
def main(argv: list[str] | None = None) -> int:
    """Command line: print the predicted class of every input (errors: isnn_jax.cli)."""
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
    model = from_workdir(args.workdir) if args.workdir else from_export(args.export)
    check_licence_for(model, licence)  # before reading a possibly large set of images
    images, names = read_inputs(args.inputs, model.image_shape, resize=args.resize,
                                convert=args.convert)
    probabilities = predict_probabilities(model, licence, images, args.batch_size)
    records = predictions(names, probabilities, model.meta.get("class_names"))
    if args.json:
        print(json.dumps({"model": str(args.workdir or args.export),
                          "licence": licence.fingerprint(), "predictions": records}, indent=2,
                         ensure_ascii=False))
    else:
        width = max(len(record["input"]) for record in records)
        for record in records:
            print(f"{record['input']:<{width}}  {record['class']:>2}  {record['label']:<14}  "
                  f"{record['probability']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
