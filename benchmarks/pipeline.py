"""Images/s and peak host memory of each input pipeline, against what the protected step consumes.

    PYTHONPATH=. python benchmarks/pipeline.py                 # Fashion-MNIST and 10x synthetic
    PYTHONPATH=. python benchmarks/pipeline.py --quick         # tiny sizes: checks the benchmark
    PYTHONPATH=. python benchmarks/pipeline.py --data_dir /fast/disk/tfds --workers 0,4

For each dataset and each path (`memory`; `streaming` with every `--workers` count; `device`) a
fresh subprocess builds the train input as the trainer does (`load_streams`, `open_streams`,
`DeviceFeed`), then times `--steps` batches of `--batch` examples after `--warmup` batches,
each placed as the step takes it (a global array on the device) and waited for. It reports
the images/s delivered, the seconds to set up (reading and decoding a split into memory, or
opening record files), and peak resident memory from Linux's `/proc`: the process's peak,
reset after its imports (whose transient high-water mark would otherwise hide the data), and
its resident set at that point; for grain's worker processes, the largest worker's peak
(`getrusage` of the children). The step's consumption is the jitted
protected train step of the small CNN (configs/fashion_mnist.py) on 28x28x1 images at the
same batch, timed in this process; headroom = pipeline images/s / step images/s.

Datasets: `fashion_mnist_idx` (60,000 train images, offline) and a synthetic one of the same
size and ten times larger (60,000 and 600,000 random 28x28x1 images, 10 classes), written once as a prepared TFDS
array_record dataset by a local builder under `--data_dir` (default: a folder under the
system's temporary directory, kept for later runs). `--quick`: synthetic 2,000 and 20,000
images, few steps, one worker; prints the table and writes the JSON to the temporary
directory unless `--out` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from records import command_line, write_record  # noqa: E402
# A module of its own, so that grain's worker processes import the builder by name.
from synthetic_tfds import SHAPE, IsnnPipelineBench  # noqa: E402

FASHION_TRAIN = 60_000


def synthetic_records(examples: int, data_dir: str, process_index: int = 0,
                      process_count: int = 1) -> Any:
    """A share of the synthetic train split as the streaming input opens one (`Records`)."""
    from isnn_jax.data.pipeline import DatasetSpec, process_split
    from isnn_jax.data.sources import Records

    builder = IsnnPipelineBench(config=f"n{examples}", data_dir=data_dir,
                                file_format="array_record")
    builder.download_and_prepare()
    source = builder.as_data_source(split=process_split("train", process_index, process_count,
                                                        False))
    spec = DatasetSpec(f"synthetic_{examples}", builder.name, SHAPE, 10,
                       tuple(str(d) for d in range(10)))
    return Records(source, spec, fit=False)


def build_input(case: dict[str, Any]) -> tuple[Any, Any]:
    """(streams, feed-maker) of one case, built as the trainer builds them."""
    from isnn_jax.data.pipeline import records_to_arrays
    from isnn_jax.data.streaming import StreamingStreams, open_streams
    from isnn_jax.data.streams import StreamOrder, TrainStreams, load_streams

    batch, dataset, path = case["batch"], case["dataset"], case["path"]
    if dataset == "fashion_mnist_idx":
        options = dict(global_batch=batch, streams=1, seed=0, process_index=0, process_count=1,
                       data_dir=case["data_dir"])
        if path == "streaming":
            return open_streams(dataset, **options)
        return load_streams(dataset, **options)
    records = synthetic_records(case["examples"], case["data_dir"])
    if path == "streaming":
        return StreamingStreams((records,), StreamOrder((len(records.source),), batch, 0, 0))
    shard = records_to_arrays(records.source, SHAPE)
    return TrainStreams((shard,), batch, 0, 0)


def reset_peak_rss() -> None:
    """Reset this process's peak resident set to its current size (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib(field: str) -> float:
    """This process's current (`VmRSS`) or peak (`VmHWM`) resident set in MiB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark measures memory on Linux")


def child(case: dict[str, Any]) -> dict[str, Any]:
    """One case in this (fresh) process: setup time, images/s, peak memory."""
    import jax

    from isnn_jax.data.feeds import Prefetch
    from isnn_jax.training.feeds import DeviceFeed
    from isnn_jax.training.parallel import DataParallel, DeviceBatch, global_batch, make_mesh

    reset_peak_rss()  # imports leave a high-water mark that would hide the data's growth
    baseline = rss_mib("VmRSS")
    started = time.perf_counter()
    streams = build_input(case)
    mesh = make_mesh(jax.devices()[:1])
    runner = DataParallel("sharded", mesh, lambda axis: (lambda *args: args))
    total = case["warmup"] + case["steps"]
    if case["path"] == "device":
        feed = DeviceFeed(streams, runner)
    elif case["path"] == "streaming":
        feed = streams.feed(0, total, workers=case["workers"], prefetch=case["prefetch"])
    else:
        feed = Prefetch(streams.batch, 0, case["prefetch"])

    def place(batch: Any) -> Any:
        if isinstance(batch, DeviceBatch):
            return runner.assemble(batch)
        return global_batch(batch, mesh)

    setup_s = time.perf_counter() - started
    for step in range(case["warmup"]):
        jax.block_until_ready(place(feed.batch(step)))
    first_s = time.perf_counter() - started
    timed = time.perf_counter()
    for step in range(case["warmup"], total):
        jax.block_until_ready(place(feed.batch(step)))
    seconds = time.perf_counter() - timed
    feed.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**case, "setup_s": setup_s, "ready_s": first_s,
            "images_per_s": case["steps"] * case["batch"] / seconds,
            "ms_per_batch": 1e3 * seconds / case["steps"],
            "baseline_rss_mib": baseline,
            "peak_rss_mib": rss_mib("VmHWM"),
            "worker_peak_rss_mib": children if case["workers"] and case["path"] == "streaming"
            else 0.0,
            "num_examples": streams.num_examples}


def run_child(case: dict[str, Any]) -> dict[str, Any]:
    """`child(case)` in a fresh interpreter (so its peak memory is its own)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(case)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_rate(batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Clean images/s the protected train step of the small CNN consumes (median of repeats)."""
    import jax

    from throughput import build_jax_case

    case = build_jax_case("cnn", batch)
    state = case.run(case.state, 2)  # compile, warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        state = case.run(state, steps)
        times.append((time.perf_counter() - started) / steps)
    step_s = statistics.median(times)
    return {"step_s": step_s, "step_s_all": times, "images_per_s": batch / step_s,
            "device_kind": jax.devices()[0].device_kind}


def print_table(rows: list[dict[str, Any]], step: dict[str, float]) -> None:
    print(f"\nprotected step (small CNN, 28x28x1, batch {rows[0]['batch']}): "
          f"{step['images_per_s']:.0f} images/s ({1e3 * step['step_s']:.1f} ms/step)")
    head = (f"{'dataset':22s} {'examples':>9s} {'path':10s} {'workers':>7s} {'setup s':>8s} "
            f"{'images/s':>10s} {'ms/batch':>8s} {'peak RSS MiB':>12s} {'(+ data)':>9s} "
            f"{'worker MiB':>10s} {'headroom':>8s}")
    print(head)
    for r in rows:
        workers = str(r["workers"]) if r["path"] == "streaming" else "-"
        print(f"{r['dataset_label']:22s} {r['num_examples']:9d} {r['path']:10s} {workers:>7s} "
              f"{r['setup_s']:8.2f} {r['images_per_s']:10.0f} {r['ms_per_batch']:8.2f} "
              f"{r['peak_rss_mib']:12.0f} {r['peak_rss_mib'] - r['baseline_rss_mib']:9.0f} "
              f"{r['worker_peak_rss_mib']:10.0f} {r['headroom']:7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the benchmark)")
    parser.add_argument("--data_dir", default="", help="TFDS data dir (default: a temp folder)")
    parser.add_argument("--fashion_data_dir", default="",
                        help="TFDS data dir of fashion_mnist_idx ('' = TFDS's default)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=0, help="timed batches (0: 300, quick 20)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed batches (0: 10, quick 3)")
    parser.add_argument("--workers", default="", help="streaming worker counts (default 0,2; quick 0,1)")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--paths", default="memory,streaming,device")
    parser.add_argument("--out", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import jax

    quick = args.quick
    data_dir = args.data_dir or str(Path(tempfile.gettempdir()) / "isnn_pipeline_bench_tfds")
    steps = args.steps or (20 if quick else 300)
    warmup = args.warmup or (3 if quick else 10)
    workers = [int(w) for w in (args.workers or ("0,1" if quick else "0,2")).split(",")]
    if quick:
        datasets = [("synthetic", 2_000), ("synthetic", 20_000)]
    else:
        # The synthetic set at both sizes, so that memory growth is compared like for like.
        datasets = [("fashion_mnist_idx", FASHION_TRAIN), ("synthetic", FASHION_TRAIN),
                    ("synthetic", 10 * FASHION_TRAIN)]
    load_before = os.getloadavg()
    for name, examples in datasets:  # prepare once, outside the timed children
        if name == "synthetic":
            started = time.perf_counter()
            synthetic_records(examples, data_dir)
            print(f"synthetic n{examples}: ready under {data_dir} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
    rows = []
    for name, examples in datasets:
        for path in args.paths.split(","):
            for count in (workers if path == "streaming" else [0]):
                case = {"dataset": name, "examples": examples, "path": path, "workers": count,
                        "prefetch": args.prefetch, "batch": args.batch, "steps": steps,
                        "warmup": warmup,
                        "data_dir": (args.fashion_data_dir or None) if name != "synthetic"
                        else data_dir,
                        "dataset_label": name if name != "synthetic" else f"synthetic_{examples}"}
                row = run_child(case)
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("dataset_label", "path", "workers",
                                                      "images_per_s", "peak_rss_mib")}),
                      flush=True)
    step = step_rate(args.batch, 2 if quick else 10, 2 if quick else 5)
    for row in rows:
        row["headroom"] = row["images_per_s"] / step["images_per_s"]
    print_table(rows, step)
    out = args.out or (str(Path(tempfile.gettempdir()) / "pipeline_quick.json") if quick else
                       str(ROOT / "benchmarks" / "results" /
                           f"pipeline_{jax.devices()[0].platform}.json"))
    import grain

    write_record(out, {
        "command": command_line("pipeline.py"), "quick": quick,
        "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
        "host": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "grain": getattr(grain, "__version__", "?"),
        "counting": "images_per_s: training images per second delivered as global device "
                    "arrays; peak_rss_mib: the measuring process's peak resident set "
                    "since the reset after imports (baseline_rss_mib: the resident set then, before any data); worker_peak_rss_mib: "
                    "the largest grain worker's; headroom: images_per_s / the protected step's",
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "step": step, "rows": rows})


if __name__ == "__main__":
    main()
