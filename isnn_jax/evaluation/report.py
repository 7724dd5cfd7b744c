"""The few human-readable lines of an evaluation report's headline numbers."""

from __future__ import annotations

from typing import Any


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
