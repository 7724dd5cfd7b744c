"""Tracing a suspect's service, which answers queries and may keep every input it is sent.

A suspect's service (a program that answers queries, untrusted): every image sent
under a licence is a legal input t_k(x) the service keeps, and for the additive transform a few
dozen of them estimate a pattern that unlocks the model (docs/security.md). So it runs only
with --expose_legal_inputs, and it sends as little as it can: no clean image at all; first a
baseline of images under random (unregistered) licences, which carries no registered key; then,
per licence, fresh images never sent before in any form (never under two licences), as few as a
sequential probability ratio test needs to decide, up to --max_images_per_licence. It stops as
soon as one licence is shown to unlock the model. The report says how many images each licence
exposed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isnn_jax.evaluation.stats import SequentialBinomialTest, binomial_upper_bound, format_p
from isnn_jax.protection.licence import Licence, random_keys
from isnn_jax.protection.transforms import apply_per_example, apply_transform
from isnn_jax.runtime.black_box import Classifier, as_labels
from isnn_jax.seller.registry import Entry
from isnn_jax.seller.verify import DEFAULT_ALPHA, verification_arrays

DEFAULT_BETA = 0.01  # bound on clearing a licence under which the model is at least p1 right
DEFAULT_UNLOCKED_ACCURACY = 0.8  # p1: the accuracy of a model under the licence it answers to
DEFAULT_MAX_PER_LICENCE = 100  # cap on the legal inputs of one licence handed to the service

EXPOSED = ("legal inputs t_k(x) of every registered licence (other buyers' and revoked ones "
           "included), fresh images each, at most --max_images_per_licence per licence, the "
           "sequential test stopping each licence as soon as it decides; for the additive "
           "transform 10 such inputs estimate a pattern that unlocks a Fashion-MNIST model to "
           "78%%, 30 to 87%% (docs/security.md). No clean image is sent; the baseline sent "
           "first (--baseline_images images under random, unregistered licences) carries no "
           "registered key")


def _distinct_order(images: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the distinct images (first occurrences), in a seeded random order."""
    _, first = np.unique(images.reshape(images.shape[0], -1), axis=0, return_index=True)
    return np.random.default_rng(seed).permutation(np.sort(first))


def _query(classify: Classifier, groups: list[np.ndarray], rng: np.random.Generator,
           ) -> list[np.ndarray]:
    """Send groups of images as one shuffled batch (position tells nothing); answers per group."""
    batch = np.concatenate(groups)
    order = rng.permutation(batch.shape[0])
    answers = np.empty(batch.shape[0], np.int64)
    answers[order] = as_labels(classify(batch[order]), batch.shape[0])
    return np.split(answers, np.cumsum([group.shape[0] for group in groups])[:-1])


def _check_black_box_options(alpha: float, beta: float, unlocked_accuracy: float,
                             random_licences: int, max_images_per_licence: int) -> None:
    for name, value, flag in (("alpha", alpha, "--alpha"), ("beta", beta, "--beta"),
                              ("the unlocked accuracy", unlocked_accuracy,
                               "--unlocked_accuracy")):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}; pass "
                             f"{flag} in (0, 1)")
    if random_licences < 1:
        raise ValueError("the baseline needs at least one random licence; pass "
                         "--random_licences 1 or more")
    if max_images_per_licence < 1:
        raise ValueError("each licence needs at least one image; pass "
                         "--max_images_per_licence 1 or more")


