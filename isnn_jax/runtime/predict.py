"""Buyer inference: classify image files, directories or .npy arrays with the licence.

Images are read and resized to the model's image shape (isnn_jax.runtime.images), the
licence's keyed transform is applied, and the network runs in fixed-size jitted batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from isnn_jax.protection.licence import Licence
from isnn_jax.runtime.export import load_model
from isnn_jax.runtime.images import read_inputs
from isnn_jax.runtime.model import ProtectedModel, batched, keyed_probabilities


def predict_probabilities(model: ProtectedModel, licence: Licence, images: np.ndarray,
                          batch_size: int = 256) -> np.ndarray:
    """Class probabilities of float32 NHWC images in [0, 1] under the licence (checked first)."""
    model.check_licence(licence)
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


def predict_files(model_path: str | Path, licence: Licence, inputs: Sequence[str], *,
                  resize: bool = True, convert: bool = False,
                  batch_size: int = 256) -> list[dict[str, Any]]:
    """One prediction record per image in `inputs` (files, directories, .npy arrays) for the
    model at `model_path` (a workdir or an export) under `licence` (checked before any read)."""
    model = load_model(model_path)
    model.check_licence(licence)
    images, names = read_inputs(inputs, model.image_shape, resize=resize, convert=convert)
    probabilities = predict_probabilities(model, licence, images, batch_size)
    return predictions(names, probabilities, model.meta.get("class_names"))


def format_predictions(records: Sequence[dict[str, Any]]) -> str:
    """One aligned line per input: input, class index, class name, probability."""
    width = max(len(record["input"]) for record in records)
    return "\n".join(f"{r['input']:<{width}}  {r['class']:>2}  {r['label']:<14}  "
                     f"{r['probability']:.4f}" for r in records)
