"""Protect a model for one buyer: train for the buyer's registered licence, record the model.

python -m isnn_jax.protect --registry DIR --buyer NAME --workdir DIR \
    [--config configs/fashion_mnist.py] [--config.train.epochs=3 ...]

The licence comes from the seller's registry (it never needs to exist as a file on the training
machine); the transform fields of the config are taken from the licence. After training, the
model fingerprint (SHA-256 of the parameters) is recorded in the registry next to the licence.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import ml_collections

from isnn_jax.licence import Licence, LicenceError
from isnn_jax.registry import Entry, open_registry


def configure_for_licence(config: ml_collections.ConfigDict, licence: Licence) -> None:
    """Set the config's transform fields from the licence (in place) and turn protection on."""
    spec = licence.transform
    config.protect = True
    config.licence.kind = spec.kind
    config.licence.epsilon = float(spec.epsilon)
    config.licence.block_size = int(spec.block_size)
    config.licence.distribution = spec.distribution
    config.licence.copyright = licence.copyright


def record_model(registry_dir: str | Path, buyer: str, workdir: str | Path) -> Entry:
    """Record the newest checkpoint of `workdir` as the buyer's model; returns the updated record."""
    from isnn_jax import api
    from isnn_jax.model_fingerprint import model_fingerprint

    with open_registry(registry_dir) as registry:
        licence = registry.licence(buyer)  # a revoked licence raises here
        model = api.load_protected(workdir)
        trained_for = model.meta.get("licence_fingerprint")
        if trained_for is None:
            raise LicenceError(f"{workdir} holds an unprotected model; protect one for {buyer!r} "
                               "with python -m isnn_jax.protect")
        return registry.record_model(buyer, model_fingerprint(model.params),
                                     str(Path(workdir).absolute()), model.step,
                                     licence_id=trained_for)


def protect_for_buyer(registry_dir: str | Path, buyer: str, config: ml_collections.ConfigDict,
                      workdir: str | Path) -> dict[str, Any]:
    """Train (or resume) `workdir` for the buyer's licence and record the model in the registry."""
    from isnn_jax.train import train_and_evaluate

    with open_registry(registry_dir) as registry:
        licence = registry.licence(buyer)
    configure_for_licence(config, licence)
    report = train_and_evaluate(config, workdir, licence)
    if report.get("stopped_early"):
        return report
    entry = record_model(registry_dir, buyer, workdir)
    here = str(Path(workdir).absolute())
    report["model_fingerprint"] = [m for m in entry.models if m["workdir"] == here][-1][
        "model_fingerprint"]
    return report


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from isnn_jax import config as embedded

    config_flags.DEFINE_config_file(
        "config", embedded.__file__,
        "Python config file with get_config() (default: the embedded digits config)",
        lock_config=True)
    flags.DEFINE_string("registry", None, "the seller's licence registry directory")
    flags.DEFINE_string("buyer", None, "the buyer whose licence the model is trained for")
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and metadata")
    flags.mark_flags_as_required(["registry", "buyer", "workdir"])


def main(argv: list[str]) -> None:
    """absl entry point: train for the buyer's licence, print the evaluation and the fingerprint."""
    from absl import flags

    from isnn_jax.checkpoints import CheckpointError
    from isnn_jax.evaluate import format_report

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    logging.getLogger("isnn_jax").setLevel(logging.INFO)
    flags_ = flags.FLAGS
    try:
        report = protect_for_buyer(flags_.registry, flags_.buyer, flags_.config, flags_.workdir)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if report.get("stopped_early"):
        print(f"stopped at step {report['step']}; rerun to resume (nothing recorded yet)")
        return
    print(format_report(report))
    print(f"recorded model {report['model_fingerprint'][:16]} for buyer {flags_.buyer!r} in "
          f"{flags_.registry}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
