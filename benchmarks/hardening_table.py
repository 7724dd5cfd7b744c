"""The hardening table: one column per protection variant, one row per attack figure.

Reads the `report.json` that `python -m isnn_jax.attack` wrote for each variant
(benchmarks/hardening.sh runs them all), prints a Markdown table and writes it as JSON.

    python benchmarks/hardening_table.py --reports benchmarks/results/hardening \
        --variants default shuffle adversarial shuffle_adversarial amplitude
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from records import write_record


def load_reports(reports: Path, variants: list[str]) -> dict[str, dict[str, Any]]:
    """Each variant's report; a variant without one is named on stderr and left out."""
    found = {}
    for variant in variants:
        path = reports / variant / "report.json"
        if path.is_file():
            found[variant] = json.loads(path.read_text())
        else:
            print(f"hardening_table: no report for {variant} ({path} is missing)", file=sys.stderr)
    return found


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


# Summary labels that carry a per-variant detail: (pattern, row label, detail shown in the cell).
_VARYING = (
    (re.compile(r"^(fine-tuning on .* data: best stolen) \((\w+)\)$"), r"\1", r"\2"),
    (re.compile(r"^(true key, amplitude scaled) (x[\d.]+) \(worst scale\)$"), r"\1 (worst scale)",
     r"\2"),
    (re.compile(r"^partial knowledge: (.*)$"), "partial knowledge (control)", r"\1"),
)
_CURVE = (0, 30, 50, 70, 90)


def _label(quantity: str) -> tuple[str, str]:
    for pattern, label, detail in _VARYING:
        if pattern.match(quantity):
            return pattern.sub(label, quantity), pattern.sub(detail, quantity)
    return quantity, ""


def _curve(rows: list[dict[str, Any]], field: str) -> str:
    return " / ".join(f"{100 * r[field]:.1f}" for r in rows if round(100 * r["sparsity"]) in _CURVE)


def variant_figures(report: dict[str, Any]) -> dict[str, str]:
    """Row label -> cell text for one variant: every summary figure with its verdict."""
    cells = {}
    pruning = report["attacks"].get("pruning", {}).get("rows", [])
    for row in report["summary"]:
        label, detail = _label(row["quantity"])
        text = _pct(row["accuracy"]) + (f" ({detail})" if detail else "")
        if "advantage" in row:
            text += f", advantage {100 * row['advantage']:+.2f}"
        if row.get("verdict"):
            text += f" {row['verdict']}"
        cells[label] = text
        if label.startswith("pruning") and pruning:
            sparsities = "/".join(str(s) for s in _CURVE)
            cells[f"pruning curve without licence, {sparsities}% sparsity"] = _curve(
                pruning, "clean_accuracy")
            cells[f"pruning curve with licence, {sparsities}% sparsity"] = _curve(
                pruning, "legal_accuracy")
    return cells


def build_table(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows in the order of first appearance; legal-accuracy cost against the 'default' column."""
    columns = {variant: variant_figures(report) for variant, report in reports.items()}
    labels: list[str] = []
    for cells in columns.values():
        labels += [label for label in cells if label not in labels]
    legal = {variant: report["reference"]["legal_accuracy"] for variant, report in reports.items()}
    rows = []
    if "default" in legal:
        rows.append({"quantity": "cost in legal accuracy vs default (points)",
                     **{v: f"{100 * (legal[v] - legal['default']):+.2f}" for v in legal}})
    for label in labels:
        rows.append({"quantity": label, **{v: columns[v].get(label, "—") for v in columns}})
    transforms = {v: r["model"]["transform"] for v, r in reports.items()}
    seconds = {v: r.get("seconds_total") for v, r in reports.items()}
    return {"variants": list(reports), "transforms": transforms, "attack_seconds": seconds,
            "commands": {v: r.get("command") for v, r in reports.items()}, "rows": rows}


def markdown(table: dict[str, Any]) -> str:
    """The table as Markdown, one column per variant."""
    variants = table["variants"]
    lines = ["| quantity | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for row in table["rows"]:
        lines.append(f"| {row['quantity']} | " + " | ".join(row[v] for v in variants) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, required=True,
                        help="directory with one attack report folder per variant")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the table")
    args = parser.parse_args(argv)
    reports = load_reports(args.reports, args.variants)
    if not reports:
        print("hardening_table: no report found; run benchmarks/hardening.sh first", file=sys.stderr)
        return 1
    table = build_table(reports)
    print(markdown(table))
    if args.out is not None:
        write_record(args.out, table)
    return 0 if len(reports) == len(args.variants) else 1


if __name__ == "__main__":
    sys.exit(main())
