"""Train a protected (or, with protect=False, an unprotected baseline) classifier.

python -m isnn_jax.train --workdir DIR [--config configs/fashion_mnist.py] \
    (--licence FILE | --issue_licence NEW_FILE) [--config.train.epochs=3 ...]

Exit codes: 0 done, 2 bad input (one `error:` line with the fix), 75 preempted by SIGTERM/SIGINT
after saving a checkpoint at the current step (rerun the same command to resume).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import multihost_utils
import numpy as np
import optax

from isnn_jax import checkpoints, metadata
from isnn_jax.config import ConfigError, check_config
from isnn_jax.data import DATASETS, load_split, to_float
from isnn_jax.data.streams import load_streams, stream_count
from isnn_jax.evaluate import evaluate_protection, format_report, plain_accuracy
from isnn_jax.hardening import Hardening
from isnn_jax.licence import Licence, LicenceError, TransformSpec, stack_keys
from isnn_jax.metric_writers import MetricWriter
from isnn_jax.models import build_model
from isnn_jax.near_keys import training_near_licences
from isnn_jax.parallel import DataParallel, check_batch_size, host_copy, make_mesh, replicated
from isnn_jax.preemption import EXIT_PREEMPTED, PreemptionWatch, TrainingPreempted
from isnn_jax.step import Protection, init_state, make_train_step

log = logging.getLogger("isnn_jax")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or Inf loss."""


class WorkdirError(ValueError):
    """The workdir cannot be created or written."""


def check_workdir_writable(workdir: Path) -> None:
    """Create `workdir` if needed and prove it writable, before any output is produced."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise WorkdirError(
            f"workdir {workdir} is not usable ({err.__class__.__name__}: {err.strerror or err}); "
            "choose another --workdir or fix its permissions"
        ) from None


def transform_spec(config: ml_collections.ConfigDict) -> TransformSpec:
    """The transform parameters the config asks for."""
    lic = config.licence
    return TransformSpec(kind=lic.kind, epsilon=float(lic.epsilon), block_size=int(lic.block_size),
                         distribution=lic.distribution)


def protection_of(config: ml_collections.ConfigDict, spec: TransformSpec) -> Protection:
    """The static description of the illegal views and their weights; a bad hardening value is
    a ConfigError naming the field."""
    obj, hard = config.objective, config.hardening
    try:
        hardening = Hardening(unlock=int(hard.unlock_perturbations),
                              unlock_step=float(hard.unlock_step),
                              estimate_observed=(int(hard.estimate_min), int(hard.estimate_max)))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Protection(spec=spec, protect=bool(config.protect), wrong_views=int(obj.wrong_views),
                      weights={"clean": float(obj.w_clean), "wrong": float(obj.w_wrong),
                               "near": float(obj.w_near), "unlock": float(hard.w_unlock),
                               "estimate": float(hard.w_estimate)},
                      illegal_form=obj.illegal_form, temperature=float(obj.temperature),
                      hardening=hardening)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Adam with linear warm-up and cosine decay over the whole run."""
    train = config.train
    warmup = min(int(train.warmup_steps), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, float(train.learning_rate), warmup,
                                                  max(total_steps, warmup + 1))
    return optax.adam(schedule)


def check_licence_matches(licence: Licence, spec: TransformSpec) -> None:
    """The licence file's transform must be the one the config trains for."""
    if licence.transform != spec:
        raise LicenceError(
            f"the licence's transform {licence.transform.to_dict()} differs from the config's "
            f"{spec.to_dict()}; drop the --config.licence.* overrides or issue a new licence"
        )


def _metadata_record(config: ml_collections.ConfigDict, licence: Licence | None) -> dict[str, Any]:
    spec = DATASETS[config.data.name]
    return {
        "dataset": config.data.name,
        "image_shape": list(spec.image_shape),
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "input_range": [0.0, 1.0],
        "protected": bool(config.protect),
        "transform": licence.transform.to_dict() if licence else None,
        "licence_fingerprint": licence.fingerprint() if licence else None,
        "model": config.model.to_dict(),
        "checkpoint_dir": config.train.checkpoint_dir,
        "config": config.to_dict(),
    }


def _check_workdir_licence(workdir: Path, licence: Licence | None) -> None:
    path = workdir / metadata.METADATA_FILE
    if not path.exists():
        return
    record = metadata.read(workdir)
    stored = record.get("licence_fingerprint")
    given = licence.fingerprint() if licence else None
    if stored != given:
        raise LicenceError(
            f"{workdir} holds a model trained for licence {stored}, not {given}; "
            "pass that model's licence or use a new workdir"
        )


