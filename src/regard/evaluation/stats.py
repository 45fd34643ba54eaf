"""Proportions with their counts and 95 % Wilson score intervals, and ratios between them.

Why Wilson: the error rates Regard publishes are small proportions (often 0 of a few hundred), where
the normal ("Wald") interval collapses to [0, 0] and claims a certainty the data does not give.
Wilson's interval stays inside [0, 1] and gives a useful upper bound for zero events
(0 of 100 -> upper 0.037, the "rule of three" made exact). Every figure in a report is a ``Rate``
so it always travels with ``k of n`` and its interval, and a reader can see when a rate rests on
too few trials to mean anything.

Caveat carried into the reports: pairs built from the same images are not independent trials, so
the intervals for pair-based rates (FMR, TAR) are narrower than they should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` events in ``n`` trials; (0, 1) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def fmt_rate(x: float, digits: int = 4) -> str:
    """Fixed point for ordinary rates, scientific below 0.001 so tiny FMRs keep their digits."""
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.{max(digits - 2, 1)}e}"
    return f"{x:.{digits}f}"


@dataclass(frozen=True)
class Rate:
    """``k`` events out of ``n`` trials (a TAR, FMR, recall, ...) with its 95 % interval."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson_interval(self.k, self.n) if self.n else None

    @property
    def measurable(self) -> bool:
        """A ratio can use this rate as a divisor (it has trials and at least one event)."""
        return self.n > 0 and self.k > 0

    def text(self, digits: int = 4) -> str:
        """``0.1237 (12 of 97, 95% CI 0.0707-0.2066)``; zero events: ``0 of 900 (95% CI upper
        0.0043)``; rates below 0.001 in scientific notation (``8.95e-06``)."""
        if self.n == 0:
            return "no trials"
        low, high = self.ci  # type: ignore[misc]
        if self.k == 0:
            return f"0 of {self.n} (95% CI upper {fmt_rate(high, digits)})"
        return (f"{fmt_rate(self.value, digits)} ({self.k} of {self.n}, 95% CI "  # type: ignore[arg-type]
                f"{fmt_rate(low, digits)}-{fmt_rate(high, digits)})")

    def to_dict(self) -> dict[str, Any]:
        ci = self.ci
        return {
            "k": self.k,
            "n": self.n,
            "rate": self.value,
            "ci95_low": None if ci is None else ci[0],
            "ci95_high": None if ci is None else ci[1],
            "text": self.text(),
        }

    def complement(self) -> "Rate":
        """The other outcome of the same trials (TAR <-> FNMR)."""
        return Rate(self.n - self.k, self.n)


def rate(mask: Iterable[bool] | Any, within: Iterable[bool] | Any | None = None) -> Rate:
    """Rate of True in ``mask`` (numpy bool array or iterable), optionally only where ``within``."""
    import numpy as np

    m = np.asarray(mask, dtype=bool)
    if within is not None:
        m = m[np.asarray(within, dtype=bool)]
    return Rate(int(m.sum()), int(m.size))


@dataclass(frozen=True)
class GroupRatio:
    """The largest ratio between groups' rates at one threshold, or why it cannot be given."""

    highest: str | None
    lowest: str | None
    ratio: float | None
    measurable: bool
    note: str
    # Among the groups whose rate is above zero only (a floor for the real spread).
    ratio_nonzero: float | None = None
    lowest_nonzero: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "highest_group": self.highest,
            "lowest_group": self.lowest,
            "ratio": self.ratio,
            "measurable": self.measurable,
            "note": self.note,
            "ratio_among_nonzero_groups": self.ratio_nonzero,
            "lowest_nonzero_group": self.lowest_nonzero,
        }


def largest_ratio(rates: Mapping[str, Rate]) -> GroupRatio:
    """Highest rate / lowest rate over the groups that have trials.

    When the lowest rate is 0 of n the ratio is not measurable (it is not infinite: the group's
    true rate is only bounded, by the Wilson upper bound); the note says so, and the ratio among
    the groups with at least one event is given beside it.
    """
    tried = {g: r for g, r in rates.items() if r.n > 0}
    if len(tried) < 2:
        return GroupRatio(None, None, None, False, "fewer than two groups with trials")
    hi = max(tried, key=lambda g: (tried[g].value, tried[g].n))
    lo = min(tried, key=lambda g: (tried[g].value, -tried[g].n))
    nonzero = {g: r for g, r in tried.items() if r.k > 0}
    nz_ratio = nz_lo = None
    if len(nonzero) >= 2:
        nz_lo = min(nonzero, key=lambda g: nonzero[g].value)  # type: ignore[arg-type,return-value]
        nz_ratio = tried[hi].value / nonzero[nz_lo].value  # type: ignore[operator]
    if tried[hi].k == 0:
        return GroupRatio(hi, lo, None, False,
                          "not measurable: no group has any event (all 0 of n)")
    if tried[lo].k == 0:
        zero = sorted(g for g, r in tried.items() if r.k == 0)
        upper = {g: tried[g].ci[1] for g in zero}  # type: ignore[index]
        bounds = ", ".join(f"{g}: 0 of {tried[g].n}, upper {upper[g]:.2g}" for g in zero)
        return GroupRatio(hi, lo, None, False,
                          f"not measurable: {len(zero)} group(s) have 0 events ({bounds})",
                          nz_ratio, nz_lo)
    ratio = tried[hi].value / tried[lo].value  # type: ignore[operator]
    return GroupRatio(hi, lo, ratio, True,
                      f"{hi} ({tried[hi].text()}) vs {lo} ({tried[lo].text()})", nz_ratio, nz_lo)
