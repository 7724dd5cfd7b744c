"""Per-buyer cost from a shared base against from scratch, and what sharing a base costs.

One registry, one licence per buyer (the config's transform). The base is buyer-0's model,
protected from scratch with `python -m isnn_jax.protect`; every other buyer gets a copy made
from it by the key transplant (`--base W --transplant --config.train.epochs=0`) and, for
comparison, one fine-tuned for E epochs from an unprotected base (the same config trained with
`--config.protect=False`, a one-off cost like the protected base's). Reported: each
command's wall time (training and its evaluation report), each model's protection metrics from
that report, the accuracy of every model under every buyer's licence, and what
`python -m isnn_jax.trace` says about each model.

    PYTHONPATH=. python benchmarks/per_buyer.py --config fashion_mnist_strong --buyers 3 \
        --fine_tune_epochs 2 --out benchmarks/results/per_buyer/fashion_mnist_strong.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.records import command_line, write_record

METRICS = ("legal_accuracy", "clean_accuracy", "near_key_held_out_max", "near_key_trained_max")


def run(args: list[str], log: Path) -> float:
    """Run one command, its output into `log`; its wall time (a failure stops the benchmark)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):
        sys.exit(f"error: {' '.join(args[:2])} failed ({result.returncode}); see {log}")
    return seconds


def cross_licence(workdirs: dict[str, Path], licences: dict[str, Path]) -> dict[str, dict]:
    """Test accuracy of every model under every buyer's licence (the transform applied, then
    the network, whatever licence the metadata names)."""
    from isnn_jax import api
    from isnn_jax.runtime.model import apply_licence, batched

    matrix = {}
    images = labels = None
    for name, workdir in workdirs.items():
        model = api.load_protected(workdir)
        if images is None:
            images, labels = model.test_data()
        row = {}
        for buyer, path in licences.items():
            licence = api.Licence.load(path)
            logits = batched(lambda x: model.net(apply_licence(licence, x)), images, 1000)
            row[buyer] = float((logits.argmax(-1) == labels).mean())
        matrix[name] = row
    return matrix