def _format_progress(step: int, total: int, metrics: dict[str, float], rate: float,
                     per_epoch: int) -> str:
    parts = [f"step {step}/{total} (epoch {step / per_epoch:.2f})", f"loss {metrics['loss']:.4f}"]
    for name in ("legal", "clean", "wrong", "near"):
        if f"{name}_accuracy" in metrics:
            parts.append(f"{name} {metrics[f'{name}_accuracy']:.3f}")
    if "accuracy" in metrics:
        parts.append(f"acc {metrics['accuracy']:.3f}")
    eta = (total - step) / rate if rate > 0 else float("nan")
    parts.append(f"{rate:.1f} steps/s, ETA {eta:.0f}s")
    return " | ".join(parts)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Join the multi-process JAX cluster when config.distributed is set (once per process).

    Coordinator address, process count and id come from the environment (JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID) or are detected on Cloud TPU and Slurm.
    """
    if not config.distributed or jax.distributed.is_initialized():
        return
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(num_processes=int(count) if count else None,
                               process_id=int(index) if index else None)


def check_processes_agree(config: ml_collections.ConfigDict, licence: Licence | None) -> None:
    """Every process must run the same config with the same licence; compares hashes only."""
    if jax.process_count() == 1:
        return
    config_hash = hashlib.sha256(config.to_json(sort_keys=True).encode()).digest()[:4]
    licence_hash = bytes.fromhex(licence.fingerprint()[:8]) if licence else bytes(4)
    mine = np.frombuffer(config_hash + licence_hash, dtype=np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), 2)
    for column, what, fix in ((0, "config", "pass the same --config file and overrides"),
                              (1, "licence", "copy the same licence file to every worker")):
        if (every[:, column] != every[0, column]).any():
            odd = [int(i) for i in np.nonzero(every[:, column] != every[0, column])[0]]
            raise ConfigError(f"the {what} differs between processes (process 0 vs processes "
                              f"{odd}); {fix}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       licence: Licence | None = None) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint in `workdir`), then evaluate on the test split.

    Returns the evaluation report (also written to WORKDIR/final_evaluation.json).
    """
    check_config(config)
    initialize_distributed(config)
    workdir = Path(workdir)
    spec = transform_spec(config)
    if config.protect:
        if licence is None:
            raise LicenceError("config.protect is True but no licence was given; pass --licence "
                               "FILE or --issue_licence NEW_FILE")
        check_licence_matches(licence, spec)
    else:
        licence = None
    if config.data.name not in DATASETS:
        raise ConfigError(f"unknown dataset config.data.name={config.data.name!r}; "
                          f"choose one of {', '.join(DATASETS)}")
    is_main = jax.process_index() == 0
    check_processes_agree(config, licence)
    batch_size = int(config.train.batch_size)
    mesh = make_mesh()
    check_batch_size(batch_size, mesh)  # bad sizes fail before anything is written
    protection = protection_of(config, spec)
    try:
        protection.hardening.check_batch(batch_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    stream_count(int(config.data.streams), batch_size, jax.process_count())
    check_workdir_writable(workdir)
    _check_workdir_licence(workdir, licence)

    data_kwargs = {"data_dir": config.data.data_dir or None,
                   "source_dir": config.data.source_dir or None}
    if jax.process_count() > 1:  # one process prepares the TFDS files; the others then read them
        if not is_main:
            multihost_utils.sync_global_devices("isnn_jax: data prepared")
        load_split(config.data.name, "test", **data_kwargs)
        if is_main:
            multihost_utils.sync_global_devices("isnn_jax: data prepared")
    streams = load_streams(config.data.name, global_batch=batch_size,
                           streams=int(config.data.streams), seed=int(config.seed),
                           process_index=jax.process_index(), process_count=jax.process_count(),
                           **data_kwargs)
    test_images, test_labels = load_split(config.data.name, "test", **data_kwargs)
    image_shape = tuple(DATASETS[config.data.name].image_shape)
    num_classes = DATASETS[config.data.name].num_classes

    per_epoch = streams.steps_per_epoch
    total_steps = int(config.train.epochs) * per_epoch

    model = build_model(config.model.to_dict(), num_classes)
    tx = make_optimizer(config, total_steps)
    root = jax.random.key(int(config.seed), impl="threefry2x32")
    init_rng, step_root = jax.random.split(root)

    repl = replicated(mesh)
    state = jax.jit(lambda rng: init_state(model, tx, rng, image_shape, protection),
                    out_shardings=repl)(init_rng)
    mngr = checkpoints.manager(checkpoints.checkpoint_dir(workdir, config.train.checkpoint_dir),
                               int(config.train.keep_checkpoints))
    try:
        restored = checkpoints.restore_latest_state(mngr, state)
    except checkpoints.CheckpointError:
        mngr.close()
        raise
    if restored is not None:
        state = restored
        if is_main:
            log.info("resumed from checkpoint at step %d", int(host_copy(state.step)))
    if is_main:
        metadata.write(workdir, _metadata_record(config, licence))

    keys: dict[str, jax.Array] = {}
    if licence is not None:
        near = training_near_licences(licence, int(config.objective.near_keys), int(config.seed))
        keys = {"licence": licence.key(), "near": stack_keys(near) if near else None}
        keys = {name: value for name, value in keys.items() if value is not None}
    runner = DataParallel(str(config.parallelism), mesh,
                          lambda axis: make_train_step(model, tx, protection, axis_name=axis))
    keys, step_root = runner.broadcast((keys, step_root))
    step = int(host_copy(state.step))
    state = runner.place(state)

    writer = MetricWriter(workdir, enabled=is_main)
    log_every = max(1, int(config.train.log_every_steps))
    ckpt_every = max(1, int(config.train.checkpoint_every_steps))
    if is_main:
        log.info("training %s on %s: %d steps (%d epochs x %d), global batch %d on %d devices",
                 "protected model" if licence else "unprotected baseline", config.data.name,
                 total_steps, int(config.train.epochs), per_epoch, batch_size, mesh.devices.size)
    stop_at = int(config.train.stop_after_steps) or total_steps
    pending: tuple[int, dict] | None = None
    last_time, last_step = time.perf_counter(), step
    watch = PreemptionWatch()
    try:
        with watch:
            while step < min(total_steps, stop_at) and not watch.requested(step):
                state, metrics = runner.step(state, streams.batch(step), step_root, keys)
                step += 1
                if pending is not None:  # check the previous step while this one runs
                    _check_finite(*pending)
                pending = (step, metrics)
                if step % log_every == 0 or step == total_steps:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(step, metrics)
                    now = time.perf_counter()
                    rate = (step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    writer.write_scalars(step, values)
                    if is_main:
                        log.info(_format_progress(step, total_steps, values, rate, per_epoch))
                if step % ckpt_every == 0 and step < total_steps:
                    _check_finite(*pending)  # never checkpoint a non-finite state
                    _save_finite(mngr, runner.canonical(state), step)
            if pending is not None:
                _check_finite(*pending)
            if mngr.latest_step() != step:
                _save_finite(mngr, runner.canonical(state), step, force=True)
            mngr.wait_until_finished()
        if watch.signal_name is not None:
            raise TrainingPreempted(step, watch.signal_name)
        if step < total_steps:
            if is_main:
                log.info("stopped at step %d of %d as asked; rerun to resume", step, total_steps)
            return {"step": step, "stopped_early": True}
    finally:
        mngr.close()
        writer.flush()

    images = to_float(test_images)
    labels = test_labels.astype(np.int32)
    params = host_copy(runner.canonical(state).params)
    if licence is not None:
        report = evaluate_protection(model, params, licence, images, labels,
                                     random_licences=int(config.eval.random_licences),
                                     seed=int(config.eval.seed),
                                     near_per_class=int(config.eval.near_per_class),
                                     batch_size=int(config.eval.batch_size))
    else:
        report = {"num_images": int(images.shape[0]),
                  "clean_accuracy": plain_accuracy(model, params, images, labels,
                                                   int(config.eval.batch_size))}
    report["step"] = step
    summary = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    writer.write_scalars(step, {f"test/{k}": v for k, v in summary.items()})
    writer.close()
    if is_main:
        _write_json(workdir / "final_evaluation.json", report)
    return report


_NON_FINITE_HINT = ("the last good checkpoint is kept. Likely causes: a learning rate too high "
                    "(lower --config.train.learning_rate) or images outside [0, 1]")


def _check_finite(step: int, metrics: dict) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss became {loss} at step {step}; {_NON_FINITE_HINT}")


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)]).all()


