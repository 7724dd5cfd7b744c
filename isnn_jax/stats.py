"""The exact one-sided binomial test that ownership verification and leak tracing report."""

from __future__ import annotations

import math

import numpy as np


def log_binomial_tail(successes: int, trials: int, p: float) -> float:
    """Natural log of P[X >= successes] for X ~ Binomial(trials, p), exact (log-space sum)."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if successes == 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    counts = np.arange(successes, trials + 1, dtype=np.float64)
    log_pmf = (math.lgamma(trials + 1) - np.array([math.lgamma(c + 1) for c in counts])
               - np.array([math.lgamma(trials - c + 1) for c in counts])
               + counts * math.log(p) + (trials - counts) * math.log1p(-p))
    top = float(log_pmf.max())
    return min(0.0, top + math.log(float(np.exp(log_pmf - top).sum())))


def binomial_test(successes: int, trials: int, p: float) -> dict[str, float]:
    """One-sided exact test of 'success rate <= p': the p-value and its log10 (never underflows)."""
    log_p = log_binomial_tail(successes, trials, p)
    return {"p_value": math.exp(log_p), "log10_p_value": log_p / math.log(10)}


def format_p(log10_p: float) -> str:
    """A p-value for people: 0.034, 2.1e-07, or 10^-812.3 below float range."""
    if log10_p > -300:
        value = 10.0 ** log10_p
        return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"
    return f"10^{log10_p:.1f}"


def paired_test(first_correct: np.ndarray, second_correct: np.ndarray) -> dict[str, float]:
    """Exact one-sided sign test (McNemar) that `first` is right more often than `second`.

    Only images where exactly one of the two is right count: under 'equally good' the first
    wins each of them with probability 1/2."""
    wins = int(np.sum(first_correct & ~second_correct))
    losses = int(np.sum(~first_correct & second_correct))
    return {"wins": wins, "losses": losses, **binomial_test(wins, wins + losses, 0.5)}
