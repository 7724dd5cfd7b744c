"""Leak tracing: which registered licence unlocks a leaked model?

python -m isnn_jax.trace --model PATH --registry DIR [--json]
python -m isnn_jax.trace --command 'CMD' --dataset NAME --registry DIR --expose_legal_inputs

A model the seller can run itself (--model: a workdir or an export, read locally; nothing
leaves the machine): every licence in the registry (revoked ones included) is run through the
model on the whole labelled verification set. The model is traced to a licence when, image by
image, it does better under that licence than under every alternative (no licence, each other
registered licence): an exact paired sign test with a Bonferroni correction for the number of
licences, below alpha. Each licence also gets the stricter ownership test of isnn_jax.verify
(against the best of R random licences). An exact match with a model fingerprint recorded in
the registry is reported too; a fine-tuned or pruned copy has another fingerprint and is traced
by behaviour alone.

A suspect's service (--command: a program that answers queries, untrusted): every image sent
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

import argparse
import json
import sys
from typing import Any

import numpy as np

from isnn_jax.black_box import Classifier, as_labels
from isnn_jax.licence import Licence, TransformSpec, random_keys
from isnn_jax.registry import Entry, open_registry
from isnn_jax.stats import (SequentialBinomialTest, binomial_test, binomial_upper_bound, format_p,
                            paired_test)
from isnn_jax.verify import (DEFAULT_ALPHA, add_model_arguments, correctness, null_model,
                             quiet_libraries, resolve_data, resolve_model,
                             verification_arrays)


def trace_licences(classify: Classifier, candidates: list[tuple[Entry, Licence]],
                   images: np.ndarray, labels: np.ndarray, *, random_licences: int = 100,
                   seed: int = 0, alpha: float = DEFAULT_ALPHA,
                   num_classes: int | None = None) -> dict[str, Any]:
    """Evidence per registered licence and the verdict: which licence unlocks the model, if any.

    Every image goes to `classify` clean and under every registered licence: for a model the
    seller runs itself. A service that keeps what it is sent is traced with `trace_black_box`.
    Two tests per licence, both exact and one-sided:
    * comparison (decides the trace): a paired sign test, image by image, of the licence
      against each alternative (no licence, every other registered licence); its p-value is
      the largest of those, times the number of licences (Bonferroni);
    * ownership (isnn_jax.verify's test): accuracy against the best of no licence, R random
      licences and chance. It is stricter and is what a claim of ownership should rest on.
    """
    if not candidates:
        raise ValueError("the registry holds no licences; issue or import the licences you sold")
    labels = np.asarray(labels).astype(np.int64)
    images = np.asarray(images, np.float32)
    count = images.shape[0]
    num_classes = int(num_classes or labels.max() + 1)
    clean = correctness(classify, None, [None], images, labels)[0]
    right = np.concatenate([correctness(classify, licence.transform, [licence.key()], images,
                                        labels) for _, licence in candidates])
    nulls: dict[TransformSpec, dict[str, Any]] = {}
    for _, licence in candidates:
        if licence.transform not in nulls:  # one null model per transform kind in the registry
            nulls[licence.transform] = null_model(classify, licence.transform, images, labels,
                                                  random_licences=random_licences, seed=seed,
                                                  num_classes=num_classes)
    correction = np.log10(len(candidates))
    evidence = []
    for index, (entry, licence) in enumerate(candidates):
        null = nulls[licence.transform]
        ownership = binomial_test(int(right[index].sum()), count, null["null_accuracy"])
        alternatives = {"no licence": clean, **{other.buyer: right[j] for j, (other, _)
                                                in enumerate(candidates) if j != index}}
        paired = {name: paired_test(right[index], rival) for name, rival in alternatives.items()}
        weakest = max(paired, key=lambda name: paired[name]["log10_p_value"])
        log10_p = min(0.0, paired[weakest]["log10_p_value"] + correction)
        evidence.append({
            "buyer": entry.buyer, "licence": entry.licence_id,
            "status": "revoked" if entry.revoked else "active",
            "accuracy": float(right[index].mean()), "correct": int(right[index].sum()),
            "comparison": {"log10_p_value": log10_p, "p_value": float(10.0 ** log10_p),
                           "closest_alternative": weakest, **{k: paired[weakest][k]
                                                              for k in ("wins", "losses")}},
            "ownership": {**ownership, "null_accuracy": null["null_accuracy"],
                          "verified": bool(ownership["log10_p_value"] < np.log10(alpha))},
            "traced": bool(log10_p < np.log10(alpha))})
    evidence.sort(key=lambda row: (row["comparison"]["log10_p_value"], -row["accuracy"]))
    report: dict[str, Any] = {"evidence": evidence, "alpha": alpha, "images": count,
                              "accuracy_without_licence": float(clean.mean()),
                              "null": [{"transform": spec.to_dict(), **null}
                                       for spec, null in nulls.items()]}
    best = evidence[0]
    report.update(traced=best["traced"], buyer=best["buyer"] if best["traced"] else None,
                  licence=best["licence"] if best["traced"] else None,
                  ownership_verified=best["traced"] and best["ownership"]["verified"])
    return report


def format_trace(report: dict[str, Any]) -> str:
    """Human-readable table of the evidence and the verdict."""
    rows = [("buyer", "licence", "status", "accuracy", "comparison p", "ownership p", "")]
    for row in report["evidence"]:
        rows.append((row["buyer"], row["licence"], row["status"], f"{row['accuracy']:.2%}",
                     format_p(row["comparison"]["log10_p_value"]),
                     format_p(row["ownership"]["log10_p_value"]),
                     "TRACED" if row["traced"] else "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    for null in report["null"]:
        random = null["random_licences"]
        spread = (f"; {random['count']} random licences: mean {random['mean']:.2%}, max "
                  f"{random['max']:.2%}" if random["count"] else "")
        lines.append(f"without licence {null['accuracy_without_licence']:.2%}{spread}; "
                     f"ownership null p0 {null['null_accuracy']:.2%}; {report['images']} images")
    exact = report.get("exact_copy_of")
    if exact:
        lines.append(f"parameters identical to the model recorded for buyer {exact['buyer']!r} "
                     f"(model fingerprint {exact['model_fingerprint'][:16]})")
    elif report.get("model_fingerprint"):
        lines.append(f"parameters ({report['model_fingerprint'][:16]}) match no recorded model: "
                     "a modified copy (fine-tuned, pruned) or an unrecorded one")
    if report["traced"]:
        best = report["evidence"][0]
        strength = ("it also passes the ownership test" if report["ownership_verified"] else
                    "it does not pass the stricter ownership test against random licences")
        lines.append(f"verdict: traced to buyer {report['buyer']!r} (licence {report['licence']}; "
                     f"comparison p = {format_p(best['comparison']['log10_p_value'])} < "
                     f"{report['alpha']:g}; {strength})")
    else:
        lines.append(f"verdict: no registered licence unlocks this model better than the "
                     f"alternatives at alpha {report['alpha']:g}")
    return "\n".join(lines)


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
    from isnn_jax.transforms import apply_per_example, apply_transform

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


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 when traced to a licence, 1 when not, 2 on an error."""
    parser = argparse.ArgumentParser(prog="python -m isnn_jax.trace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--registry", required=True, help="the seller's licence registry")
    parser.add_argument("--expose_legal_inputs", action="store_true",
                        help="required with --command, which sends the service " + EXPOSED)
    parser.add_argument("--max_images_per_licence", type=int, default=DEFAULT_MAX_PER_LICENCE,
                        help="--command only: the most legal inputs of one licence sent "
                             "(default %(default)s); a licence still undecided there is "
                             "reported undecided")
    parser.add_argument("--baseline_images", type=int,
                        help="--command only: images sent first, each under a random "
                             "unregistered licence, for the null accuracy p0; more of them "
                             "lower p0 and so the legal inputs needed (default: every distinct "
                             "image not reserved for the licences)")
    parser.add_argument("--unlocked_accuracy", type=float, default=DEFAULT_UNLOCKED_ACCURACY,
                        help="--command only: p1, the accuracy of a model under the licence it "
                             "answers to, that the sequential test weighs against p0 "
                             "(default %(default)s)")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="--command only: the error bound of clearing a licence under which "
                             "the model is at least p1 right (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command and not args.expose_legal_inputs:
        print(f"error: --command hands the service legal inputs of every registered licence "
              f"(up to {args.max_images_per_licence} each, other buyers' included); pass "
              "--expose_legal_inputs to accept that, or trace a local workdir or export with "
              "--model", file=sys.stderr)
        return 2
    quiet_libraries()
    from isnn_jax.black_box import BlackBoxError
    from isnn_jax.checkpoints import CheckpointError
    from isnn_jax.model_fingerprint import model_fingerprint

    try:
        with open_registry(args.registry) as registry:
            candidates = list(registry.licences())
            classify, meta, model = resolve_model(args)
            fingerprint = model_fingerprint(model.params) if model is not None and \
                model.params is not None else None
            exact = registry.buyer_of_model(fingerprint) if fingerprint else None
        images, labels, described = resolve_data(args, meta)
        if args.command:
            report = trace_black_box(classify, candidates, images, labels, alpha=args.alpha,
                                     beta=args.beta, unlocked_accuracy=args.unlocked_accuracy,
                                     baseline_images=args.baseline_images,
                                     random_licences=args.random_licences,
                                     max_images_per_licence=args.max_images_per_licence,
                                     seed=args.seed, num_classes=meta.get("num_classes"))
        else:
            report = trace_licences(classify, candidates, images, labels,
                                    random_licences=args.random_licences, seed=args.seed,
                                    alpha=args.alpha, num_classes=meta.get("num_classes"))
    except (ValueError, FileNotFoundError, CheckpointError, BlackBoxError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report.update(model=args.model or args.command, dataset=described,
                  model_fingerprint=fingerprint,
                  exact_copy_of=({"buyer": exact.buyer, "licence": exact.licence_id,
                                  "model_fingerprint": fingerprint} if exact else None))
    text = format_black_box(report) if args.command else format_trace(report)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else text)
    return 0 if report["traced"] else 1


if __name__ == "__main__":
    sys.exit(main())
