"""Images/s of the ISNN train step against a plain step and the PyTorch reference, side by side.

    PYTHONPATH=. python benchmarks/throughput.py                                  # CPU defaults
    PYTHONPATH=. python benchmarks/throughput.py --models cnn --batches 128 --repeats 7
    PYTHONPATH=. python benchmarks/throughput.py --models cnn,resnet18 --batches 256,1024 \\
        --torch_formats channels_last --out benchmarks/results/throughput_gpu.json   # accelerators

For every model and batch size, in one process and interleaved (repeat r runs every case once
before repeat r+1 starts, so a load change on a shared machine hits all cases alike):

* `jax_isnn`: the jitted `isnn_jax.protection.step` train step (state donated, the batch resident on the
  device) on B clean images; it builds V = 1 legal + 1 clean + wrong_views + 1 near views of
  each, so V*B images go through the network per step;
* `jax_plain`: the same jitted step with `protect=False` (cross-entropy, Adam) on V*B distinct
  images, i.e. the same number of images through the network;
* `torch_isnn[format]`: `benchmarks/torch_reference.py`'s step on the same B images (views built
  by torch on the fly, the same fused forward, loss, backward and Adam) per activation layout.

Images/s count clean training images (B per ISNN step); "network images/s" count V*B for both
the ISNN and the plain step. FLOPs per step come from XLA's cost analysis of the lowered step;
the achieved FLOP/s is divided by a jitted float32 matmul (2048^3 on a CPU, 8192^3 on an
accelerator) measured in the same run. The
input pipeline (`TrainStreams.batch` plus the host-to-device copy) is timed against the ISNN
step's consumption of clean images. Prints a table; writes JSON with the command and load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import cifar10_resnet18, fashion_mnist  # noqa: E402
from isnn_jax.base import compilation  # noqa: E402
from isnn_jax.data.streams import TrainStreams  # noqa: E402
from isnn_jax.protection.licence import Licence, random_keys  # noqa: E402
from isnn_jax.models import build_model  # noqa: E402
from isnn_jax.protection.step import Protection, init_state, make_train_step  # noqa: E402
from isnn_jax.training.setup import protection_of, transform_spec  # noqa: E402
from isnn_jax.protection.transforms import additive_pattern  # noqa: E402
from records import command_line, write_record  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: the project config it comes from and its input shape."""

    get_config: Callable[[], Any]
    image_shape: tuple[int, int, int]
    dataset: str  # "fashion_mnist_idx" (real data) or "synthetic"


MODELS = {
    "cnn": ModelSpec(fashion_mnist.get_config, (28, 28, 1), "fashion_mnist_idx"),
    "resnet18": ModelSpec(cifar10_resnet18.get_config, (32, 32, 3), "synthetic"),
}
LEARNING_RATE = 2e-3
# The step as it compiled before change 14 of benchmarks/NOTES.md (XLA's default CPU options,
# im2col convolutions for the small CNN): `--before` runs it beside the current one.
BEFORE_CONV = {"cnn": "im2col", "resnet18": "xla"}


def _config(model: str, overrides: dict[str, Any] | None = None) -> Any:
    config = MODELS[model].get_config()
    for name, value in (overrides or {}).items():
        config.model[name] = value
    return config


def _keys(config: Any) -> dict[str, jax.Array]:
    """A fixed licence key and `near_keys` near keys (random keys: HMAC makes them so)."""
    return {"licence": Licence(bytes(range(32)), config.licence.copyright).key(),
            "near": random_keys(3, int(config.objective.near_keys))}


def views_per_image(protection: Protection, has_near: bool) -> int:
    """Images through the network per clean image in the ISNN step."""
    weights = protection.weights
    return (1 + (weights.get("clean", 0) > 0) + protection.wrong_views
            + (has_near and weights.get("near", 0) > 0))


def _images(count: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((count, *shape), dtype=np.float32),
            rng.integers(0, 10, count).astype(np.int32))


