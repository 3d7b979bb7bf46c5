"""The registry of pairs: one row per model and routine, checked the same way.

Each row runs its pair on small data (``run``) and compares the answer with its
oracle (``oracle(result)`` raises AssertionError on a mismatch). Every new pair adds
its rows here.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from bayeskit.inference import laplace, map_estimate, nuts, svi
from bayeskit.models import examples


class Pair(NamedTuple):
    name: str
    run: Callable[[], object]
    oracle: Callable[[object], None]


_rng = np.random.default_rng(7)
_X = _rng.normal(size=(200, 3))
_Y = _X @ np.array([0.5, -1.0, 2.0]) + _rng.normal(size=200)
_MEAN, _COV = examples.linear_regression_posterior(_X, _Y)
_SD = np.sqrt(np.diag(_COV))


def _matches_closed_form(mean_tol: float, sd_tol: float):
    def oracle(res):
        draws = res.draws["w"].reshape(-1, 3)
        assert np.max(np.abs(draws.mean(0) - _MEAN) / _SD) < mean_tol
        assert np.max(np.abs(draws.std(0) / _SD - 1)) < sd_tol

    return oracle


def _point_is_mean(res):
    np.testing.assert_allclose(res.params["w"], _MEAN, atol=1e-5)


PAIRS = [
    Pair(
        "linear_regression/map",
        lambda: map_estimate(examples.linear_regression, _X, y=_Y, progress=False),
        _point_is_mean,
    ),
    Pair(
        "linear_regression/laplace",
        lambda: laplace(examples.linear_regression, _X, y=_Y, num_samples=2000, progress=False),
        _matches_closed_form(0.15, 0.08),
    ),
    Pair(
        "linear_regression/svi",
        lambda: svi(examples.linear_regression, _X, y=_Y, guide="mvn", num_samples=2000, progress=False),
        _matches_closed_form(0.15, 0.08),
    ),
    Pair(
        "linear_regression/nuts",
        lambda: nuts(
            examples.linear_regression, _X, y=_Y, num_warmup=300, num_samples=500, num_chains=2, progress=False
        ),
        _matches_closed_form(0.2, 0.1),
    ),
]
