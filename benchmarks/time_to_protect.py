"""Wall time to train the protected Fashion-MNIST model to its accuracy targets, JAX vs PyTorch.

    PYTHONPATH=. python benchmarks/time_to_protect.py                       # the real targets
    PYTHONPATH=. python benchmarks/time_to_protect.py --legal_target 0.85 --eval_images 2000 \\
        --max_steps 600                                                     # a reduced budget

Both trainers start from the same weights (the JAX initialisation copied into the PyTorch
reference), see the same batches in the same order (`isnn_jax.data` streams, seed 0), use the
same schedule (`isnn_jax.training.setup.make_optimizer`: Adam, warm-up and cosine decay over the
config's 5 epochs) and the same objective. They run interleaved, `--chunk` steps each in turn,
so a load change on a shared machine hits both alike. Every `--eval_every` steps each model is
evaluated on the first `--eval_images` test images (legal accuracy: the licence's pattern
added; clean accuracy: no pattern); a trainer stops when legal >= the target and clean <=
`--clean_target`. The training wall time excludes these checks. Default targets are the core
ones: legal within 1 point of the 91.02% baseline on the full test set, clean <= 12%.

Then each framework writes the protection report a seller ships (`--report`, on by default):
`isnn_jax.evaluation.screening.evaluate_protection` with the config's `eval` settings for JAX,
the same licences, screen and confirmation on the PyTorch model (`benchmarks/torch_evaluation.py`).
Time to protect = training seconds to the target + the report's seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import fashion_mnist  # noqa: E402
from isnn_jax.base import compilation  # noqa: E402
from isnn_jax.data import load_split, to_float  # noqa: E402
from isnn_jax.data.streams import load_streams  # noqa: E402
from isnn_jax.evaluation.screening import evaluate_protection  # noqa: E402
from isnn_jax.protection.licence import Licence, stack_keys  # noqa: E402
from isnn_jax.models import build_model  # noqa: E402
from isnn_jax.protection.near_keys import training_near_licences  # noqa: E402
from isnn_jax.protection.step import init_state, make_train_step  # noqa: E402
from isnn_jax.training.setup import make_optimizer, protection_of, transform_spec  # noqa: E402
from isnn_jax.protection.transforms import additive_pattern, apply_transform  # noqa: E402
from records import command_line, write_record  # noqa: E402

BASELINE_ACCURACY = 0.9102  # the unprotected model of configs/fashion_mnist.py (docs/results.md)


class JaxTrainer:
    """The project's jitted step, driven like isnn_jax.train drives it (one device)."""

    def __init__(self, config: Any, licence: Licence, total_steps: int) -> None:
        spec = transform_spec(config)
        self.model = build_model(config.model.to_dict(), 10)
        tx = make_optimizer(config, total_steps)
        self.state = init_state(self.model, tx, jax.random.key(int(config.seed)), (28, 28, 1))
        near = training_near_licences(licence, int(config.objective.near_keys), int(config.seed))
        self.keys = {"licence": licence.key(), "near": stack_keys(near)}
        self.near = near
        self.rng = jax.random.key(int(config.seed) + 1)
        step_fn = compilation.jit(make_train_step(self.model, tx, protection_of(config, spec)),
                                  donate_argnums=(0,))
        example = {"image": jnp.zeros((int(config.train.batch_size), 28, 28, 1), jnp.float32),
                   "label": jnp.zeros((int(config.train.batch_size),), jnp.int32)}
        # Compiled ahead of time, so that compilation is not part of the timed training.
        self.step_fn = step_fn.lower(self.state, example, self.rng, self.keys).compile()
        self.spec = spec
        self.logits = compilation.jit(lambda params, x: self.model.apply({"params": params}, x))

    def train(self, batch: dict[str, np.ndarray]) -> None:
        """One step (asynchronous: `sync` waits for it)."""
        self.state, self.metrics = self.step_fn(self.state, jax.device_put(batch), self.rng,
                                                self.keys)

    def sync(self) -> None:
        """Wait for the queued steps."""
        jax.block_until_ready(self.state)

    def accuracy(self, images: np.ndarray, labels: np.ndarray, legal: bool) -> float:
        """Accuracy with (legal) or without (clean) the licence's pattern."""
        hits = 0
        for start in range(0, images.shape[0], 1000):
            x = jnp.asarray(images[start:start + 1000])
            if legal:
                x = apply_transform(self.spec, self.keys["licence"], x)
            predictions = np.asarray(self.logits(self.state.params, x).argmax(-1))
            hits += int((predictions == labels[start:start + 1000]).sum())
        return hits / images.shape[0]

    def report(self, config: Any, licence: Licence, images: np.ndarray,
               labels: np.ndarray) -> dict[str, Any]:
        """The final evaluation `isnn_jax.train` writes, with the config's eval settings."""
        ev = config.eval
        return evaluate_protection(self.model, self.state.params, licence, images, labels,
                                   random_licences=int(ev.random_licences), seed=int(ev.seed),
                                   near_per_class=int(ev.near_per_class),
                                   batch_size=int(ev.batch_size),
                                   screen_images=int(ev.screen_images),
                                   confirm_top=int(ev.confirm_top), trained_near=self.near)


