"""Where the time of one train step goes: a jax.profiler trace summed per XLA op and per kind.

    PYTHONPATH=. python benchmarks/profile_step.py --model resnet18 --batch 8
    PYTHONPATH=. python benchmarks/profile_step.py --model cnn --batch 128 --plain

Runs the jitted step a few times under `jax.profiler.trace`, reads the trace back with
`jax.profiler.ProfileData`, and sums the duration of every executed XLA thunk by HLO
instruction name. Each name is classified from the compiled HLO text (convolution, dot, a
fusion holding a reduce, other fusions, copies/transposes, random bits, ...). Prints the kinds
and the top ops; `--out` writes the summary as JSON. Durations are the wall time of each thunk
on the thread that ran it, so the per-kind total can exceed the step's wall time when the
runtime ran two thunks at once.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402

from records import command_line, write_record  # noqa: E402
from throughput import MODELS, build_jax_case  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S.*?\s([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^\s*%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def classify_instructions(hlo_text: str) -> dict[str, str]:
    """Instruction name -> kind, from compiled HLO text (fusions by the heaviest op inside)."""
    computations: dict[str, list[str]] = {}
    opcode: dict[str, str] = {}
    calls: dict[str, str] = {}
    current = None
    for line in hlo_text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("{")[0]:
            match = _COMPUTATION.match(line)
            current = match.group(1) if match else None
            computations.setdefault(current, [])
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, op = match.groups()
        opcode[name] = op
        if current is not None:
            computations[current].append(op)
        called = _CALLS.search(line)
        if called:
            calls[name] = called.group(1)

    def kind(name: str) -> str:
        op = opcode.get(name, "")
        if op == "fusion":
            inner = set(computations.get(calls.get(name, ""), []))
            for heavy in ("convolution", "dot", "reduce-window", "select-and-scatter", "reduce",
                          "scatter", "gather"):
                if heavy in inner:
                    return f"fusion({heavy})"
            if inner & {"shift-right-logical", "xor"} and "add" in inner:
                return "fusion(random bits)"
            return "fusion(elementwise)"
        if op == "custom-call":
            return "custom-call"
        if op in ("copy", "transpose"):
            return "copy/transpose"
        return op or "other"

    return {name: kind(name) for name in opcode}


def summarise_trace(trace_dir: str, kinds: dict[str, str], steps: int) -> dict:
    """Per-op and per-kind milliseconds per step from the newest trace in `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    data = jax.profiler.ProfileData.from_file(path)
    per_op: collections.Counter = collections.Counter()
    for plane in data.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if event.name in kinds:
                    per_op[event.name] += event.duration_ns / 1e6 / steps
    per_kind: collections.Counter = collections.Counter()
    for name, ms in per_op.items():
        per_kind[kinds[name]] += ms
    return {"per_kind_ms": dict(per_kind.most_common()),
            "top_ops_ms": [{"op": name, "kind": kinds[name], "ms": ms}
                           for name, ms in per_op.most_common(25)],
            "total_thunk_ms": sum(per_op.values())}


def profile(model: str, batch: int, plain: bool, steps: int = 3,
            overrides: dict | None = None) -> dict:
    """Trace `steps` steps of the ISNN (or plain) step and summarise them."""
    case = build_jax_case(model, batch, plain=plain, model_overrides=overrides)
    state = case.run(case.state, 2)  # compile and warm up
    kinds = classify_instructions(case.compiled_text())
    with tempfile.TemporaryDirectory() as trace_dir:
        started = time.perf_counter()
        jax.profiler.start_trace(trace_dir)
        state = case.run(state, steps)
        jax.profiler.stop_trace()
        wall_ms = (time.perf_counter() - started) * 1e3 / steps
        summary = summarise_trace(trace_dir, kinds, steps)
    summary.update(model=model, batch=batch, step="plain" if plain else "isnn",
                   network_images=case.network_images, wall_ms_per_step=wall_ms,
                   loadavg=os.getloadavg())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--plain", action="store_true", help="profile the plain step instead")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="")
    parser.add_argument("--model_override", action="append", default=[],
                        help="FIELD=VALUE of config.model, e.g. conv=im2col (repeatable)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.model_override)
    summary = profile(args.model, args.batch, args.plain, args.steps, overrides)
    print(f"{summary['step']} step, {args.model}, batch {args.batch} "
          f"({summary['network_images']} images through the network): "
          f"{summary['wall_ms_per_step']:.0f} ms/step wall, {summary['total_thunk_ms']:.0f} ms in ops")
    print(f"\n{'kind':28s} {'ms/step':>9s} {'share':>6s}")
    for kind, ms in summary["per_kind_ms"].items():
        print(f"{kind:28s} {ms:9.1f} {ms / summary['total_thunk_ms']:6.1%}")
    print(f"\n{'op':40s} {'kind':24s} {'ms/step':>9s}")
    for row in summary["top_ops_ms"]:
        print(f"{row['op'][:40]:40s} {row['kind']:24s} {row['ms']:9.1f}")
    if args.out:
        summary["command"] = command_line("profile_step.py")
        write_record(args.out, summary)


if __name__ == "__main__":
    main()
