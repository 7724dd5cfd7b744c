"""Train a protected (or, with protect=False, an unprotected baseline) classifier.

python -m isnn_jax.train --workdir DIR [--config configs/fashion_mnist.py]
    (--licence FILE | --issue_licence NEW_FILE) [--config.train.epochs=3 ...]

--config also takes a packaged config by name (`--config fashion_mnist`), from any directory.

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
from isnn_jax.preemption import PreemptionWatch, TrainingPreempted
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


def _check_resume_config(workdir: Path, config: ml_collections.ConfigDict,
                         directory: str) -> list[dict[str, Any]]:
    """Refuse to resume the checkpoints in `directory` with a config that changes the run (its
    schedule, data order or model) unless train.allow_changed_config; returns the workdir's
    record of accepted changes, this one (if any) last without its step."""
    from isnn_jax.config import default_config

    path = workdir / metadata.METADATA_FILE
    if not path.exists() or not checkpoints.has_checkpoint(directory):
        return []  # nothing to resume: a new run
    record = metadata.read(workdir)
    history = list(record.get("config_changes", []))
    if "config" not in record:
        return history
    changes = metadata.config_changes(record["config"], config.to_dict(),
                                      default_config().to_dict())
    if not changes:
        return history
    listed = metadata.describe_changes(changes)
    if not config.train.allow_changed_config:
        raise ConfigError(
            f"{workdir} holds checkpoints of a run with another config: {listed}. Resuming would "
            "silently change its learning-rate schedule, data order or model. Use a new "
            "--workdir, or restore those values, or pass --config.train.allow_changed_config=True "
            "if the change is intended")
    log.warning("resuming with a changed config, as train.allow_changed_config allows: %s", listed)
    return history + [{"fields": {name: list(pair) for name, pair in changes.items()}}]


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
    ckpt_dir = checkpoints.checkpoint_dir(workdir, config.train.checkpoint_dir)
    config_changes = _check_resume_config(workdir, config, ckpt_dir)

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
    mngr = checkpoints.manager(ckpt_dir, int(config.train.keep_checkpoints))
    try:
        restored = checkpoints.restore_latest_state(mngr, state)
    except checkpoints.CheckpointError:
        mngr.close()
        raise
    if restored is not None:
        state = restored
        if is_main:
            log.info("resumed from checkpoint at step %d", int(host_copy(state.step)))
    resumed_at = int(host_copy(state.step))
    if config_changes and "at_step" not in config_changes[-1]:
        config_changes[-1] = {"at_step": resumed_at, **config_changes[-1]}
    if is_main:
        metadata.write(workdir, {**_metadata_record(config, licence),
                                 "config_changes": config_changes})

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

    writer = MetricWriter(workdir, enabled=is_main, resume_step=resumed_at)
    log_every = max(1, int(config.train.log_every_steps))
    ckpt_every = max(1, int(config.train.checkpoint_every_steps))
    if is_main and step >= total_steps:
        log.info("%s is already trained (step %d of %d); nothing to train, evaluating it again",
                 workdir, step, total_steps)
    elif is_main:
        log.info("training %s on %s: %d steps (%d epochs x %d), global batch %d on %d device%s",
                 "protected model" if licence else "unprotected baseline", config.data.name,
                 total_steps, int(config.train.epochs), per_epoch, batch_size, mesh.devices.size,
                 "" if mesh.devices.size == 1 else "s")
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
    if is_main:
        log.info("evaluating on %d test images ...", images.shape[0])
    if licence is not None:
        report = evaluate_protection(model, params, licence, images, labels,
                                     random_licences=int(config.eval.random_licences),
                                     seed=int(config.eval.seed),
                                     near_per_class=int(config.eval.near_per_class),
                                     batch_size=int(config.eval.batch_size),
                                     screen_images=int(config.eval.screen_images),
                                     confirm_top=int(config.eval.confirm_top),
                                     exhaustive=bool(config.eval.exhaustive),
                                     trained_near=near)
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


def _define_flags(parser: Any) -> None:
    """The flags of `python -m isnn_jax.train` besides --config (isnn_jax.cli adds that one)."""
    parser.add_argument("--workdir", required=True,
                        help="directory for checkpoints, metrics and metadata (resumed if it "
                             "holds a checkpoint)")
    parser.add_argument("--licence", help="an existing licence file (JSON, mode 0600)")
    parser.add_argument("--issue_licence", metavar="NEW_FILE",
                        help="issue a new licence into this new file (outside the workdir)")


def _run(args: Any, config: ml_collections.ConfigDict) -> str:
    """Resolve the licence, train and evaluate; the summary lines to print."""
    from isnn_jax.cli import resolve_licence

    workdir = Path(args.workdir)
    licence = resolve_licence(config, workdir, args.licence, args.issue_licence)
    report = train_and_evaluate(config, workdir, licence)
    if report.get("stopped_early"):
        return f"stopped at step {report['step']} as asked; rerun the same command to resume"
    if "legal_accuracy" in report:
        summary = format_report(report)
    else:
        summary = f"unprotected baseline accuracy {report['clean_accuracy']:.2%}"
    return f"{summary}\nworkdir: {workdir}  (evaluation: {workdir / 'final_evaluation.json'})"


def main(argv: list[str] | None = None) -> int:
    """Command line: train and evaluate; exit 0 done, 2 bad input, 75 preempted (isnn_jax.cli)."""
    from isnn_jax.cli import training_main

    return training_main(argv, prog="python -m isnn_jax.train", description=__doc__,
                         add_arguments=_define_flags, run=_run)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy, so that every error class is the one
    # isnn_jax.train defines (the shared error mapping knows those).
    from isnn_jax.train import main as _main

    sys.exit(_main())
