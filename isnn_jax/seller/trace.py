"""Leak tracing: which registered licence unlocks a leaked model?

A model the seller can run itself (--model: a workdir or an export, read locally; nothing
leaves the machine): every licence in the registry (revoked ones included) is run through the
model on the whole labelled verification set. The model is traced to a licence when, image by
image, it does better under that licence than under every alternative (no licence, each other
registered licence): an exact paired sign test with a Bonferroni correction for the number of
licences, below alpha. Each licence also gets the stricter ownership test of isnn_jax.seller.verify
(against the best of R random licences). An exact match with a model fingerprint recorded in
the registry is reported too; a fine-tuned or pruned copy has another fingerprint and is traced
by behaviour alone.

A service that keeps what it is sent is traced by isnn_jax.seller.black_box_trace instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from isnn_jax.evaluation.stats import binomial_test, format_p, paired_test
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.runtime.black_box import Classifier
from isnn_jax.runtime.fingerprint import model_fingerprint
from isnn_jax.runtime.model import ProtectedModel
from isnn_jax.seller.black_box_trace import trace_black_box
from isnn_jax.seller.registry import Entry, open_registry
from isnn_jax.seller.verify import DEFAULT_ALPHA, correctness, null_model


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
    * ownership (isnn_jax.seller.verify's test): accuracy against the best of no licence, R random
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


def trace_suspect(registry_dir: str | Path, classify: Classifier, model: ProtectedModel | None,
                  images: np.ndarray, labels: np.ndarray, *, black_box: bool,
                  num_classes: int | None = None, **options: Any) -> dict[str, Any]:
    """Trace a suspect against every licence of the registry: `trace_licences` for a model run
    locally, `trace_black_box` (`black_box=True`) for a service that keeps what it is sent.
    A local model's parameters are also matched against the recorded model fingerprints."""
    with open_registry(registry_dir) as registry:
        candidates = list(registry.licences())
        fingerprint = (model_fingerprint(model.params)
                       if model is not None and model.params is not None else None)
        exact = registry.buyer_of_model(fingerprint) if fingerprint else None
    trace = trace_black_box if black_box else trace_licences
    report = trace(classify, candidates, images, labels, num_classes=num_classes, **options)
    report.update(model_fingerprint=fingerprint,
                  exact_copy_of=({"buyer": exact.buyer, "licence": exact.licence_id,
                                  "model_fingerprint": fingerprint} if exact else None))
    return report

