"""How the project's heavy programs are compiled: XLA options per backend, passed per `jit`.

On the CPU, XLA (jaxlib 0.10) hands dots, reductions and elementwise chains to YNNPACK library
fusions by default. For this project's steps they are slower than XLA's own code and Eigen's
convolutions: the Fashion-MNIST CNN step 1.6x and the ResNet-18 step 1.6x
(benchmarks/NOTES.md, change 14). The options go to each `jax.jit` rather than into XLA_FLAGS,
so they touch no other JAX program in the process and no environment.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# XLA's CPU options for the project's programs: no YNNPACK library fusions.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The options for `backend` (default: JAX's default backend); none off the CPU."""
    backend = backend or jax.default_backend()
    return dict(CPU_COMPILER_OPTIONS) if backend == "cpu" else {}


def jit(fun: Callable, **kwargs: Any) -> Any:
    """`jax.jit` with `compiler_options()`; call it when the program is built, not at import
    (it asks JAX for the default backend)."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