def _save_finite(mngr: Any, state: Any, step: int, *, force: bool = False) -> None:
    """Checkpoint `state` unless its parameters hold NaN or Inf (then stop with a clear error)."""
    if not bool(np.asarray(_all_finite(state.params).addressable_data(0))):
        raise NonFiniteLossError(f"parameters became NaN or Inf at step {step}; {_NON_FINITE_HINT}")
    checkpoints.save(mngr, state, force=force)


def _write_json(path: Path, record: dict[str, Any]) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _resolve_licence(flags: Any, config: ml_collections.ConfigDict, workdir: Path) -> Licence | None:
    if not config.protect:
        return None
    if flags.licence and flags.issue_licence:
        raise LicenceError("pass either --licence (existing file) or --issue_licence (new file)")
    if flags.licence:
        return Licence.load(flags.licence)
    if not flags.issue_licence:
        raise LicenceError("a protected run needs --licence FILE (existing) or --issue_licence "
                           "NEW_FILE (issue a new licence there); keep it outside the workdir")
    if jax.process_count() > 1:
        raise LicenceError("--issue_licence cannot be used by several processes; issue the licence "
                           "once (python -m isnn_jax.licence ISSUE ...) or in a one-process run, "
                           "copy it to every worker and pass --licence FILE")
    path = Path(flags.issue_licence).absolute()
    if (workdir.absolute() / checkpoints.CHECKPOINT_DIR) in path.parents:
        raise LicenceError("refusing to issue a licence inside the workdir's checkpoints; "
                           "choose a path outside WORKDIR/checkpoints")
    licence = Licence.issue(config.licence.copyright, transform_spec(config))
    licence.save(path)
    log.info("issued licence %s into %s (mode 0600)", licence.fingerprint(), path)
    return licence


