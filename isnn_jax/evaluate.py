"""Evaluate a protected model: legal, clean, wrong-key and near-key accuracy, and PSNR.

python -m isnn_jax.evaluate --workdir DIR --licence FILE [--baseline_workdir DIR] [--out FILE]

Licences are screened, then confirmed: every random and near licence is measured on a seeded
subset of the test split (`screen_images`), and the best `confirm_top` of each group are measured
again on the whole split, so the reported maxima are full-split numbers at a fraction of the
exhaustive cost. `exhaustive=True` measures every licence on every image (the check of the
screen). Near licences the model trained on are reported apart from the held-out ones.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.cli import ArgumentParser, command
from isnn_jax.licence import Licence, TransformSpec, random_keys, stack_keys
from isnn_jax.near_keys import near_licences, trained_flags
from isnn_jax.transforms import apply_transform

log = logging.getLogger("isnn_jax")

IMAGES_PER_CALL = 8192  # keys x images evaluated in one compiled call on an accelerator
# On the CPU small calls run about 3x faster per image (they stay in cache): measured on the
# Fashion-MNIST CNN, 128 images per call ~3,500 img/s against ~1,100 at 8,192 (docs/performance.md).
CPU_IMAGES_PER_CALL = 128
PROGRESS_SECONDS = 5.0  # at most one progress line this often


def true_label_rank(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Rank of the true label in each output (0: the argmax, C-1: the argmin)."""
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    return (logits > true_logit).sum(axis=-1)


def _rank_counts(logits: jax.Array, labels: jax.Array) -> jax.Array:
    num_classes = logits.shape[-1]
    return jax.nn.one_hot(true_label_rank(logits, labels), num_classes, dtype=jnp.int32).sum(0)


def images_per_call() -> int:
    """Keys x images one compiled evaluation call takes on this backend."""
    return CPU_IMAGES_PER_CALL if jax.default_backend() == "cpu" else IMAGES_PER_CALL


@functools.partial(jax.jit, static_argnames=("model", "spec"))
def _count_ranks(params: Any, keys: jax.Array, images: jax.Array, labels: jax.Array, *,
                 model: nn.Module, spec: TransformSpec | None) -> jax.Array:
    if spec is None:
        return _rank_counts(model.apply({"params": params}, images), labels)[None]
    # The views of every key go through the network as one batch (25-40% faster on the CPU
    # than vmapping the network over keys), then are counted per key.
    views = jax.vmap(lambda key: apply_transform(spec, key, images))(keys)
    logits = model.apply({"params": params}, views.reshape(-1, *images.shape[1:]))
    logits = logits.reshape(keys.shape[0], images.shape[0], -1)
    return jax.vmap(lambda one: _rank_counts(one, labels))(logits)


def make_rank_counter(model: nn.Module, spec: TransformSpec | None) -> Callable:
    """A jitted count, per key of a chunk, of how often the true label has each output rank.

    With `spec` None the images are used as given (one "key" row). The model and the transform
    are static arguments of one jitted function, so equal ones reuse its compilation."""
    return functools.partial(_count_ranks, model=model, spec=spec)


