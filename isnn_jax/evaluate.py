"""Evaluate a protected model: legal, clean, wrong-key and near-key accuracy, and PSNR.

python -m isnn_jax.evaluate --workdir DIR --licence FILE [--baseline_workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.cli import ArgumentParser, command
from isnn_jax.licence import Licence, TransformSpec, random_keys, stack_keys
from isnn_jax.near_keys import near_licences
from isnn_jax.transforms import apply_transform

IMAGES_PER_CALL = 8192  # keys x images evaluated in one compiled call


def true_label_rank(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Rank of the true label in each output (0: the argmax, C-1: the argmin)."""
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    return (logits > true_logit).sum(axis=-1)


def _rank_counts(logits: jax.Array, labels: jax.Array) -> jax.Array:
    num_classes = logits.shape[-1]
    return jax.nn.one_hot(true_label_rank(logits, labels), num_classes, dtype=jnp.int32).sum(0)


@functools.partial(jax.jit, static_argnames=("model", "spec"))
def _count_ranks(params: Any, keys: jax.Array, images: jax.Array, labels: jax.Array, *,
                 model: nn.Module, spec: TransformSpec | None) -> jax.Array:
    if spec is None:
        return _rank_counts(model.apply({"params": params}, images), labels)[None]

    def one_key(key: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, apply_transform(spec, key, images))
        return _rank_counts(logits, labels)

    return jax.vmap(one_key)(keys)


def make_rank_counter(model: nn.Module, spec: TransformSpec | None) -> Callable:
    """A jitted count, per key of a chunk, of how often the true label has each output rank.

    With `spec` None the images are used as given (one "key" row). The model and the transform
    are static arguments of one jitted function, so equal ones reuse its compilation."""
    return functools.partial(_count_ranks, model=model, spec=spec)


