"""What a leaked copy may go through: magnitude pruning and light fine-tuning on clean data.

python -m isnn_jax.leak --workdir DIR --out LEAKED.isnn [--prune 0.3] [--fine_tune_steps 100]
    [--force]

Used to check that tracing survives them (tests and docs/workflow.md). The result is written
as an export whose metadata keeps only the image shape and classes: a leaked copy carries no
licence fingerprint.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from isnn_jax.cli import ArgumentParser, command
from isnn_jax.licence import Licence
from isnn_jax.transforms import apply_transform

KEPT_FIELDS = ("dataset", "image_shape", "num_classes", "class_names", "input_range")


def prune(params: Any, fraction: float) -> Any:
    """Zero the `fraction` of smallest-magnitude weights in every kernel (biases are kept)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune fraction must lie in [0, 1), got {fraction}")

    def prune_leaf(path: tuple, leaf: jax.Array) -> jax.Array:
        if not path or getattr(path[-1], "key", None) != "kernel" or fraction == 0.0:
            return leaf
        magnitude = jnp.abs(leaf).ravel()
        cut = jnp.sort(magnitude)[int(fraction * magnitude.size)]
        return jnp.where(jnp.abs(leaf) < cut, 0.0, leaf).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(prune_leaf, params)


def fine_tune(module: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray, *,
              steps: int, learning_rate: float = 1e-3, batch_size: int = 64, seed: int = 0,
              licence: Licence | None = None) -> Any:
    """`steps` of Adam on cross-entropy: over clean images (a thief without the licence), or
    over the licence's legal images (a buyer adapting the model before leaking it)."""
    tx = optax.adam(learning_rate)
    if licence is not None:
        images = np.asarray(apply_transform(licence.transform, licence.key(), jnp.asarray(images)))

    @jax.jit
    def step(state: tuple[Any, Any], batch: tuple[jax.Array, jax.Array]) -> tuple[Any, Any]:
        params, opt_state = state

        def loss(p: Any) -> jax.Array:
            logits = module.apply({"params": p}, batch[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    state = (params, tx.init(params))
    for _ in range(steps):
        chosen = rng.choice(images.shape[0], min(batch_size, images.shape[0]), replace=False)
        state = step(state, (jnp.asarray(images[chosen]), jnp.asarray(labels[chosen])))
    return state[0]


@command
def main(argv: list[str] | None = None) -> int:
    """Command line: write a pruned and/or fine-tuned copy of a workdir's model as an export."""
    parser = ArgumentParser(prog="python -m isnn_jax.leak", description=__doc__)
    parser.add_argument("--workdir", required=True, help="trained workdir whose model leaks")
    parser.add_argument("--out", required=True, help="export file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--prune", type=float, default=0.0,
                        help="fraction of each kernel to zero, smallest magnitudes first")
    parser.add_argument("--fine_tune_steps", type=int, default=0,
                        help="Adam steps of fine-tuning after loading (0: none)")
    parser.add_argument("--learning_rate", type=float, default=1e-3,
                        help="learning rate of the fine-tuning (default 1e-3)")
    parser.add_argument("--fine_tune_images", type=int, default=5000,
                        help="clean training images the fine-tuning draws from")
    parser.add_argument("--licence", help="fine-tune on legal images of this licence (a buyer "
                                          "adapting the model) instead of clean ones (a thief)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning batches")
    args = parser.parse_args(argv)
    from isnn_jax import api
    from isnn_jax.data import load_split, to_float
    from isnn_jax.export import check_new_output, export_bytes, write_atomic

    check_new_output(args.out, args.force)
    model = api.load_protected(args.workdir)
    params = model.params
    if args.fine_tune_steps:
        images, labels = load_split(model.meta["dataset"], "train")
        images, labels = to_float(images[:args.fine_tune_images]), labels[:args.fine_tune_images]
        licence = Licence.load(args.licence) if args.licence else None
        params = fine_tune(model.module, params, images, labels.astype(np.int32),
                           steps=args.fine_tune_steps, learning_rate=args.learning_rate,
                           seed=args.seed, licence=licence)
    params = prune(params, args.prune)
    meta = {name: model.meta.get(name) for name in KEPT_FIELDS}
    write_atomic(args.out, export_bytes(model.module, params, model.image_shape, meta))
    print(json.dumps({"leaked_copy": args.out, "pruned_fraction": args.prune,
                      "fine_tune_steps": args.fine_tune_steps,
                      "fine_tuned_on": "legal images" if args.licence else "clean images"},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