def key_rank_rates(model: nn.Module, params: Any, spec: TransformSpec | None, keys: jax.Array | None,
                   images: np.ndarray, labels: np.ndarray, batch_size: int = 1024,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(keys, classes): the fraction of images whose true label has rank r under each key.

    Column 0 is the accuracy; the largest column is the best "pick the class at rank r" attack
    a thief could run on the outputs. `spec=None, keys=None`: the images as given. One call
    takes `images_per_call()` keys x images (several keys' views in one batch); `progress` is
    called with the licence x image evaluations each call completed."""
    counter = make_rank_counter(model, spec)
    num_images = images.shape[0]
    per_call = images_per_call()
    batch_size = min(batch_size, num_images, per_call)
    if spec is None:
        keys, keys_per_call = jnp.zeros((1,)), 1
    else:
        keys_per_call = max(1, per_call // batch_size)
    num_keys = keys.shape[0]
    counts = None
    for start in range(0, num_keys, keys_per_call):
        chunk = keys[start:start + keys_per_call]
        real = chunk.shape[0]
        pad = keys_per_call - real
        if pad and num_keys > keys_per_call:  # keep one compiled shape for every chunk
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], pad)])
        total = 0
        for first in range(0, num_images, batch_size):
            batch = counter(params, chunk, images[first:first + batch_size],
                            labels[first:first + batch_size])
            total = total + batch
            if progress is not None:
                jax.block_until_ready(total)
                progress(real * min(batch_size, num_images - first))
        total = np.asarray(total)[:real]
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


class Progress:
    """Logs, at most every `every` seconds, licences done of the total and an ETA.

    Work is counted in licence x image evaluations, so the ETA weighs the screen (many licences,
    few images) and the confirmation (few licences, every image) by what each costs."""

    def __init__(self, every: float = PROGRESS_SECONDS, enabled: bool = True) -> None:
        self.every, self.enabled = float(every), enabled
        self.stages: dict[str, tuple[int, int]] = {}  # name -> (licences, images per licence)
        self.done: dict[str, int] = {}
        self.started = self.last = time.perf_counter()

    def plan(self, stage: str, licences: int, images: int) -> None:
        """Declare (or re-declare, once its size is known) a stage of `licences` x `images`."""
        if not self.stages:  # the clock starts with the first stage, not with the legal pass
            self.started = self.last = time.perf_counter()
        self.stages[stage] = (int(licences), int(images))
        self.done.setdefault(stage, 0)

    def counter(self, stage: str) -> Callable[[int], None]:
        """The callback `key_rank_rates` reports a stage's finished evaluations to."""
        def add(units: int) -> None:
            self.done[stage] += int(units)
            now = time.perf_counter()
            if self.enabled and now - self.last >= self.every:
                self.last = now
                log.info("%s", self.line(stage))
        return add

    def line(self, stage: str) -> str:
        """One progress line: this stage's licences done, all stages' share done, the ETA."""
        licences, images = self.stages[stage]
        total = sum(k * n for k, n in self.stages.values())
        done = sum(self.done.values())
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (total - done) / done if done else math.nan
        return (f"evaluation {stage}: {self.done[stage] // max(images, 1):,}/{licences:,} licences "
                f"on {images:,} images | {done / max(total, 1):.0%} of all, {elapsed:.0f} s, "
                f"ETA {eta:.0f} s")


def _share(count: int) -> int:
    """Licences this process evaluates of `count` (across_processes splits them evenly)."""
    processes = jax.process_count()
    return count if processes == 1 else -(-count // processes)


def screen_subset(num_images: int, screen_images: int, seed: int) -> np.ndarray:
    """Indices (sorted) of the seeded random test images every licence is screened on."""
    if screen_images <= 0 or screen_images >= num_images:
        return np.arange(num_images)
    rng = np.random.default_rng([int(seed), 0x5C2EE])
    return np.sort(rng.permutation(num_images)[:screen_images])


def top_indices(scores: np.ndarray, members: np.ndarray, count: int) -> np.ndarray:
    """The `count` members (indices into `scores`) with the highest scores, best first."""
    members = np.asarray(members, dtype=np.int64)
    order = np.argsort(-scores[members], kind="stable")
    return members[order[:max(int(count), 0)]]


def _group(screen: np.ndarray, full: dict[int, np.ndarray], members: np.ndarray,
           column: int = 0) -> dict[str, Any]:
    """Screen statistics of a group of licences and the maximum of its confirmed ones."""
    rates = screen[members, column]
    confirmed = [full[i][column] for i in members if i in full]
    return {"count": int(members.size), "mean": float(rates.mean()), "std": float(rates.std()),
            "min": float(rates.min()), "screen_max": float(rates.max()),
            "confirmed": len(confirmed),
            "max": float(max(confirmed)) if confirmed else None}


def evaluate_protection(model: nn.Module, params: Any, licence: Licence, images: np.ndarray,
                        labels: np.ndarray, *, random_licences: int = 1000, seed: int = 1234,
                        near_per_class: int = 32, batch_size: int = 1024,
                        screen_images: int = 256, confirm_top: int = 8,
                        exhaustive: bool = False,
                        trained_near: Sequence[Licence] | None = None,
                        progress_seconds: float = PROGRESS_SECONDS) -> dict[str, Any]:
    """Every accuracy the protection is judged by, on float32 images in [0, 1].

    Random and near licences are screened on `screen_images` seeded test images and the best
    `confirm_top` of each group (random by accuracy, random by the best rank, held-out near,
    trained near) re-measured on all of them; `exhaustive` measures every licence on every image.
    `trained_near`: the near licences the model trained on (None: unknown, all count as held out).
    """
    spec = licence.transform
    started = time.perf_counter()
    num_images = int(images.shape[0])
    progress = Progress(progress_seconds, enabled=jax.process_index() == 0)
    legal = float(key_accuracies(model, params, spec, licence.key()[None], images, labels,
                                 batch_size)[0])
    clean_ranks = key_rank_rates(model, params, None, None, images, labels, batch_size)[0]
    report: dict[str, Any] = {
        "num_images": num_images,
        "legal_accuracy": legal,
        "clean_accuracy": float(clean_ranks[0]),
        "psnr_legal_vs_clean_db": mean_psnr(licence, images),
        # A thief may read any rank, not only the argmax: the best rank's hit rate on clean images.
        "clean_rank_attack": {"best_rank": int(clean_ranks.argmax()),
                              "accuracy": float(clean_ranks.max()),
                              "rate_by_rank": [float(v) for v in clean_ranks]},
    }

    # Every licence to measure, in one key array: the random ones, then the near ones.
    groups = near_licences(licence, near_per_class or None, seed)
    near = [lic for group in groups.values() for lic in group]
    near_class = np.array([name for name, group in groups.items() for _ in group])
    trained = trained_flags(near, trained_near)
    parts = ([random_keys(seed, random_licences)] if random_licences else []) + \
        ([stack_keys(near)] if near else [])
    if not parts:
        report["seconds"] = time.perf_counter() - started
        return report
    keys = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    num_random = int(random_licences)
    random_idx = np.arange(num_random)
    near_idx = num_random + np.arange(len(near))
    held_idx, trained_idx = near_idx[~trained], near_idx[trained]

    # Screen: every licence on the subset (exhaustive: on every image, nothing left to confirm).
    screen_start = time.perf_counter()
    chosen = np.arange(num_images) if exhaustive else screen_subset(num_images, screen_images, seed)
    screened_on_all = chosen.size == num_images
    progress.plan("screen", _share(keys.shape[0]), chosen.size)
    screen = across_processes(
        lambda k: key_rank_rates(model, params, spec, k, images[chosen], labels[chosen],
                                 batch_size, progress.counter("screen")), keys)
    screen_end = time.perf_counter()

    best_rank = int(screen[random_idx].mean(axis=0).argmax()) if num_random else 0
    if screened_on_all:
        confirm = np.arange(keys.shape[0])
        full = {int(i): screen[i] for i in confirm}
    else:
        picks = [top_indices(screen[:, 0], random_idx, confirm_top),
                 top_indices(screen[:, 0], held_idx, confirm_top),
                 top_indices(screen[:, 0], trained_idx, confirm_top)]
        if best_rank:
            picks.append(top_indices(screen[:, best_rank], random_idx, confirm_top))
        confirm = np.unique(np.concatenate(picks))
        progress.plan("confirm", _share(confirm.size), num_images)
        rates = across_processes(
            lambda k: key_rank_rates(model, params, spec, k, images, labels, batch_size,
                                     progress.counter("confirm")), keys[confirm])
        full = {int(i): row for i, row in zip(confirm, rates)}
    report["evaluation"] = {
        "mode": "exhaustive" if screened_on_all else "screened",
        "screen_images": int(chosen.size), "confirm_images": num_images,
        "confirm_top": None if screened_on_all else int(confirm_top),
        "licences": int(keys.shape[0]), "licences_confirmed": int(len(full)),
        "screen_seconds": screen_end - screen_start,
        "confirm_seconds": time.perf_counter() - screen_end}

    if num_random:
        wrong = _group(screen, full, random_idx)
        report["wrong_key"] = wrong
        rank = _group(screen, full, random_idx, best_rank)
        report["wrong_key_rank_attack"] = {"best_rank": best_rank, "mean_accuracy": rank["mean"],
                                           "max_accuracy": rank["max"]}
    if near:
        report["near_key"] = {}
        for name in groups:
            members = near_idx[near_class == name]
            report["near_key"][name] = {**_group(screen, full, members),
                                        "trained": int(trained[near_class == name].sum())}
        report["near_key_trained_known"] = trained_near is not None
        all_near = _group(screen, full, near_idx)
        report["near_key_max"] = all_near["max"]
        for label, members in (("held_out", held_idx), ("trained", trained_idx)):
            if members.size:
                summary = _group(screen, full, members)
                best = max((i for i in members if i in full), key=lambda i: full[i][0])
                summary["best_class"] = str(near_class[best - num_random])
                report[f"near_key_{label}"] = summary
                report[f"near_key_{label}_max"] = summary["max"]
    report["seconds"] = time.perf_counter() - started
    return report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of the headline numbers."""
    lines = [f"legal accuracy       {report['legal_accuracy']:.2%}",
             f"clean accuracy       {report['clean_accuracy']:.2%}  (no licence)"]
    ev = report.get("evaluation")
    if ev:
        if ev["mode"] == "exhaustive":
            lines.append(f"evaluated            {ev['licences']:,} licences on all "
                         f"{ev['confirm_images']:,} images (exhaustive)")
        else:
            lines.append(f"evaluated            {ev['licences']:,} licences screened on "
                         f"{ev['screen_images']:,} images; top {ev['confirm_top']} per group "
                         f"({ev['licences_confirmed']} licences) confirmed on "
                         f"{ev['confirm_images']:,}")
    if "wrong_key" in report:
        wrong = report["wrong_key"]
        lines.append(f"wrong-key accuracy   mean {wrong['mean']:.2%}  max {_pct(wrong['max'])}  "
                     f"({wrong['count']} random licences)")
    if "near_key_held_out" in report or "near_key_trained" in report:
        held, trained = report.get("near_key_held_out"), report.get("near_key_trained")
        if held:
            unknown = "" if report.get("near_key_trained_known", True) else \
                ", trained set unknown: every near licence counted"
            lines.append(f"near-key accuracy    max {_pct(held['max'])} held out  "
                         f"({held['count']} never trained on{unknown})")
        if trained:
            lines.append(f"                     max {_pct(trained['max'])} trained on  "
                         f"({trained['count']} in the near-key loss)")
    elif report.get("near_key_max") is not None:
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
    parser.add_argument("--screen_images", type=int, default=256,
                        help="test images every licence is screened on (0: all)")
    parser.add_argument("--confirm_top", type=int, default=8,
                        help="best screened licences per group re-measured on the whole split")
    parser.add_argument("--exhaustive", action="store_true",
                        help="every licence on every test image (slow; checks the screen)")
    parser.add_argument("--out", help="JSON output (default: WORKDIR/evaluation.json)")
    args = parser.parse_args(argv)
    from isnn_jax.cli import setup_logging
    from isnn_jax.near_keys import trained_near_from_config

    setup_logging()
    try:
        licence = Licence.load(args.licence)
        model = api.load_protected(args.workdir)
        model.check_licence(licence)
        images, labels = model.test_data()
        report = evaluate_protection(model.module, model.params, licence, images, labels,
                                     random_licences=args.random_licences, seed=args.seed,
                                     near_per_class=args.near_per_class,
                                     batch_size=args.batch_size,
                                     screen_images=args.screen_images,
                                     confirm_top=args.confirm_top, exhaustive=args.exhaustive,
                                     trained_near=trained_near_from_config(
                                         licence, model.meta.get("config", {})))
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