@dataclasses.dataclass
class JaxCase:
    """A compiled JAX step with its state, batch and static arguments."""

    name: str
    step: Any
    state: Any
    batch: dict[str, jax.Array]
    rng: jax.Array
    keys: dict[str, jax.Array]
    clean_images: int
    network_images: int

    def run(self, state: Any, steps: int) -> Any:
        """`steps` steps from `state`, blocking on the last; returns the new state."""
        metrics = None
        for _ in range(steps):
            state, metrics = self.step(state, self.batch, self.rng, self.keys)
        jax.block_until_ready((state, metrics))
        return state

    def compiled(self) -> Any:
        """The compiled executable (cost analysis, HLO text)."""
        return self.step.lower(self.state, self.batch, self.rng, self.keys).compile()

    def compiled_text(self) -> str:
        """Optimised HLO of the step."""
        return self.compiled().as_text()

    def flops(self) -> float:
        """XLA's count of floating-point operations per step, from the lowered (unoptimised)
        program: on GPU the compiled program's convolutions are library calls that the
        compiled cost analysis does not count (it reported 18 of about 3,700 GFLOP per
        ResNet-18 step on an H200), while the lowered count is the same on every platform."""
        cost = self.step.lower(self.state, self.batch, self.rng, self.keys).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))


def build_jax_case(model: str, batch: int, plain: bool = False,
                   model_overrides: dict[str, Any] | None = None,
                   xla_defaults: bool = False) -> JaxCase:
    """The ISNN step (or, with `plain`, the plain step on as many network images) of `model`,
    compiled as the project compiles it (`isnn_jax.base.compilation`) or, with `xla_defaults`,
    with XLA's own default options."""
    config = _config(model, model_overrides)
    spec = MODELS[model]
    net = build_model(config.model.to_dict(), 10)
    tx = optax.adam(LEARNING_RATE)
    protection = protection_of(config, transform_spec(config))
    keys = _keys(config)
    views = views_per_image(protection, keys["near"].shape[0] > 0)
    if plain:
        protection = dataclasses.replace(protection, protect=False)
        count, keys = batch * views, {}
    else:
        count = batch
    images, labels = _images(count, spec.image_shape, seed=0)
    state = init_state(net, tx, jax.random.key(0), spec.image_shape)
    jit = jax.jit if xla_defaults else compilation.jit
    step = jit(make_train_step(net, tx, protection), donate_argnums=(0,))
    name = "jax_plain" if plain else "jax_isnn_before" if xla_defaults else "jax_isnn"
    return JaxCase(name, step, state,
                   {"image": jnp.asarray(images), "label": jnp.asarray(labels)},
                   jax.random.key(1), keys, batch if not plain else count, batch * views)


@dataclasses.dataclass
class TorchCase:
    """The PyTorch reference ISNN step on fixed NCHW images."""

    name: str
    step: Any
    images: Any
    labels: Any
    clean_images: int
    network_images: int
    state: Any = None

    def run(self, state: Any, steps: int) -> Any:
        """`steps` steps (torch is eager and synchronous on the CPU)."""
        for _ in range(steps):
            metrics = self.step(self.images, self.labels)
        float(metrics["loss"])
        return state


def build_torch_case(model: str, batch: int, memory_format: str,
                     device: str = "cpu") -> TorchCase:
    """`benchmarks/torch_reference.py`'s ISNN step with the same model, patterns and batch."""
    import torch

    import torch_reference as ref

    config = _config(model)
    spec = MODELS[model]
    protection = protection_of(config, transform_spec(config))
    keys = _keys(config)
    pattern = np.asarray(additive_pattern(keys["licence"], spec.image_shape, protection.spec))
    near = np.asarray(jax.vmap(lambda k: additive_pattern(k, spec.image_shape, protection.spec))(
        keys["near"]))
    net = ref.build_torch_model(config.model.to_dict(), 10, spec.image_shape)
    fmt = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[memory_format]
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # what a user tuning a fixed-shape step sets
    step = ref.TorchIsnnStep(net.to(device), LEARNING_RATE, pattern, near, protection.spec.epsilon,
                             protection.wrong_views, protection.weights, protection.illegal_form,
                             memory_format=fmt)
    step.licence_pattern = step.licence_pattern.to(device)
    step.near_patterns = step.near_patterns.to(device)
    if device != "cpu":
        step.generator = torch.Generator(device=device).manual_seed(0)
    images, labels = _images(batch, spec.image_shape, seed=0)
    views = views_per_image(protection, near.shape[0] > 0)
    return TorchCase(f"torch_isnn[{memory_format}]", step,
                     ref.to_torch_images(images).to(device),
                     torch.from_numpy(labels).long().to(device), batch, batch * views)