def key_rank_rates(model: nn.Module, params: Any, spec: TransformSpec | None, keys: jax.Array | None,
                   images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(keys, classes): the fraction of images whose true label has rank r under each key.

    Column 0 is the accuracy; the largest column is the best "pick the class at rank r" attack
    a thief could run on the outputs. `spec=None, keys=None`: the images as given."""
    counter = make_rank_counter(model, spec)
    num_images = images.shape[0]
    batch_size = min(batch_size, num_images)
    if spec is None:
        keys, keys_per_call = jnp.zeros((1,)), 1
    else:
        keys_per_call = max(1, IMAGES_PER_CALL // batch_size)
    num_keys = keys.shape[0]
    counts = None
    for start in range(0, num_keys, keys_per_call):
        chunk = keys[start:start + keys_per_call]
        pad = keys_per_call - chunk.shape[0]
        if pad and num_keys > keys_per_call:  # keep one compiled shape for every chunk
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], pad)])
        total = 0
        for first in range(0, num_images, batch_size):
            total = total + counter(params, chunk, images[first:first + batch_size],
                                    labels[first:first + batch_size])
        total = np.asarray(total)[:min(keys_per_call, num_keys - start)]
        counts = total if counts is None else np.concatenate([counts, total])
    return counts / num_images


def across_processes(compute: Callable[[jax.Array], np.ndarray], keys: jax.Array) -> np.ndarray:
    """`compute(keys)` with the keys split over the JAX processes and the rows gathered back.

    Each process evaluates its contiguous share (padded to equal length), so a multi-host
    evaluation of N licences costs each process N / processes of the work."""
    count = jax.process_count()
    if count == 1:
        return compute(keys)
    from jax.experimental import multihost_utils

    total = keys.shape[0]
    share = -(-total // count)
    mine = keys[jax.process_index() * share:(jax.process_index() + 1) * share]
    if mine.shape[0] < share:  # only trailing shares are short; their padding is cut below
        mine = jnp.concatenate([mine, jnp.repeat(keys[:1], share - mine.shape[0])])
    gathered = np.asarray(multihost_utils.process_allgather(compute(mine)))
    return gathered.reshape(count * share, *gathered.shape[2:])[:total]


def key_accuracies(model: nn.Module, params: Any, spec: TransformSpec, keys: jax.Array,
                   images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Accuracy on (images, labels) under each key in `keys` (one number per key)."""
    return key_rank_rates(model, params, spec, keys, images, labels, batch_size)[:, 0]


def plain_accuracy(model: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray,
                   batch_size: int = 1024) -> float:
    """Accuracy on images exactly as given."""
    return float(key_rank_rates(model, params, None, None, images, labels, batch_size)[0, 0])


def mean_psnr(licence: Licence, images: np.ndarray) -> float:
    """Mean PSNR (dB, peak 1.0) of legal against clean images."""
    legal = np.asarray(apply_transform(licence.transform, licence.key(), jnp.asarray(images)))
    mse = ((legal - images) ** 2).reshape(images.shape[0], -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def _summary(accuracies: np.ndarray) -> dict[str, float]:
    return {"count": int(accuracies.size), "mean": float(accuracies.mean()),
            "max": float(accuracies.max()), "min": float(accuracies.min()),
            "std": float(accuracies.std())}


def evaluate_protection(model: nn.Module, params: Any, licence: Licence, images: np.ndarray,
                        labels: np.ndarray, *, random_licences: int = 1000, seed: int = 1234,
                        near_per_class: int = 32, batch_size: int = 1024) -> dict[str, Any]:
    """Every accuracy the protection is judged by, on float32 images in [0, 1]."""
    spec = licence.transform
    started = time.perf_counter()
    legal = float(key_accuracies(model, params, spec, licence.key()[None], images, labels,
                                 batch_size)[0])
    clean_ranks = key_rank_rates(model, params, None, None, images, labels, batch_size)[0]
    report: dict[str, Any] = {
        "num_images": int(images.shape[0]),
        "legal_accuracy": legal,
        "clean_accuracy": float(clean_ranks[0]),
        "psnr_legal_vs_clean_db": mean_psnr(licence, images),
        # A thief may read any rank, not only the argmax: the best rank's hit rate on clean images.
        "clean_rank_attack": {"best_rank": int(clean_ranks.argmax()),
                              "accuracy": float(clean_ranks.max()),
                              "rate_by_rank": [float(v) for v in clean_ranks]},
    }
    if random_licences:
        wrong_ranks = across_processes(
            lambda keys: key_rank_rates(model, params, spec, keys, images, labels, batch_size),
            random_keys(seed, random_licences))
        report["wrong_key"] = _summary(wrong_ranks[:, 0])
        mean_ranks = wrong_ranks.mean(axis=0)
        report["wrong_key_rank_attack"] = {"best_rank": int(mean_ranks.argmax()),
                                           "mean_accuracy": float(mean_ranks.max()),
                                           "max_accuracy": float(wrong_ranks[:, mean_ranks.argmax()].max())}
    near = near_licences(licence, near_per_class or None, seed)
    report["near_key"] = {}
    all_near = []
    for name, group in near.items():
        accuracies = across_processes(
            lambda keys: key_accuracies(model, params, spec, keys, images, labels, batch_size),
            stack_keys(group))
        report["near_key"][name] = _summary(accuracies)
        all_near.append(accuracies)
    if all_near:
        report["near_key_max"] = float(np.concatenate(all_near).max())
    report["seconds"] = time.perf_counter() - started
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of the headline numbers."""
    lines = [f"legal accuracy       {report['legal_accuracy']:.2%}",
             f"clean accuracy       {report['clean_accuracy']:.2%}  (no licence)"]
    if "wrong_key" in report:
        wrong = report["wrong_key"]
        lines.append(f"wrong-key accuracy   mean {wrong['mean']:.2%}  max {wrong['max']:.2%}  "
                     f"({wrong['count']} random licences)")
    if "near_key_max" in report:
        count = sum(group["count"] for group in report["near_key"].values())
        lines.append(f"near-key accuracy    max {report['near_key_max']:.2%}  ({count} near licences)")
    attack = report["clean_rank_attack"]
    lines.append(f"rank attack (clean)  {attack['accuracy']:.2%}  (picking the class at output "
                 f"rank {attack['best_rank']}, 0 = argmax)")
    lines.append(f"PSNR legal vs clean  {report['psnr_legal_vs_clean_db']:.1f} dB")
    if "baseline_accuracy" in report:
        lines.append(f"unprotected baseline {report['baseline_accuracy']:.2%}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate a workdir's newest checkpoint and write JSON (errors: isnn_jax.cli)."""
    from isnn_jax import api  # imported here: api imports this module
    from isnn_jax.checkpoints import CheckpointError

    parser = ArgumentParser(prog="python -m isnn_jax.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True, help="trained workdir (protected model)")
    parser.add_argument("--licence", required=True, help="the buyer's licence file")
    parser.add_argument("--baseline_workdir", help="workdir of the unprotected baseline")
    parser.add_argument("--random_licences", type=int, default=1000,
                        help="random licences whose accuracy is measured (default 1000)")
    parser.add_argument("--near_per_class", type=int, default=32,
                        help="near keys per edit class (0: every edit)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="seed of the random licences and the near-key choice")
    parser.add_argument("--batch_size", type=int, default=1024,
                        help="images per evaluation batch (lower it if memory runs out)")
    parser.add_argument("--out", help="JSON output (default: WORKDIR/evaluation.json)")
    args = parser.parse_args(argv)
    try:
        licence = Licence.load(args.licence)
        model = api.load_protected(args.workdir)
        model.check_licence(licence)
        images, labels = model.test_data()
        report = evaluate_protection(model.module, model.params, licence, images, labels,
                                     random_licences=args.random_licences, seed=args.seed,
                                     near_per_class=args.near_per_class,
                                     batch_size=args.batch_size)
        if args.baseline_workdir:
            baseline = api.load_protected(args.baseline_workdir)
            report["baseline_accuracy"] = plain_accuracy(baseline.module, baseline.params,
                                                         images, labels, args.batch_size)
            report["legal_minus_baseline"] = report["legal_accuracy"] - report["baseline_accuracy"]
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["workdir"] = str(args.workdir)
    report["checkpoint_step"] = model.step
    out = Path(args.out) if args.out else Path(args.workdir) / "evaluation.json"
    tmp = out.with_suffix(out.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        print(f"error: cannot write {out} ({err.strerror or err}); choose a writable --out",
              file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