def stripped_layers(workdirs: dict[str, Path], licences: dict[str, Path]) -> dict[str, float]:
    """What a buyer gets by folding its own licence into its model's first layer (`A_k^T K_k`,
    a copy that needs no licence): the largest difference of that layer between each model and
    the base, relative to the base's. Equal layers mean that such a copy cannot tell the seller
    which of those buyers made it."""
    import jax.numpy as jnp
    from isnn_jax import api
    from isnn_jax.protection.transforms import invert_transform
    from isnn_jax.seller.transplant import first_layer

    def fold(workdir: Path) -> np.ndarray:
        model = api.load_protected(workdir)
        buyer = model.meta["licence_fingerprint"]
        licence = next(api.Licence.load(p) for p in licences.values()
                       if api.Licence.load(p).fingerprint() == buyer)
        _, kernel, _ = first_layer(model.params, int(np.prod(model.image_shape)))
        columns = jnp.asarray(kernel).T.reshape(-1, *model.image_shape)
        zero = jnp.zeros((1, *model.image_shape))
        spec, key = licence.transform, licence.key()
        return np.asarray(invert_transform(spec, key, columns) - invert_transform(spec, key, zero))

    reference = fold(workdirs["base"])
    return {label: float(np.abs(fold(w) - reference).max() / np.abs(reference).max())
            for label, w in workdirs.items() if label != "base"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fashion_mnist_strong")
    parser.add_argument("--buyers", type=int, default=3, help="buyers besides the base's")
    parser.add_argument("--fine_tune_epochs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/isnn_per_buyer")
    parser.add_argument("--out", default="benchmarks/results/per_buyer/result.json")
    options = parser.parse_args()
    work = Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    registry = work / "registry"
    config = ["--config", options.config]
    from isnn_jax.training.setup import transform_spec
    from isnn_jax.cli.configs import load_config
    spec = transform_spec(load_config(options.config))
    names = [f"buyer-{index}" for index in range(options.buyers + 1)]
    licences = {}
    for name in names:
        path = work / f"{name}.licence.json"
        if not path.exists():
            run(["isnn_jax.licence", "issue", "--registry", str(registry), "--buyer", name,
                 "--copyright", f"(c) Example Seller; licensed to {name}", "--out", str(path),
                 "--kind", spec.kind, "--epsilon", str(spec.epsilon), "--block_size",
                 str(spec.block_size), "--distribution", spec.distribution],
                work / f"issue-{name}.log")
        licences[name] = path

    runs: dict[str, dict] = {}

    def protect(label: str, buyer: str, *extra: str) -> None:
        workdir = work / label
        seconds = run(["isnn_jax.protect", "--registry", str(registry), "--buyer", buyer,
                       "--workdir", str(workdir), *config, *extra], work / f"{label}.log")
        report = json.loads((workdir / "final_evaluation.json").read_text())
        runs[label] = {"buyer": buyer, "how": extra and " ".join(extra) or "from scratch",
                       "seconds": round(seconds, 1),
                       "evaluation_seconds": round(float(report.get("seconds", 0.0)), 1),
                       **{k: report.get(k) for k in METRICS},
                       "random_licences": report["wrong_key"]["count"],
                       "random_licence_max": report["wrong_key"]["max"],
                       "random_licence_mean": report["wrong_key"]["mean"]}
        print(f"{label:22s} {runs[label]['how'][:52]:52s} {seconds:7.1f} s  legal "
              f"{report['legal_accuracy']:.4f} clean {report['clean_accuracy']:.4f} "
              f"random max {report['wrong_key']['max']:.4f}", flush=True)

    base, clean_base = work / "base", work / "clean-base"
    protect("base", names[0])
    for name in names[1:]:
        protect(f"transplant-{name}", name, "--base", str(base), "--transplant",
                "--config.train.epochs=0")
    clean_seconds = run(["isnn_jax.train", *config, "--config.protect=False", "--workdir",
                         str(clean_base)], work / "clean-base.log")
    print(f"{'clean-base':22s} {'unprotected, from scratch':52s} {clean_seconds:7.1f} s",
          flush=True)
    for name in names[1:]:
        protect(f"fine-tune-{name}", name, "--base", str(clean_base),
                f"--config.train.epochs={options.fine_tune_epochs}")

    workdirs = {label: work / label for label in runs}
    matrix = cross_licence(workdirs, licences)
    stripped = stripped_layers(workdirs, licences)
    traces = {}
    for label in runs:
        log = work / f"trace-{label}.log"
        run(["isnn_jax.trace", "--model", str(work / label), "--registry", str(registry),
             "--json"], log)
        text = log.read_text()
        report = json.loads(text[text.index("{"):])
        traces[label] = {"traced": report.get("traced"), "buyer": report.get("buyer"),
                         "exact_copy_of": (report.get("exact_copy_of") or {}).get("buyer"),
                         "expected": runs[label]["buyer"],
                         "accuracy_by_licence": {row["buyer"]: row["accuracy"]
                                                 for row in report["evidence"]}}

    print("\naccuracy of each model (rows) under each buyer's licence (columns)")
    print(f"{'':24s}" + "".join(f"{n:>10s}" for n in names))
    for label, row in matrix.items():
        print(f"{label:24s}" + "".join(f"{row[n]:10.4f}" for n in names))
    print("\nfirst layer with the licence folded in, difference from the base's (relative)")
    for label, value in stripped.items():
        print(f"{label:24s} {value:.2e}")
    print("\ntrace")
    for label, verdict in traces.items():
        print(f"{label:24s} {verdict}")
    scratch = runs["base"]["seconds"]
    ratios = {label: round(scratch / r["seconds"], 2) for label, r in runs.items()}
    write_record(options.out, {
        "command": command_line("per_buyer.py"), "config": options.config,
        "cpu_count": os.cpu_count(), "runs": runs, "from_scratch_over_this": ratios,
        "clean_base_seconds": round(clean_seconds, 1),
        "cross_licence_accuracy": matrix, "trace": traces,
        "stripped_first_layer_difference_from_base": stripped,
        "chance": float(1 / 10)})
    print(f"\nfrom scratch / per buyer: {ratios}")


if __name__ == "__main__":
    main()