def trace_black_box(classify: Classifier, candidates: list[tuple[Entry, Licence]],
                    images: np.ndarray, labels: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
                    beta: float = DEFAULT_BETA,
                    unlocked_accuracy: float = DEFAULT_UNLOCKED_ACCURACY,
                    baseline_images: int | None = None, random_licences: int = 100,
                    max_images_per_licence: int = DEFAULT_MAX_PER_LICENCE, seed: int = 0,
                    num_classes: int | None = None) -> dict[str, Any]:
    """Trace a model reachable only by queries, handing it as few legal inputs as a verdict needs.

    Every distinct image of the verification set is sent at most once, in one form, and none
    clean:
    * baseline: `baseline_images` (default: every image not reserved for the licences), each
      under one of `random_licences` random unregistered licences, which is what an innocent
      buyer's licence is to this model. p0 = max(chance, their accuracy's exact upper
      confidence bound at level alpha/2). They carry no registered key, so more of them cost
      nothing but lower p0 and with it the legal inputs a verdict needs;
    * then each licence, on fresh images, gets Wald's sequential test (Ville's thresholds) of
      'accuracy <= p0' against 'accuracy >= unlocked_accuracy', at alpha / (2 x licences) for
      'unlocks' and beta for 'does not unlock'. Each round sends a licence exactly the fewest
      images after which its test could stop, so no image is sent that a one-at-a-time test
      would not have needed; all open licences share one shuffled batch per round.
    Querying ends as soon as one licence unlocks the model (or every test stopped, or reached
    `max_images_per_licence`). Naming an innocent licence has probability at most alpha.
    """
    if not candidates:
        raise ValueError("the registry holds no licences; issue or import the licences you sold")
    _check_black_box_options(alpha, beta, unlocked_accuracy, random_licences,
                             max_images_per_licence)
    images, labels = verification_arrays(images, labels)
    num_classes = int(num_classes or labels.max() + 1)
    order = _distinct_order(images, seed)
    count = len(candidates)
    specs = list(dict.fromkeys(licence.transform for _, licence in candidates))
    reserved = count * max_images_per_licence
    if baseline_images is None:
        baseline_images = max(order.size - reserved, len(specs))
    if baseline_images < len(specs):
        raise ValueError(f"the baseline needs at least one image per transform kind in the "
                         f"registry ({len(specs)}), got {baseline_images}; pass a larger "
                         "--baseline_images")
    if order.size < reserved + baseline_images:
        raise ValueError(f"tracing {count} licences needs {reserved + baseline_images} distinct "
                         f"images (up to {max_images_per_licence} per licence and a baseline of "
                         f"at least {baseline_images}, none sent twice) but the verification "
                         f"set has {order.size}; pass more images (--num_images, --data) or lower "
                         "--max_images_per_licence")
    cursor = 0

    def take(size: int) -> np.ndarray:
        nonlocal cursor
        cursor += size
        return order[cursor - size:cursor]

    rng = np.random.default_rng([seed, 1])  # the order of every batch sent
    keys = random_keys(seed, random_licences)
    per_spec = baseline_images // len(specs)
    baseline_index = {spec: take(per_spec) for spec in specs}
    answers = _query(classify, [np.asarray(apply_per_example(
        spec, keys[np.arange(per_spec) % random_licences], images[index]))
        for spec, index in baseline_index.items()], rng)
    calls = 1
    baseline, null = [], {}
    for (spec, index), answer in zip(baseline_index.items(), answers):
        correct = int((answer == labels[index]).sum())
        bound = binomial_upper_bound(correct, per_spec, alpha / (2 * len(specs)))
        baseline.append({"transform": spec.to_dict(), "images": per_spec,
                         "licences": min(random_licences, per_spec), "correct": correct,
                         "accuracy": correct / per_spec, "upper_bound": bound})
        null[spec] = max(1.0 / num_classes, bound)

    rows = []
    for entry, licence in candidates:
        p0 = null[licence.transform]
        row: dict[str, Any] = {"entry": entry, "licence": licence, "sent": [], "correct": 0,
                               "test": None, "reason": None, "p0": p0}
        if p0 < unlocked_accuracy:
            row["test"] = SequentialBinomialTest(p0, unlocked_accuracy, alpha / (2 * count),
                                                 beta)
        else:
            row["reason"] = (f"not tested: under random licences the model is already up to "
                             f"{p0:.0%} right, not below the unlocked accuracy "
                             f"{unlocked_accuracy:.0%}; no licence can stand out")
        rows.append(row)
    while True:
        batch = []
        for row in rows:
            if row["test"] is None or row["test"].decision is not None or row["reason"]:
                continue
            room = max_images_per_licence - len(row["sent"])
            if room == 0:
                row["reason"] = f"undecided after {max_images_per_licence} images (the cap)"
                continue
            batch.append((row, take(min(row["test"].steps_to_decision(), room))))
        if not batch:
            break
        answers = _query(classify, [np.asarray(apply_transform(row["licence"].transform,
                                                               row["licence"].key(),
                                                               images[index]))
                                    for row, index in batch], rng)
        calls += 1
        for (row, index), answer in zip(batch, answers):
            right = answer == labels[index]
            row["sent"].extend(int(i) for i in index)
            row["correct"] += int(right.sum())
            row["test"].observe(right)
        if any(row["test"] is not None and row["test"].decision == "above" for row in rows):
            for row in rows:
                if row["test"] is not None and row["test"].decision is None and not row["reason"]:
                    row["reason"] = "stopped: another licence already unlocks the model"
            break

    correction = np.log10(2 * count)
    evidence = []
    for row in rows:
        entry, test = row["entry"], row["test"]
        decision = ("not tested" if test is None else
                    {"above": "unlocks", "below": "does not unlock"}.get(test.decision,
                                                                         "undecided"))
        log10_p = 0.0 if test is None else min(0.0, test.log10_p_value + correction)
        sent = len(row["sent"])
        evidence.append({
            "buyer": entry.buyer, "licence": entry.licence_id,
            "status": "revoked" if entry.revoked else "active", "images_sent": sent,
            "correct": row["correct"], "accuracy": row["correct"] / sent if sent else None,
            "decision": decision, "reason": row["reason"], "null_accuracy": row["p0"],
            "log10_p_value": log10_p, "p_value": float(10.0 ** log10_p),
            "log_likelihood_ratio": None if test is None else test.log_ratio,
            "sent_indices": sorted(row["sent"]), "traced": decision == "unlocks"})
    evidence.sort(key=lambda row: (not row["traced"], row["log10_p_value"], -row["images_sent"]))
    unlocking = [row for row in evidence if row["traced"]]
    legal = sum(row["images_sent"] for row in evidence)
    sent_baseline = per_spec * len(specs)
    report: dict[str, Any] = {
        "mode": "black box, sequential", "evidence": evidence, "alpha": alpha, "beta": beta,
        "unlocked_accuracy": unlocked_accuracy, "max_images_per_licence": max_images_per_licence,
        "baseline": {"chance": 1.0 / num_classes, "random_licences": baseline,
                     "sent_indices": sorted(int(i) for i in np.concatenate(
                         list(baseline_index.values())))},
        "null": [{"transform": spec.to_dict(), "null_accuracy": p0} for spec, p0 in null.items()],
        "queries": {"calls": calls, "images": sent_baseline + legal, "legal_inputs": legal,
                    "baseline_images": sent_baseline, "clean_images": 0},
        "traced": len(unlocking) == 1}
    single = unlocking[0] if len(unlocking) == 1 else None
    report.update(buyer=single and single["buyer"], licence=single and single["licence"],
                  unlocking=[row["buyer"] for row in unlocking])
    return report


