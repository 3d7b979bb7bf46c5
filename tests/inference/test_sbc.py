"""Simulation-based calibration (Talts et al. 2018) on a conjugate normal model.

For each replication draw theta from the prior and data given theta, fit, and take
the rank of theta among the approximate posterior draws. Calibrated inference gives
uniform ranks. Laplace and full-rank SVI are exact here, so ranks must be uniform.
"""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from bayeskit.inference import laplace, svi

NUM_REPLICATIONS, NUM_DRAWS, NUM_OBS = 40, 99, 5


def normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", NUM_OBS):
        numpyro.sample("y", dist.Normal(mu, 2.0), obs=y)


@pytest.mark.parametrize("routine", ["laplace", "svi"])
def test_ranks_are_uniform(routine):
    rng = np.random.default_rng(10 if routine == "laplace" else 11)
    ranks = []
    for i in range(NUM_REPLICATIONS):
        mu = rng.normal()
        y = mu + 2.0 * rng.normal(size=NUM_OBS)
        if routine == "laplace":
            res = laplace(normal_mean, y=y, num_samples=NUM_DRAWS, rng_key=i, progress=False)
        else:
            res = svi(normal_mean, y=y, guide="normal", num_steps=500, num_samples=NUM_DRAWS, rng_key=i, progress=False)
        ranks.append(int(np.sum(res.draws["mu"].ravel() < mu)))
    counts = np.bincount(np.asarray(ranks) // 25, minlength=4)  # 4 bins of the ranks 0..99
    assert stats.chisquare(counts).pvalue > 0.001, counts