def matmul_rate(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a jitted float32 (and bfloat16) size^3 matmul, median of `repeats`."""
    rates = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        a = jnp.asarray(np.random.default_rng(0).random((size, size), dtype=np.float32), dtype)
        matmul = jax.jit(lambda x, y: x @ y)
        matmul(a, a).block_until_ready()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            matmul(a, a).block_until_ready()
            times.append(time.perf_counter() - started)
        rates[f"jax_{jnp.dtype(dtype).name}_gflops"] = 2 * size**3 / statistics.median(times) / 1e9
    return rates


def pipeline_rate(model: str, batch: int, steps: int = 20) -> dict[str, float]:
    """Clean images/s of the input pipeline: `TrainStreams.batch(step)` plus the device copy.

    The CNN reads the real Fashion-MNIST train split; ResNet-18 draws from 50,000 synthetic
    uint8 CIFAR-shaped images held the same way (the pipeline does the same work per image).
    """
    spec = MODELS[model]
    streams, source = None, "synthetic"
    if spec.dataset == "fashion_mnist_idx":
        from isnn_jax.data.streams import load_streams

        try:
            streams = load_streams(spec.dataset, global_batch=batch, streams=1, seed=0,
                                   process_index=0, process_count=1)
            source = spec.dataset
        except FileNotFoundError:  # the IDX files are not on this machine: same work, synthetic
            streams = None
    if streams is None:
        rng = np.random.default_rng(0)
        shard = (rng.integers(0, 256, (50_000, *spec.image_shape), dtype=np.uint8),
                 rng.integers(0, 10, 50_000).astype(np.int64))
        streams = TrainStreams((shard,), batch, 0, 0)
    jax.block_until_ready(jax.device_put(streams.batch(0)))
    started = time.perf_counter()
    for step in range(steps):
        jax.block_until_ready(jax.device_put(streams.batch(step)))
    seconds = (time.perf_counter() - started) / steps
    return {"pipeline_images_per_s": batch / seconds, "pipeline_ms_per_batch": seconds * 1e3,
            "pipeline_source": source}


def measure(model: str, batch: int, repeats: int, steps: int,
            torch_formats: list[str], torch_device: str, dtype: str = "float32",
            before: bool = False) -> dict[str, Any]:
    """Every case of one (model, batch), interleaved; medians of seconds per step."""
    overrides = {"dtype": dtype}
    cases: list[Any] = [build_jax_case(model, batch, model_overrides=overrides),
                        build_jax_case(model, batch, plain=True, model_overrides=overrides)]
    if before:
        cases.append(build_jax_case(model, batch, xla_defaults=True,
                                    model_overrides={**overrides, "conv": BEFORE_CONV[model]}))
    cases += [build_torch_case(model, batch, fmt, torch_device) for fmt in torch_formats]
    flops = {case.name: case.flops() for case in cases[:2]}
    states = {case.name: case.run(case.state, 2) for case in cases}  # compile, warm up
    times: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(repeats):
        for case in cases:
            started = time.perf_counter()
            states[case.name] = case.run(states[case.name], steps)
            times[case.name].append((time.perf_counter() - started) / steps)
    rows = {}
    for case in cases:
        step_s = statistics.median(times[case.name])
        rows[case.name] = {"step_s": step_s, "step_s_all": times[case.name],
                           "clean_images": case.clean_images,
                           "network_images": case.network_images,
                           "images_per_s": case.clean_images / step_s,
                           "network_images_per_s": case.network_images / step_s}
    rows["jax_isnn"]["flops_per_step"] = flops["jax_isnn"]
    rows["jax_plain"]["flops_per_step"] = flops["jax_plain"]
    return rows


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over repeats of numerator[r] / denominator[r]: each pair ran back to back, so a
    load change between repeats cancels (more robust than a ratio of medians on a shared host)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def summarise(model: str, batch: int, rows: dict[str, Any], matmul: dict[str, float],
              pipeline: dict[str, float]) -> dict[str, Any]:
    """The ratios the performance targets are stated in."""
    isnn, plain = rows["jax_isnn"], rows["jax_plain"]
    torch_rows = {name: row for name, row in rows.items() if name.startswith("torch_isnn")}
    best_torch = min(torch_rows, key=lambda name: torch_rows[name]["step_s"]) if torch_rows else None
    achieved = isnn["flops_per_step"] / isnn["step_s"] / 1e9
    summary = {
        "model": model, "batch": batch, "views": isnn["network_images"] // batch,
        "jax_isnn_images_per_s": isnn["images_per_s"],
        "jax_plain_network_images_per_s": plain["network_images_per_s"],
        "isnn_over_plain_step_time": isnn["step_s"] / plain["step_s"],
        "isnn_over_plain_paired": paired_ratio(isnn["step_s_all"], plain["step_s_all"]),
        "isnn_gflop_per_step": isnn["flops_per_step"] / 1e9,
        "plain_gflop_per_step": plain["flops_per_step"] / 1e9,
        "achieved_gflops": achieved,
        "fraction_of_matmul": achieved / matmul["jax_float32_gflops"],
        "pipeline_images_per_s": pipeline["pipeline_images_per_s"],
        "pipeline_headroom": pipeline["pipeline_images_per_s"] / isnn["images_per_s"],
    }
    if "jax_isnn_before" in rows:
        before = rows["jax_isnn_before"]
        summary.update(jax_before_images_per_s=before["images_per_s"],
                       speedup_over_before=before["step_s"] / isnn["step_s"],
                       speedup_over_before_paired=paired_ratio(before["step_s_all"],
                                                               isnn["step_s_all"]))
        if best_torch:
            summary.update(jax_before_over_torch=torch_rows[best_torch]["step_s"] / before["step_s"],
                           jax_before_over_torch_paired=paired_ratio(
                               torch_rows[best_torch]["step_s_all"], before["step_s_all"]))
    if best_torch:
        summary.update(torch_reference=best_torch,
                       torch_isnn_images_per_s=torch_rows[best_torch]["images_per_s"],
                       jax_over_torch_speed=torch_rows[best_torch]["step_s"] / isnn["step_s"],
                       jax_over_torch_paired=paired_ratio(torch_rows[best_torch]["step_s_all"],
                                                          isnn["step_s_all"]))
    return summary


def print_table(summaries: list[dict[str, Any]], matmul: dict[str, float],
                size: int = 2048) -> None:
    """One line per (model, batch)."""
    print(f"\nmatmul {size}^3: float32 {matmul['jax_float32_gflops']:.0f} GFLOP/s, "
          f"bfloat16 {matmul['jax_bfloat16_gflops']:.0f} GFLOP/s (JAX, this run)")
    head = (f"{'model':9s} {'batch':>5s} {'views':>5s} {'JAX img/s':>9s} {'torch img/s':>11s} "
            f"{'JAX/torch':>9s} {'paired':>6s} {'ISNN/plain':>10s} {'paired':>6s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} "
            f"{'of matmul':>9s} {'pipe img/s':>10s} {'headroom':>8s}")
    print(head)
    for s in summaries:
        print(f"{s['model']:9s} {s['batch']:5d} {s['views']:5d} {s['jax_isnn_images_per_s']:9.1f} "
              f"{s.get('torch_isnn_images_per_s', float('nan')):11.1f} "
              f"{s.get('jax_over_torch_speed', float('nan')):9.2f} "
              f"{s.get('jax_over_torch_paired', float('nan')):6.2f} "
              f"{s['isnn_over_plain_step_time']:10.3f} {s['isnn_over_plain_paired']:6.3f} "
              f"{s['isnn_gflop_per_step']:10.1f} "
              f"{s['achieved_gflops']:8.1f} {s['fraction_of_matmul']:9.1%} "
              f"{s['pipeline_images_per_s']:10.0f} {s['pipeline_headroom']:7.0f}x")
    befores = [s for s in summaries if "jax_before_images_per_s" in s]
    if befores:
        print(f"\n{'model':9s} {'batch':>5s} {'before img/s':>12s} {'before/torch':>12s} "
              f"{'paired':>6s} {'now img/s':>9s} {'now/torch':>9s} {'paired':>6s} "
              f"{'now/before':>10s} {'paired':>6s}")
        for s in befores:
            print(f"{s['model']:9s} {s['batch']:5d} {s['jax_before_images_per_s']:12.1f} "
                  f"{s.get('jax_before_over_torch', float('nan')):12.2f} "
                  f"{s.get('jax_before_over_torch_paired', float('nan')):6.2f} "
                  f"{s['jax_isnn_images_per_s']:9.1f} "
                  f"{s.get('jax_over_torch_speed', float('nan')):9.2f} "
                  f"{s.get('jax_over_torch_paired', float('nan')):6.2f} "
                  f"{s['speedup_over_before']:10.2f} {s['speedup_over_before_paired']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--batches", default="", help="comma list; default: cnn 128, resnet18 16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0, help="steps per repeat (0: by model)")
    parser.add_argument("--torch_formats", default="channels_last,contiguous",
                        help="activation layouts of the PyTorch reference ('' to skip torch)")
    parser.add_argument("--torch_device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="JAX compute dtype (the PyTorch reference stays float32)")
    parser.add_argument("--before", action="store_true",
                        help="also run the step as compiled before change 14 (benchmarks/NOTES.md)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput_cpu.json"))
    parser.add_argument("--from_json", default="", help="reprint the table of a saved run")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print_table([summarise(r["model"], r["batch"], r["rows"], saved["matmul_before"], r["pipeline"])
                     for r in saved["results"]], saved["matmul_before"], saved.get("matmul_size", 2048))
        print(f"command: {saved['command']}")
        return
    torch_formats = [f for f in args.torch_formats.split(",") if f]
    if torch_formats:
        import torch

        torch_threads = torch.get_num_threads()
    load_before = os.getloadavg()
    # 2048^3 is launch-bound on a datacenter GPU (it ran below the ResNet-18 step's own rate).
    matmul_size = 2048 if jax.devices()[0].platform == "cpu" else 8192
    matmul = matmul_rate(matmul_size)
    results, summaries = [], []
    for model in args.models.split(","):
        default_batch = {"cnn": "128", "resnet18": "16"}[model]
        for batch in (int(b) for b in (args.batches or default_batch).split(",")):
            steps = args.steps or (3 if model == "cnn" else 1)
            rows = measure(model, batch, args.repeats, steps, torch_formats, args.torch_device,
                           args.dtype, args.before)
            pipeline = pipeline_rate(model, batch)
            summary = summarise(model, batch, rows, matmul, pipeline)
            summaries.append(summary)
            results.append({"model": model, "batch": batch, "dtype": args.dtype,
                            "steps_per_repeat": steps,
                            "rows": rows, "pipeline": pipeline, "summary": summary,
                            "loadavg_after": os.getloadavg()})
            print(json.dumps(summary), flush=True)
    matmul_after = matmul_rate(matmul_size)
    print_table(summaries, matmul, matmul_size)
    print(f"matmul after the run: float32 {matmul_after['jax_float32_gflops']:.0f} GFLOP/s; "
          f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    record = {"command": command_line("throughput.py"), "platform": jax.devices()[0].platform,
              "device_kind": jax.devices()[0].device_kind,
              "host": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "jax": jax.__version__, "torch_threads": torch_threads if torch_formats else None,
              "counting": "images_per_s: clean training images (B per step); network_images: "
                          "B * views for the ISNN step, and the plain step runs on that many",
              "matmul_size": matmul_size, "matmul_before": matmul, "matmul_after": matmul_after,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "results": results}
    write_record(args.out, record)


if __name__ == "__main__":
    main()
