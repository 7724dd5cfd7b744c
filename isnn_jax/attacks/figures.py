"""PNG figures of a security report, drawn from the report dict alone (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _references(axis: Any, ref: dict[str, Any], horizontal: bool = True) -> None:
    line = axis.axhline if horizontal else axis.axvline
    line(ref["legal_accuracy"], color="tab:green", linestyle="--", label="legal")
    line(ref["clean_accuracy"], color="tab:red", linestyle=":", label="clean (no licence)")
    if "baseline_accuracy" in ref:
        line(ref["baseline_accuracy"], color="gray", linestyle="-.", label="baseline")


def _save(figure: Any, folder: Path, name: str) -> str:
    figure.tight_layout()
    figure.savefig(folder / name, dpi=110)
    plt.close(figure)
    return name


def key_guessing(result: dict[str, Any], ref: dict[str, Any], folder: Path) -> str:
    """Histogram of the screened accuracies of random licences, with the control marked."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    hist = result["screen"]["histogram"]
    edges = hist["edges"]
    axis.bar(edges[:-1], hist["counts"], width=edges[1] - edges[0], align="edge",
             color="tab:blue", label=f"{result['guesses']:,} random licences")
    axis.set_yscale("log")
    _references(axis, ref, horizontal=False)
    axis.axvline(result["max_accuracy"], color="tab:purple", label="best guess (re-measured)")
    axis.set_xlabel(f"accuracy on {result['screen_images']} screening images")
    axis.set_ylabel("licences")
    axis.legend(fontsize=7)
    return _save(figure, folder, "key_guessing.png")


def curve(rows: list[dict[str, Any]], x: str, series: dict[str, str], ref: dict[str, Any],
          folder: Path, name: str, xlabel: str, log_x: bool = False) -> str:
    """Accuracy curves over one swept quantity, with the reference lines."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for key, label in series.items():
        points = [(r[x], r[key]) for r in rows if key in r]
        if points:
            axis.plot(*zip(*points), marker="o", label=label)
    _references(axis, ref)
    if log_x:
        axis.set_xscale("log")
    axis.set_ylim(0, 1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=7)
    return _save(figure, folder, name)


def bars(labels: list[str], groups: dict[str, list[float]], ref: dict[str, Any], folder: Path,
         name: str, xlabel: str) -> str:
    """Grouped bars (one group per label, one bar per series)."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(1, len(groups))
    for index, (series, values) in enumerate(groups.items()):
        axis.bar([i + index * width for i in range(len(values))], values, width, label=series)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=8)
    _references(axis, ref)
    axis.set_ylim(0, 1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("clean test accuracy")
    axis.legend(fontsize=7, ncol=2)
    return _save(figure, folder, name)


def draw_all(report: dict[str, Any], folder: Path) -> list[str]:
    """Every figure the report's attacks allow; the file names written into `folder`."""
    ref, attacks, names = report["reference"], report["attacks"], []
    ok = {n: r for n, r in attacks.items() if "error" not in r and "skipped" not in r}
    if "key_guessing" in ok:
        names.append(key_guessing(ok["key_guessing"], ref, folder))
    if "pruning" in ok:
        names.append(curve(ok["pruning"]["rows"], "sparsity",
                           {"legal_accuracy": "protected, with licence",
                            "clean_accuracy": "protected, without licence",
                            "baseline_accuracy": "baseline, pruned"}, ref, folder, "pruning.png",
                           "global magnitude sparsity"))
    if "estimation" in ok:
        names.append(curve(ok["estimation"]["rows"], "observed", {"accuracy": "estimated pattern"},
                           ref, folder, "estimation.png", "observed legal inputs", log_x=True))
    if "partial_knowledge" in ok:
        names.append(curve(ok["partial_knowledge"]["rows"], "cosine",
                           {"accuracy": "sign-flipped true pattern"}, ref, folder,
                           "partial_knowledge.png", "cosine with the true pattern"))
    if "fine_tuning" in ok and ok["fine_tuning"]["rows"]:
        rows = ok["fine_tuning"]["rows"]
        modes = ["scratch", *ok["fine_tuning"]["modes"]]
        names.append(bars([f"{r['fraction']:.0%}" for r in rows],
                          {m: [float(np.mean([d["modes"][m]["test_accuracy"] for d in r["draws"]
                                              if m in d["modes"]] or [0.0])) for r in rows]
                           for m in modes},
                          ref, folder, "fine_tuning.png", "clean labelled training data"))
    if "unlock_by_optimisation" in ok and ok["unlock_by_optimisation"]["rows"]:
        rows = ok["unlock_by_optimisation"]["rows"]
        names.append(bars([f"{r['fraction']:.0%}, {r['bound']}" for r in rows],
                          {"learned perturbation": [r["accuracy"] for r in rows]}, ref, folder,
                          "unlock.png", "data, bound"))
    if "distillation" in ok and ok["distillation"]["rows"]:
        rows = ok["distillation"]["rows"]
        names.append(bars([f"{r['teacher']}\n{r['queries']:,}" for r in rows],
                          {"student": [r["student_accuracy"] for r in rows]}, ref, folder,
                          "distillation.png", "teacher, clean queries"))
    return names
