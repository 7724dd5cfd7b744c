"""Can the stolen first layer give away the keyed mixing? An upper bound on a structural attack.

PYTHONPATH=. python benchmarks/mixing_alignment.py --workdir DIR --licence FILE --label NAME

Against `y = Q (x - 1/2)` the stolen MLP's first kernel is `K` (D x H) over mixed inputs. Its
Gram matrix `K K^T`, or that of `K - K_0` where `K_0` is the initial kernel (which a thief
recomputes from the seed in the metadata), is shaped by the legal inputs `Q x`; pairing its
eigenvectors with those of the clean covariance (from the thief's own images) gives `Q` up to
one sign per eigenvector, the same alignment the eavesdropper of the attack suite makes from
observed legal inputs. This script gives the attack the *true* signs (read from the licence: an
upper bound no thief reaches) and reports the accuracy of the frozen model on `Q_hat (x - 1/2)`
and the alignment `tr(Q_hat^T Q) / D` (1 is the licence). Prints a table, writes
benchmarks/results/mixing_alignment/LABEL.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from records import command_line, write_record

from isnn_jax.attacks.adapter import adapted_accuracy, finish_of, linear_adapter
from isnn_jax.attacks.estimation import true_mixing
from isnn_jax.attacks.parameters import reads_input
from isnn_jax.attacks.setting import load_setting

RESULTS = Path(__file__).parent / "results" / "mixing_alignment"


def descending_eigenvectors(matrix: np.ndarray) -> np.ndarray:
    """Eigenvectors of a symmetric matrix, largest eigenvalue first."""
    return np.linalg.eigh(matrix)[1][:, ::-1]


def first_kernel(params, image_shape) -> tuple[str, np.ndarray]:
    """The dense kernel that reads the flattened image."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if np.ndim(leaf) == 2 and reads_input(tuple(np.shape(leaf)), image_shape):
            return "/".join(str(getattr(p, "key", p)) for p in path), np.asarray(leaf, np.float64)
    raise SystemExit("error: no dense kernel reads the flattened input; this analysis is for "
                     "the MLP of the mix transform")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--licence", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--fractions", default="0.01,0.1,1.0")
    parser.add_argument("--eval_images", type=int, default=10000)
    args = parser.parse_args()
    start = time.time()
    setting = load_setting(args.workdir, args.licence)
    if setting.spec.kind != "mix":
        raise SystemExit(f"error: the model's transform is {setting.spec.kind!r}, not 'mix'")
    target, shape = setting.protected, setting.protected.image_shape
    true = true_mixing(setting)
    size = true.shape[0]
    images, labels = setting.test_images[:args.eval_images], setting.test_labels[:args.eval_images]

    def accuracy(q: np.ndarray) -> float:
        return adapted_accuracy(setting, linear_adapter(q, shape), images, labels, shape[0],
                                finish=finish_of(setting.spec))

    name, kernel = first_kernel(target.params, shape)
    seed = int(target.meta.get("config", {}).get("seed", 0))
    init_rng = jax.random.split(jax.random.key(seed, impl="threefry2x32"))[0]
    initial = target.module.init(init_rng, jnp.zeros((1, *shape)))["params"]
    initial_kernel = first_kernel(initial, shape)[1]
    grams = {"K K^T": kernel @ kernel.T,
             "(K - K0)(K - K0)^T": (kernel - initial_kernel) @ (kernel - initial_kernel).T}
    rows = []
    print(f"{'gram':<22} {'clean images':>12} {'alignment':>10} {'accuracy':>9}")
    for gram_name, gram in grams.items():
        u_gram = descending_eigenvectors(gram)
        for fraction in (float(f) for f in args.fractions.split(",")):
            count = max(2, int(fraction * setting.train_images.shape[0]))
            clean = setting.train_images[:count].reshape(count, -1).astype(np.float64)
            clean -= clean.mean(axis=0)
            u_clean = descending_eigenvectors(clean.T @ clean / count)
            signs = np.sign(np.einsum("aj,ab,bj->j", u_gram, true, u_clean))  # the oracle's
            estimate = (u_gram * np.where(signs == 0, 1.0, signs)) @ u_clean.T
            row = {"gram": gram_name, "clean_images": count,
                   "alignment": float(np.trace(estimate.T @ true) / size),
                   "accuracy": accuracy(estimate),
                   "top10_pairing": [float(abs(v)) for v in
                                     np.einsum("aj,ab,bj->j", u_gram[:, :10], true,
                                               u_clean[:, :10])]}
            rows.append(row)
            print(f"{gram_name:<22} {count:>12,} {row['alignment']:>10.3f} "
                  f"{100 * row['accuracy']:>8.2f}%")
    legal = accuracy(true)
    print(f"control: the true Q gives {100 * legal:.2f}%")
    write_record(RESULTS / f"{args.label}.json", {
        "command": command_line("mixing_alignment.py"), "kernel": name, "seed": seed,
        "legal_accuracy": legal, "eval_images": int(images.shape[0]), "rows": rows,
        "note": "signs from the true Q (an upper bound on the attack); alignment = tr(Q_hat^T Q)/D",
        "seconds": round(time.time() - start, 1)})


if __name__ == "__main__":
    main()