def format_black_box(report: dict[str, Any]) -> str:
    """Human-readable table of a black-box trace: decisions and the images each licence exposed."""
    rows = [("buyer", "licence", "status", "images sent", "accuracy", "p", "decision")]
    for row in report["evidence"]:
        rows.append((row["buyer"], row["licence"], row["status"], str(row["images_sent"]),
                     "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}",
                     format_p(row["log10_p_value"]),
                     row["decision"].upper() if row["traced"] else row["decision"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    lines += [f"  {row['buyer']}: {row['reason']}" for row in report["evidence"] if row["reason"]]
    queries = report["queries"]
    for base, null in zip(report["baseline"]["random_licences"], report["null"]):
        lines.append(f"baseline: {base['images']} images under {base['licences']} random "
                     f"{base['transform']['kind']} licences {base['accuracy']:.2%}; null "
                     f"accuracy p0 {null['null_accuracy']:.2%}; unlocked accuracy p1 "
                     f"{report['unlocked_accuracy']:.0%}")
    lines.append(f"sent: {queries['images']} images in {queries['calls']} calls, "
                 f"{queries['legal_inputs']} of them legal inputs (" + ", ".join(
                     f"{row['buyer']} {row['images_sent']}" for row in report["evidence"])
                 + "); no clean image, none sent twice")
    if report["traced"]:
        best = report["evidence"][0]
        lines.append(f"verdict: traced to buyer {report['buyer']!r} (licence {report['licence']}; "
                     f"p = {format_p(best['log10_p_value'])} < {report['alpha']:g} after "
                     f"{best['images_sent']} images)")
    elif report["unlocking"]:
        lines.append(f"verdict: several licences unlock this model "
                     f"({', '.join(report['unlocking'])}); not traced to one buyer")
    else:
        lines.append(f"verdict: no registered licence was shown to unlock this model at alpha "
                     f"{report['alpha']:g}")
    return "\n".join(lines)