class TorchTrainer:
    """benchmarks/torch_reference.py's step from the same initial weights and schedule."""

    def __init__(self, config: Any, licence: Licence, total_steps: int, init_params: Any,
                 near_keys: jax.Array) -> None:
        import torch

        import torch_reference as ref

        self.torch, self.ref = torch, ref
        spec = transform_spec(config)
        protection = protection_of(config, spec)
        model = ref.build_torch_model(config.model.to_dict(), 10, (28, 28, 1))
        ref.load_flax_params(model, jax.tree.map(np.asarray, init_params))
        self.pattern = np.asarray(additive_pattern(licence.key(), (28, 28, 1), spec))
        self.near = training_near_licences(licence, int(config.objective.near_keys),
                                           int(config.seed))
        near = np.asarray(jax.vmap(lambda k: additive_pattern(k, (28, 28, 1), spec))(near_keys))
        self.step = ref.TorchIsnnStep(model, 1.0, self.pattern, near, spec.epsilon,
                                      protection.wrong_views, protection.weights,
                                      protection.illegal_form, seed=int(config.seed))
        schedule = make_optimizer_schedule(config, total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.step.optimizer,
                                                           lambda step: float(schedule(step)))

    def train(self, batch: dict[str, np.ndarray]) -> None:
        """One step."""
        self.step(self.ref.to_torch_images(batch["image"]),
                  self.torch.from_numpy(batch["label"]).long())
        self.scheduler.step()

    def sync(self) -> None:
        """Torch on the CPU is synchronous."""

    def accuracy(self, images: np.ndarray, labels: np.ndarray, legal: bool) -> float:
        """Accuracy with (legal) or without (clean) the licence's pattern."""
        x = np.clip(images + self.pattern, 0.0, 1.0) if legal else images
        hits = 0
        with self.torch.no_grad():
            for start in range(0, x.shape[0], 1000):
                logits = self.step.model(self.ref.to_torch_images(x[start:start + 1000]))
                hits += int((logits.argmax(-1).numpy() == labels[start:start + 1000]).sum())
        return hits / images.shape[0]

    def report(self, config: Any, licence: Licence, images: np.ndarray,
               labels: np.ndarray) -> dict[str, Any]:
        """The same report, computed on the PyTorch model (`benchmarks/torch_evaluation.py`)."""
        import torch_evaluation

        self.step.model.eval()
        ev = config.eval
        return torch_evaluation.protection_report(
            self.step.model, licence, images, labels, random_licences=int(ev.random_licences),
            seed=int(ev.seed), near_per_class=int(ev.near_per_class),
            screen_images=int(ev.screen_images), confirm_top=int(ev.confirm_top),
            trained_near=self.near)


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The figures both frameworks' reports state, named alike."""
    if "wrong_key_max" in report:  # benchmarks/torch_evaluation.py
        return {k: report[k] for k in ("legal_accuracy", "clean_accuracy", "wrong_key_max",
                                       "wrong_key_rank_attack", "near_key_held_out_max",
                                       "near_key_trained_max", "licences", "screen_images",
                                       "licences_confirmed", "seconds")}
    ev = report["evaluation"]
    return {"legal_accuracy": report["legal_accuracy"], "clean_accuracy": report["clean_accuracy"],
            "wrong_key_max": report["wrong_key"]["max"],
            "wrong_key_rank_attack": report["wrong_key_rank_attack"],
            "near_key_held_out_max": report.get("near_key_held_out_max"),
            "near_key_trained_max": report.get("near_key_trained_max"),
            "licences": ev["licences"], "screen_images": ev["screen_images"],
            "licences_confirmed": ev["licences_confirmed"], "seconds": report["seconds"]}


