import numpy as np
import pytest

import bayeskit.inference  # noqa: F401  (float64 before any test builds arrays)
from bayeskit.models import examples


@pytest.fixture(scope="session")
def regression_data():
    """Conjugate Bayesian linear regression with known noise, N=1000, D=10."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 10))
    y = X @ rng.normal(size=10) + rng.normal(size=1000)
    mean, cov = examples.linear_regression_posterior(X, y)
    return X, y, mean, cov
