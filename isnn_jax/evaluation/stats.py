"""Exact tests that verification and tracing report: the one-sided binomial test, the sign test,
Clopper-Pearson bounds, and the sequential probability ratio test of black-box tracing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import betaincinv


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


def binomial_upper_bound(successes: int, trials: int, level: float) -> float:
    """Exact (Clopper-Pearson) one-sided upper confidence bound on a success rate.

    The true rate exceeds the bound with probability at most `level`; 1.0 when nothing was seen."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if trials == 0 or successes == trials:
        return 1.0
    return float(betaincinv(successes + 1, trials - successes, 1.0 - level))


@dataclasses.dataclass
class SequentialBinomialTest:
    """Wald's sequential probability ratio test of 'rate <= p0' against 'rate >= p1'.

    The thresholds are Ville's (1/alpha and beta on the likelihood ratio), not Wald's
    approximations, so the error bounds are exact and hold at any stopping time: when the rate
    is at most p0 the test ends 'above' with probability at most alpha, and when it is at least
    p1 it ends 'below' with probability at most beta, however long it runs.
    """

    p0: float
    p1: float
    alpha: float
    beta: float
    successes: int = 0
    failures: int = 0
    max_log_ratio: float = 0.0
    decision: str | None = None  # "above" (rate > p0), "below" (rate < p1), None: undecided

    def __post_init__(self) -> None:
        if not 0.0 < self.p0 < self.p1 < 1.0:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0}, p1={self.p1}")
        for name in ("alpha", "beta"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")

    @property
    def trials(self) -> int:
        """Outcomes the test has used."""
        return self.successes + self.failures

    def _log_ratio(self, successes: int, failures: int) -> float:
        return (successes * math.log(self.p1 / self.p0)
                - failures * math.log((1.0 - self.p0) / (1.0 - self.p1)))

    @property
    def log_ratio(self) -> float:
        """Natural log of the likelihood ratio of p1 against p0 after the outcomes used."""
        return self._log_ratio(self.successes, self.failures)

    def _above(self, successes: int, failures: int) -> bool:
        return self._log_ratio(successes, failures) >= -math.log(self.alpha)

    def _below(self, successes: int, failures: int) -> bool:
        return self._log_ratio(successes, failures) <= math.log(self.beta)

    def steps_to_decision(self) -> int:
        """The fewest further outcomes after which the test could stop (0 once decided).

        Sending exactly this many at once wastes nothing: no boundary is crossed earlier."""
        if self.decision is not None:
            return 0
        up = math.log(self.p1 / self.p0)
        down = math.log((1.0 - self.p0) / (1.0 - self.p1))
        best = []
        for reach, slope, crossed in ((-math.log(self.alpha) - self.log_ratio, up,
                                       lambda m: self._above(self.successes + m, self.failures)),
                                      (self.log_ratio - math.log(self.beta), down,
                                       lambda m: self._below(self.successes, self.failures + m))):
            steps = max(1, math.ceil(reach / slope) - 2)
            while not crossed(steps):  # the same arithmetic as `observe`, so exact
                steps += 1
            best.append(steps)
        return min(best)

    def observe(self, outcomes: np.ndarray) -> int:
        """Take outcomes (True: success) in order until the test decides; returns how many used."""
        used = 0
        for outcome in np.asarray(outcomes, bool).ravel():
            if self.decision is not None:
                break
            used += 1
            if outcome:
                self.successes += 1
            else:
                self.failures += 1
            self.max_log_ratio = max(self.max_log_ratio, self.log_ratio)
            if self._above(self.successes, self.failures):
                self.decision = "above"
            elif self._below(self.successes, self.failures):
                self.decision = "below"
        return used

    @property
    def log10_p_value(self) -> float:
        """log10 of the anytime-valid p-value of 'rate <= p0' (Ville: 1 / the largest ratio)."""
        return min(0.0, -self.max_log_ratio / math.log(10))

    @property
    def indifference_rate(self) -> float:
        """The rate at which the log ratio does not drift: above it the test tends to 'above'."""
        up = math.log(self.p1 / self.p0)
        down = math.log((1.0 - self.p0) / (1.0 - self.p1))
        return down / (up + down)
