"""Ownership verification: does this model respond to this licence, and only to it?

The test runs the licence's keyed transform and then the model itself (never trusting the
metadata's licence fingerprint): accuracy on a labelled verification set with the claimed
licence, without any licence, and under R random licences of the same transform kind.

Null hypothesis: the claimed licence unlocks the model no better than a licence that was not
used in training. Under it each verification image is classified correctly with probability at
most p0 = max(accuracy without licence, best accuracy of the R random licences, 1 / classes).
The p-value is the exact one-sided binomial tail P[Binomial(n, p0) >= k], k the number of
images classified correctly with the claimed licence. The verdict is "verified" when the
p-value is below alpha (default 1e-6). Taking the *best* random licence (not their mean) makes
p0 conservative; a model that works without a licence (unprotected, or its protection removed)
has a large p0 and cannot be claimed with any licence.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np

from isnn_jax.data import load_split, to_float
from isnn_jax.runtime.black_box import Classifier, as_labels
from isnn_jax.protection.licence import Licence, TransformSpec, random_keys
from isnn_jax.evaluation.stats import binomial_test, format_p
from isnn_jax.protection.transforms import apply_transform

DEFAULT_ALPHA = 1e-6
IMAGES_PER_CALL = 32768  # transformed images handed to the classifier at once


@functools.lru_cache(maxsize=8)
def _transformer(spec: TransformSpec) -> Any:
    return jax.jit(functools.partial(apply_transform, spec))


def correctness(classify: Classifier, spec: TransformSpec | None, keys: list[Any],
                images: np.ndarray, labels: np.ndarray,
                images_per_call: int = IMAGES_PER_CALL) -> np.ndarray:
    """(keys, images) booleans: right or wrong under each key (a key None: the images as given)."""
    count = images.shape[0]
    per_call = max(1, images_per_call // count)
    rows = []
    for start in range(0, len(keys), per_call):
        chunk = keys[start:start + per_call]
        views = [images if key is None else np.asarray(_transformer(spec)(key, images))
                 for key in chunk]
        answers = as_labels(classify(np.concatenate(views)), count * len(chunk))
        rows.append(answers.reshape(len(chunk), count) == labels[None])
    return np.concatenate(rows) if rows else np.zeros((0, count), bool)


def null_model(classify: Classifier, spec: TransformSpec, images: np.ndarray, labels: np.ndarray,
               *, random_licences: int, seed: int, num_classes: int) -> dict[str, Any]:
    """Accuracy without a licence and under random licences, and the null accuracy p0 they give."""
    count = images.shape[0]
    clean = int(correctness(classify, None, [None], images, labels)[0].sum())
    keys = random_keys(seed, random_licences) if random_licences else []
    random_acc = correctness(classify, spec, list(keys), images, labels).sum(axis=1) / count
    summary = {"count": int(random_licences), "seed": int(seed),
               "mean": float(random_acc.mean()) if random_licences else None,
               "max": float(random_acc.max()) if random_licences else None}
    p0 = max(clean / count, summary["max"] or 0.0, 1.0 / num_classes)
    return {"accuracy_without_licence": clean / count, "random_licences": summary,
            "null_accuracy": p0}


def licence_evidence(classify: Classifier, licence: Licence, images: np.ndarray, labels: np.ndarray,
                 null: dict[str, Any], alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """The binomial test of one licence against a null model from `null_model`."""
    count = images.shape[0]
    correct = int(correctness(classify, licence.transform, [licence.key()], images,
                              labels)[0].sum())
    result = binomial_test(correct, count, null["null_accuracy"])
    return {"licence": licence.fingerprint(), "copyright": licence.copyright,
            "correct": correct, "images": count, "accuracy_with_licence": correct / count,
            **result, "alpha": alpha, "verified": bool(result["log10_p_value"] < np.log10(alpha))}


def verification_arrays(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 images and int64 labels of a non-empty verification set, one label per image."""
    labels = np.asarray(labels).astype(np.int64)
    images = np.asarray(images, np.float32)
    if images.shape[0] == 0 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"the verification set needs as many labels as images (got "
                         f"{images.shape[0]} images, {labels.shape[0]} labels)")
    return images, labels


def ownership_test(classify: Classifier, licence: Licence, images: np.ndarray,
                   labels: np.ndarray, *, random_licences: int = 100, seed: int = 0,
                   alpha: float = DEFAULT_ALPHA, num_classes: int | None = None) -> dict[str, Any]:
    """Verify that `classify` (images as given -> labels) is unlocked by `licence`."""
    images, labels = verification_arrays(images, labels)
    num_classes = int(num_classes or labels.max() + 1)
    null = null_model(classify, licence.transform, images, labels,
                      random_licences=random_licences, seed=seed, num_classes=num_classes)
    report = {**licence_evidence(classify, licence, images, labels, null, alpha), **null}
    report["verdict"] = "verified" if report["verified"] else "not verified"
    return report


def verification_set(dataset: str, *, split: str = "test", num_images: int = 1000, seed: int = 0,
                     data_dir: str | None = None, source_dir: str | None = None,
                     image_key: str = "", label_key: str = "", image_shape: tuple[int, ...] = (),
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Up to `num_images` labelled images of a dataset split (a fixed random subset), float32;
    the data options are those of `isnn_jax.data.load_split` (a model's: `data_options`)."""
    images, labels = load_split(dataset, split, data_dir=data_dir, source_dir=source_dir,
                                image_key=image_key, label_key=label_key,
                                image_shape=image_shape)
    if num_images and num_images < images.shape[0]:
        chosen = np.sort(np.random.default_rng(seed).choice(images.shape[0], num_images,
                                                             replace=False))
        images, labels = images[chosen], labels[chosen]
    return to_float(images), labels.astype(np.int64)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A verification set saved with numpy.savez(path, images=..., labels=...)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not an .npz file with 'images' and 'labels' ({err}); save "
                         "one with numpy.savez(path, images=..., labels=...)") from None
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    return images.astype(np.float32), labels.astype(np.int64)


def format_verification(report: dict[str, Any]) -> str:
    """Human-readable lines of a verification report."""
    random = report["random_licences"]
    lines = [f"licence            {report['licence']}  {report['copyright']!r}",
             f"verification set   {report['images']} labelled images"
             + (f" ({report['dataset']})" if report.get("dataset") else ""),
             f"with the licence   {report['accuracy_with_licence']:.2%} "
             f"({report['correct']}/{report['images']})",
             f"without licence    {report['accuracy_without_licence']:.2%}"]
    if random["count"]:
        lines.append(f"random licences    mean {random['mean']:.2%}, max {random['max']:.2%} "
                     f"({random['count']} licences)")
    lines += [f"null accuracy p0   {report['null_accuracy']:.2%} (largest of: without licence, "
              "best random licence, chance)",
              f"p-value            {format_p(report['log10_p_value'])} (exact one-sided binomial: "
              f"P[Bin({report['images']}, {report['null_accuracy']:.4f}) >= {report['correct']}])",
              f"verdict            {report['verdict'].upper()} at alpha {report['alpha']:g}"]
    return "\n".join(lines)