def main(argv: list[str]) -> None:
    """absl entry point: parse --config/--workdir/--licence and run `train_and_evaluate`."""
    from absl import app, flags  # noqa: F401  (flags are defined in _define_flags)

    flags_ = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Libraries (Orbax, TFDS) log every file operation at INFO; only this package's progress and
    # other libraries' warnings reach the terminal.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    config = flags_.config
    workdir = Path(flags_.workdir)
    try:
        initialize_distributed(config)
        log.setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
        licence = _resolve_licence(flags_, config, workdir)
        report = train_and_evaluate(config, workdir, licence)
    except TrainingPreempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except (ValueError, FileNotFoundError, NonFiniteLossError, checkpoints.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        if "legal_accuracy" in report:
            print(format_report(report))
        else:
            print(f"unprotected baseline accuracy {report['clean_accuracy']:.2%}")
        print(f"workdir: {workdir}  (evaluation: {workdir / 'final_evaluation.json'})")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from isnn_jax import config as embedded

    config_flags.DEFINE_config_file(
        "config", embedded.__file__,
        "Python config file with get_config() (default: the embedded digits config)",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and metadata")
    flags.DEFINE_string("licence", None, "an existing licence file (JSON, mode 0600)")
    flags.DEFINE_string("issue_licence", None, "issue a new licence into this new file")
    flags.mark_flags_as_required(["workdir"])


def _unknown_override(argv: list[str]) -> str | None:
    """Name the first --config.a.b=... override whose field does not exist, with a suggestion."""
    import difflib
    import importlib.util

    from isnn_jax import config as embedded

    path = embedded.__file__
    for arg, following in zip(argv[1:], argv[2:] + [""]):
        if arg.startswith("--config=") and len(arg) > 9:
            path = arg.split("=", 1)[1]
        elif arg == "--config" and following:
            path = following
    spec = importlib.util.spec_from_file_location("_isnn_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        node, walked = config, "config"
        for name in arg[len("--config."):].split("=", 1)[0].split("."):
            if not hasattr(node, "keys") or name not in node:
                options = list(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(name, options, n=1)
                hint = f"; did you mean {walked}.{close[0]}?" if close else ""
                return f"unknown config field {walked}.{name}{hint}"
            node, walked = node[name], f"{walked}.{name}"
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with an unknown config field reported as one clear line."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError):
        message = _unknown_override(argv) or "invalid --config override"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from absl import app

    try:  # config_flags reads --config.* overrides from sys.argv while defining the flag
        _define_flags()
    except (AttributeError, KeyError):
        print(f"error: {_unknown_override(sys.argv) or 'invalid --config override'}", file=sys.stderr)
        sys.exit(2)
    app.run(main, flags_parser=_parse_flags)
