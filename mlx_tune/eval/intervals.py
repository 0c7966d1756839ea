"""95% confidence intervals for benchmark figures.

- :func:`wilson`: the Wilson score interval of a proportion ``k / n`` (well behaved at 0, 1 and
  small ``n``, unlike the normal approximation), used for every figure that is a share of queries.
- :func:`bootstrap`: a seeded percentile bootstrap over queries, for figures that are not one
  proportion (balanced discrimination, macro-F1, mean ROUGE-L). The resampling is seeded, so a
  rerun on the same answers gives the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 1000
SEED = 20241


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """``[low, high]`` of the Wilson score interval for ``k`` successes in ``n``; ``None`` if n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[float] | None:
    """Percentile interval of ``statistic`` over ``resamples`` resamples of ``n`` queries.

    ``statistic`` takes an integer array of shape ``(resamples, n)`` (each row one resample's query
    indices) and returns one value per row (``nan`` where a resample has no defined value; those
    are left out). ``None`` if ``n`` is 0 or no resample has a value."""
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    values = np.asarray(statistic(idx), dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def mean_interval(values: list[float], **kw) -> list[float] | None:
    """Bootstrap interval of the mean of ``values``."""
    arr = np.asarray(values, dtype=float)
    return bootstrap(lambda idx: arr[idx].mean(axis=1), len(arr), **kw)
