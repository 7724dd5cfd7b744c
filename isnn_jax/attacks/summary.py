"""The headline table: one row per attack result, with the share of protection it removes.

"recovered" is (attack accuracy - chance) / (legal accuracy - chance). Verdicts: `breaks` at
>= 0.9 (the attacker has what the licence gives), `weakens` at >= 0.25, else `holds`. For
fine-tuning and the input adapter the question is whether the stolen weights are worth more
than the thief's data: an advantage over training from scratch of at most 2 points `holds`,
above that `weakens`, and `breaks` when that advantage comes with >= 0.9 recovered.
"""

from __future__ import annotations

import math

import numpy as np
from typing import Any

BREAKS, WEAKENS = 0.9, 0.25
ADVANTAGE_HOLDS = 0.02  # points of thief's advantage a protection may leave (issue's target)


def verdict(recovered: float) -> str:
    """`breaks`, `weakens` or `holds` for a recovered share of the legal margin."""
    if math.isnan(recovered):
        return "n/a"
    return "breaks" if recovered >= BREAKS else "weakens" if recovered >= WEAKENS else "holds"


def _row(quantity: str, value: float, reference: dict[str, Any], note: str = "",
         judged: bool = True) -> dict[str, Any]:
    legal, chance = reference["legal_accuracy"], reference["chance"]
    share = (value - chance) / (legal - chance) if legal - chance > 1e-9 else float("nan")
    return {"quantity": quantity, "accuracy": float(value),
            "recovered": float(share) if judged else None,
            "verdict": verdict(share) if judged else "", "note": note}


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the headline table from a report's reference numbers and attack results."""
    ref = report["reference"]
    rows = [_row("legal accuracy (true licence)", ref["legal_accuracy"], ref, judged=False),
            _row("clean accuracy (no licence)", ref["clean_accuracy"], ref)]
    if "baseline_accuracy" in ref:
        rows.append(_row("unprotected baseline", ref["baseline_accuracy"], ref, judged=False))
    attacks = {name: result for name, result in report["attacks"].items() if "error" not in result
               and "skipped" not in result}
    if "parameter_reading" in attacks and not math.isnan(attacks["parameter_reading"]["max_accuracy"]):
        result = attacks["parameter_reading"]
        best = result["best"]
        rows.append(_row(f"reading the weights (no data): best of {result['candidates']} "
                         "candidate patterns", result["max_accuracy"], ref,
                         f"{best['parameter']} ({best['applied']})"))
    if "key_guessing" in attacks:
        result = attacks["key_guessing"]
        found = "found" if result["control"]["found"] else "NOT found"
        rows.append(_row(f"key guessing: best of {result['guesses']:,} random licences",
                         result["max_accuracy"], ref, f"true licence as control: {found}, "
                         f"{result['control']['accuracy']:.2%}"))
    if "near_keys" in attacks:
        result = attacks["near_keys"]
        if "held_out" in result and result.get("trained_known", False):
            held = result["held_out"]
            rows.append(_row(f"near keys, held out: best of {held['count']} never trained on",
                             held["max_accuracy"], ref, "bit flips of the secret, copyright edits"))
            if "trained" in result:
                rows.append(_row(f"near keys, trained on: best of {result['trained']['count']}",
                                 result["trained"]["max_accuracy"], ref,
                                 "the near keys of the training loss"))
        else:
            rows.append(_row(f"near keys: best of {result['near_licences']} near licences",
                             result["max_accuracy"], ref, "bit flips of the secret, copyright "
                             "edits (which were trained on: unknown)"))
        scaled = result["amplitude_scaled_true_key"]
        if scaled:
            best = max(scaled, key=lambda r: r["accuracy"])
            worst = min(scaled, key=lambda r: r["accuracy"])
            rows.append(_row(f"true key, amplitude scaled x{worst['scale']:g} (worst scale)",
                             worst["accuracy"], ref, f"control (needs the key); best "
                             f"x{best['scale']:g}: {best['accuracy']:.2%}", judged=False))
    if "fine_tuning" in attacks:
        for row in attacks["fine_tuning"]["rows"]:
            if "advantage" not in row:
                continue
            gain = row["advantage"]["mean"]
            best = max(row["advantage_by_mode"], key=lambda m: row["advantage_by_mode"][m]["mean"])
            scratch = row["scratch_accuracy"]["mean"]
            entry = _row(f"fine-tuning on {row['fraction']:.0%} clean data: best stolen start "
                         f"per draw, mean of {len(row['draws'])} (best on average: {best})",
                         scratch + gain, ref,
                         f"thief's advantage {gain * 100:+.2f} ± "
                         f"{row['advantage']['std'] * 100:.2f} points over scratch "
                         f"({scratch:.2%})")
            entry["advantage"] = gain
            if gain <= ADVANTAGE_HOLDS:
                entry["verdict"] = "holds"
            elif entry["verdict"] == "holds":
                entry["verdict"] = "weakens"
            rows.append(entry)
    if "pruning" in attacks:
        result = attacks["pruning"]
        best = max(result["rows"], key=lambda r: r["clean_accuracy"])
        rows.append(_row("pruning: best clean accuracy over sparsities", best["clean_accuracy"], ref,
                         f"at {best['sparsity']:.0%} sparsity"))
    if "unlock_by_optimisation" in attacks:
        for row in attacks["unlock_by_optimisation"]["rows"]:
            rows.append(_row(f"unlock by optimisation, {row['fraction']:.0%} data, "
                             f"{row['bound']} bound", row["accuracy"], ref,
                             f"L-inf {row['linf']:.3f}"))
    if "permutation_unlock" in attacks:
        for row in attacks["permutation_unlock"]["rows"]:
            rows.append(_row(f"permutation unlock, {row['fraction']:.0%} data", row["accuracy"],
                             ref, f"{row['positions_matching_true_permutation']:.0%} of block "
                             "positions right"))
    if "input_adapter" in attacks:
        scratch = {row["fraction"]: row["scratch_accuracy"]["mean"]
                   for row in attacks.get("fine_tuning", {}).get("rows", [])
                   if "scratch_accuracy" in row}
        for fraction in sorted({r["fraction"] for r in attacks["input_adapter"]["rows"]}):
            draws = [r for r in attacks["input_adapter"]["rows"] if r["fraction"] == fraction]
            best = max(draws, key=lambda r: r["accuracy"])
            mean = float(np.mean([max(r["accuracy"] for r in draws if r["seed"] == seed)
                                  for seed in {r["seed"] for r in draws}]))
            note = f"{best['kind']} map, best draw {best['accuracy']:.2%}"
            entry = _row(f"input adapter on {fraction:.0%} clean data, mean over draws", mean,
                         ref, note)
            if fraction in scratch:
                entry["advantage"] = mean - scratch[fraction]
                entry["note"] += (f"; thief's advantage {entry['advantage'] * 100:+.2f} points "
                                  f"over scratch ({scratch[fraction]:.2%})")
                if entry["advantage"] <= ADVANTAGE_HOLDS:
                    entry["verdict"] = "holds"
                elif entry["verdict"] == "holds":
                    entry["verdict"] = "weakens"
            rows.append(entry)
    if "estimation" in attacks:
        for row in attacks["estimation"]["rows"]:
            rows.append(_row(f"key estimation from {row['observed']:,} legal inputs",
                             row["accuracy"], ref,
                             f"sign agreement {row['sign_agreement']:.1%}"
                             if "sign_agreement" in row else "no additive pattern to agree with"))
    if "partial_knowledge" in attacks:
        result = attacks["partial_knowledge"]["rows"]
        opening = [r for r in result if r["cosine"] < 1.0 and
                   verdict(_row("", r["accuracy"], ref)["recovered"]) == "breaks"]
        if opening:
            first = min(opening, key=lambda r: r["cosine"])
            rows.append(_row(f"partial knowledge: cosine {first['cosine']:g} suffices",
                             first["accuracy"], ref, "sensitivity: lowest cosine that recovers "
                             ">= 90%", judged=False))
        else:
            below = [r for r in result if r["cosine"] < 1.0]
            if below:
                best = max(below, key=lambda r: r["accuracy"])
                rows.append(_row(f"partial knowledge: best below cosine 1 (c={best['cosine']:g})",
                                 best["accuracy"], ref, "sensitivity: no cosine < 1 recovers 90%",
                                 judged=False))
    if "distillation" in attacks:
        for row in attacks["distillation"]["rows"]:
            judged = row["teacher"] == "protected"
            rows.append(_row(f"distillation, {row['queries']:,} clean queries, teacher: "
                             f"{row['teacher']}", row["student_accuracy"], ref,
                             "" if judged else "control", judged=judged))
    return rows