def make_optimizer_schedule(config: Any, total_steps: int) -> Any:
    """The learning-rate schedule `isnn_jax.training.setup.make_optimizer` uses, as a function of step."""
    import optax

    train = config.train
    warmup = min(int(train.warmup_steps), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, float(train.learning_rate), warmup,
                                              max(total_steps, warmup + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legal_target", type=float, default=BASELINE_ACCURACY - 0.01)
    parser.add_argument("--clean_target", type=float, default=0.12)
    parser.add_argument("--eval_images", type=int, default=10_000)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=25, help="steps per turn of each trainer")
    parser.add_argument("--max_steps", type=int, default=0, help="0: the config's 5 epochs")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                        help="write each framework's final protection report and time it")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "time_to_protect.json"))
    args = parser.parse_args()

    config = fashion_mnist.get_config()
    streams = load_streams("fashion_mnist_idx", global_batch=int(config.train.batch_size),
                           streams=1, seed=int(config.seed), process_index=0, process_count=1)
    total_steps = int(config.train.epochs) * streams.steps_per_epoch
    max_steps = args.max_steps or total_steps
    test_images, test_labels = load_split("fashion_mnist_idx", "test")
    all_images, all_labels = to_float(test_images), test_labels.astype(np.int64)
    images, labels = all_images[:args.eval_images], all_labels[:args.eval_images]
    licence = Licence(bytes(range(32)), config.licence.copyright, transform_spec(config))

    jax_trainer = JaxTrainer(config, licence, total_steps)
    trainers: dict[str, Any] = {}
    if "jax" in args.frameworks:
        trainers["jax"] = jax_trainer
    if "torch" in args.frameworks:
        trainers["torch"] = TorchTrainer(config, licence, total_steps, jax_trainer.state.params,
                                         jax_trainer.keys["near"])
    record: dict[str, Any] = {name: {"train_seconds": 0.0, "step": 0, "evaluations": [],
                                     "reached": None} for name in trainers}
    active = set(trainers)
    started_all = time.perf_counter()
    while active:
        for name in sorted(active):
            trainer, entry = trainers[name], record[name]
            started = time.perf_counter()
            for _ in range(args.chunk):
                trainer.train(streams.batch(entry["step"]))
                entry["step"] += 1
                if entry["step"] % args.eval_every == 0 or entry["step"] >= max_steps:
                    break
            trainer.sync()
            entry["train_seconds"] += time.perf_counter() - started
            if entry["step"] % args.eval_every == 0 or entry["step"] >= max_steps:
                legal = trainer.accuracy(images, labels, legal=True)
                clean = trainer.accuracy(images, labels, legal=False)
                entry["evaluations"].append({"step": entry["step"], "legal": legal, "clean": clean,
                                             "train_seconds": entry["train_seconds"]})
                print(f"{name:5s} step {entry['step']:5d}  {entry['train_seconds']:7.1f} s  "
                      f"legal {legal:.2%}  clean {clean:.2%}  load {os.getloadavg()[0]:.1f}",
                      flush=True)
                if legal >= args.legal_target and clean <= args.clean_target:
                    entry["reached"] = {"step": entry["step"], "train_seconds": entry["train_seconds"]}
                    active.discard(name)
                elif entry["step"] >= max_steps:
                    active.discard(name)

    if args.report:  # each framework alone on the machine, one after the other
        for name, trainer in trainers.items():
            report = trainer.report(config, licence, all_images, all_labels)
            record[name]["report"] = summary_of(report)
            print(f"{name:5s} report: {record[name]['report']}", flush=True)

    print(f"\ntarget: legal >= {args.legal_target:.2%} and clean <= {args.clean_target:.2%} on "
          f"{images.shape[0]} test images (evaluated every {args.eval_every} steps)")
    print(f"{'framework':9s} {'reached':>8s} {'step':>6s} {'train s':>8s} {'s/step':>7s} "
          f"{'report s':>8s} {'total s':>8s} {'report/train':>12s}")
    for name, entry in record.items():
        reached = entry["reached"]
        seconds = reached["train_seconds"] if reached else entry["train_seconds"]
        report_s = entry.get("report", {}).get("seconds", 0.0)
        entry["time_to_protect_seconds"] = seconds + report_s
        entry["report_share_of_training"] = report_s / seconds
        entry["report_share_of_full_schedule"] = report_s / (
            entry["train_seconds"] / max(entry["step"], 1) * total_steps)
        print(f"{name:9s} {'yes' if reached else 'no':>8s} {entry['step']:6d} {seconds:8.1f} "
              f"{entry['train_seconds'] / max(entry['step'], 1):7.3f} {report_s:8.1f} "
              f"{seconds + report_s:8.1f} {entry['report_share_of_training']:12.1%}")
    if {"jax", "torch"} <= set(record) and all(record[n]["reached"] for n in ("jax", "torch")):
        ratio = record["torch"]["reached"]["train_seconds"] / record["jax"]["reached"]["train_seconds"]
        record["torch_over_jax_time_to_target"] = ratio
        print(f"PyTorch takes {ratio:.2f}x the JAX training time to the target")
        if args.report:
            ratio = (record["torch"]["time_to_protect_seconds"]
                     / record["jax"]["time_to_protect_seconds"])
            record["torch_over_jax_time_to_protect"] = ratio
            print(f"PyTorch takes {ratio:.2f}x the JAX time to a protected, evaluated model")
    record.update(command=command_line("time_to_protect.py"),
                  targets={"legal": args.legal_target, "clean": args.clean_target,
                           "eval_images": int(images.shape[0]), "eval_every": args.eval_every},
                  total_schedule_steps=total_steps, max_steps=max_steps,
                  wall_seconds_all=time.perf_counter() - started_all,
                  loadavg_end=os.getloadavg(), cpu_count=os.cpu_count())
    write_record(args.out, record)


if __name__ == "__main__":
    main()
