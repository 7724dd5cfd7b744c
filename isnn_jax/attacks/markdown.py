"""The Markdown form of a security report: headline table first, then one section per attack."""

from __future__ import annotations

from typing import Any


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.2%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _headline(report: dict[str, Any]) -> list[str]:
    rows = [[row["quantity"], _pct(row["accuracy"]),
             "" if row["recovered"] is None else f"{row['recovered']:.2f}", row["verdict"],
             row["note"]] for row in report["summary"]]
    return _table(["quantity", "accuracy", "recovered", "verdict", "note"], rows)


def _section(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {name.replace('_', ' ')}", ""]
    if "error" in result:
        return lines + [f"**Failed:** `{result['error']}`", ""]
    if "skipped" in result:
        return lines + [f"Skipped: {result['skipped']}.", ""]
    if result.get("stopped_early"):
        lines += ["**Stopped early at its time limit**; the rows below are what finished.", ""]
    if name == "parameter_reading":
        lines += [f"{result['candidates']} candidate patterns read from "
                  f"{len(result['parameters_read'])} parameters (input-sized parameters, dense "
                  "kernels over the flattened input), no data used.", ""]
        if result.get("top"):
            lines += _table(["parameter", "applied as", "accuracy"],
                            [[r["parameter"], r["applied"], _pct(r["accuracy"])]
                             for r in result["top"]])
    elif name == "key_guessing":
        screen, control = result["screen"], result["control"]
        lines += [f"{result['guesses']:,} random licences screened on {result['screen_images']} "
                  f"images: mean {screen['mean']:.2%}, 99th percentile {screen['q99']:.2%}, max "
                  f"{screen['max']:.2%}. The best {len(result['confirmed_top'])} re-measured on "
                  f"{result['eval_images']:,} images: "
                  + ", ".join(_pct(a) for a in result["confirmed_top"]) + ".",
                  "", f"Control (the true licence among the guesses): screen rank "
                  f"{control['screen_rank']}, accuracy {control['accuracy']:.2%}, "
                  f"{'found' if control['found'] else 'NOT found'}.", ""]
    elif name == "near_keys":
        rows = [[cls, str(v["count"]), str(v.get("trained", "—")), _pct(v["screen_mean"]),
                 _pct(v["screen_max"]), _pct(v.get("confirmed_max"))]
                for cls, v in result["classes"].items()]
        lines += _table(["class", "count", "trained on", f"mean ({result['screen_images']} images)",
                         "max (screen)", f"max (re-measured, {result['eval_images']:,})"], rows)
        split = [f"{label.replace('_', ' ')}: best {_pct(result[label]['max_accuracy'])} of "
                 f"{result[label]['count']}" for label in ("held_out", "trained") if label in result]
        if split and result.get("trained_known", False):
            lines += ["Near keys never trained on (held out) and those in the training loss, "
                      "each group's best re-measured: " + "; ".join(split) + ".", ""]
        if result["amplitude_scaled_true_key"]:
            lines += ["True key, amplitude scaled:", ""]
            lines += _table(["scale", "epsilon", "accuracy"],
                            [[f"{r['scale']:g}", f"{r['epsilon']:.4f}", _pct(r["accuracy"])]
                             for r in result["amplitude_scaled_true_key"]])
        lines += ["True secret and text, other parameters in the licence (new key):", ""]
        lines += _table(["epsilon", "distribution", "accuracy"],
                        [[f"{r['epsilon']:.4f}", r["distribution"], _pct(r["accuracy"])]
                         for r in result["changed_parameters"]])
    elif name == "fine_tuning":
        modes = ["scratch", *result["modes"]]
        rows = []
        for r in result["rows"]:
            for d in r["draws"]:
                rows.append([f"{r['fraction']:.0%} ({d['train_images']:,}+"
                             f"{d['validation_images']:,})", str(d["seed"])]
                            + [_pct(d["modes"][m]["test_accuracy"]) if m in d["modes"] else "—"
                               for m in modes]
                            + [f"{d['advantage'] * 100:+.2f}" if "advantage" in d else "—"])
        lines += [f"Up to {result['steps']} steps (batch {result['batch_size']}) per run, sweep "
                  f"{', '.join(result['sweep'])}, validation every {result['evaluate_every']} "
                  f"steps on {result['validation']:.0%} of the thief's images; clean test "
                  "accuracy of each start point's validation-selected model:", ""]
        lines += _table(["data (train+validation)", "seed", *modes,
                         "thief's advantage (points)"], rows)
        summary = [f"{r['fraction']:.0%}: {r['advantage']['mean'] * 100:+.2f} ± "
                   f"{r['advantage']['std'] * 100:.2f} (scratch "
                   f"{'converged' if r['scratch_converged'] else 'still improving'})"
                   for r in result["rows"] if "advantage" in r]
        if summary:
            lines += ["", "Thief's advantage, mean ± spread over draws: " + "; ".join(summary)
                      + "."]
    elif name == "pruning":
        base = any("baseline_accuracy" in r for r in result["rows"])
        rows = [[f"{r['sparsity']:.0%}", _pct(r["legal_accuracy"]), _pct(r["clean_accuracy"])]
                + ([_pct(r.get("baseline_accuracy"))] if base else []) for r in result["rows"]]
        lines += _table(["sparsity", "with licence", "without licence"]
                        + (["baseline"] if base else []), rows)
    elif name == "unlock_by_optimisation":
        rows = [[f"{r['fraction']:.0%} ({r['train_images']:,})", r["bound"], f"{r['linf']:.3f}",
                 _pct(r["train_accuracy"]), _pct(r["accuracy"]),
                 _pct(r["sign_times_epsilon_accuracy"]),
                 f"{r['cosine_with_true_pattern']:.3f}" if "cosine_with_true_pattern" in r
                 else "—"] for r in result["rows"]]
        lines += [f"{result['steps']} Adam steps (batch {result['batch_size']}), best of "
                  f"{result['restarts']} restart(s) by the thief's own training accuracy:", ""]
        lines += _table(["data", "bound", "L-inf", "train acc", "test acc", "eps*sign test acc",
                         "cosine with true pattern"], rows)
    elif name == "permutation_unlock":
        rows = [[f"{r['fraction']:.0%} ({r['train_images']:,})", str(r["steps"]),
                 _pct(r["train_accuracy"]), _pct(r["accuracy"]),
                 f"{r['positions_matching_true_permutation']:.0%}"] for r in result["rows"]]
        lines += [f"A soft permutation of the {result['block_values']} values of a block "
                  f"(Sinkhorn, temperature annealed), plus a pattern within epsilon where the "
                  f"transform adds one; Adam, batch {result['batch_size']}, best of "
                  f"{result['restarts']} restart(s) by the thief's own training accuracy, then "
                  "the hard permutation (Hungarian assignment):", ""]
        lines += _table(["data", "steps", "train acc", "test acc",
                         "block positions equal to the key's (control)"], rows)
    elif name == "input_adapter":
        rows = [[f"{r['fraction']:.0%} ({r['train_images']:,}+{r['validation_images']:,})",
                 str(r["seed"]), r["kind"], r["selected"], _pct(r["validation"]),
                 _pct(r["accuracy"])] for r in result["rows"]]
        finish = {"clip": "clipped to [0, 1]", "none": "unclipped",
                  "sphere": "scaled to the mixing's norm"}.get(result.get("finish", "clip"),
                                                               result.get("finish"))
        lines += [f"A linear map of every {result['block_size']}x{result['block_size']} block "
                  f"plus a free offset, {finish}, in front of the frozen stolen model; "
                  f"Adam, up to {result['steps']} steps per learning rate, the best on the "
                  "thief's validation images:", ""]
        lines += _table(["data (train+validation)", "seed", "adapter", "selected",
                         "validation acc", "test acc"], rows)
    elif name == "estimation":
        lines += [f"Estimator: {result['estimator']}.", ""]
        lines += _table(["observed legal inputs", "accuracy", "sign agreement", "cosine"],
                        [[f"{r['observed']:,}", _pct(r["accuracy"]),
                          f"{r['sign_agreement']:.1%}" if "sign_agreement" in r else "—",
                          f"{r['cosine_with_true_pattern']:.3f}" if "sign_agreement" in r else "—"]
                         for r in result["rows"]])
    elif name == "partial_knowledge":
        lines += _table(["cosine", "accuracy (mean)", "min", "max"],
                        [[f"{r['cosine']:g}", _pct(r["accuracy"]), _pct(r["accuracy_min"]),
                          _pct(r["accuracy_max"])] for r in result["rows"]])
    elif name == "distillation":
        lines += _table(["teacher", "queries", "steps", "student accuracy (clean test)"],
                        [[r["teacher"], f"{r['queries']:,}", str(r["steps"]),
                          _pct(r["student_accuracy"])] for r in result["rows"]])
    lines += [f"Time: {result['seconds']:.0f} s.", ""]
    return lines


def render(report: dict[str, Any]) -> str:
    """The whole report as Markdown text."""
    model, ref = report["model"], report["reference"]
    lines = ["# Security evaluation", "",
             f"Model `{model['workdir']}` (checkpoint step {model['checkpoint_step']}), licence "
             f"fingerprint `{model['licence_fingerprint']}`, transform {model['transform']['kind']} "
             f"epsilon {model['transform']['epsilon']:g} ({model['transform']['distribution']}).",
             f"Accuracies on {ref['eval_images']:,} test images; chance {ref['chance']:.2%}.", ""]
    if report.get("command"):
        lines += ["```bash", report["command"], "```", ""]
    lines += _headline(report)
    lines += ["recovered = (attack - chance) / (legal - chance); verdict: breaks >= 0.9, "
              "weakens >= 0.25, else holds (fine-tuning and the input adapter, with data: holds when "
              "the thief's advantage over training from scratch is <= 2 points).", ""]
    for name, result in report["attacks"].items():
        lines += _section(name, result)
    for figure in report.get("figures", []):
        lines += [f"![{figure}]({figure})", ""]
    if report.get("figures_skipped"):
        lines += [f"Figures skipped: {report['figures_skipped']}.", ""]
    lines += [f"Total time: {report['seconds_total']:.0f} s.", ""]
    return "\n".join(lines)
