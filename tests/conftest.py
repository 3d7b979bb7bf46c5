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


@pytest.fixture(scope="session")
def iris():
    """Fisher's iris measurements, (150, 4)."""
    from bayeskit.models import data

    d = data.load("iris")
    return np.column_stack([d[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")])


@pytest.fixture(scope="session")
def three_clusters():
    """3,000 points from a known three-component mixture in 2-D, with its parameters."""
    rng = np.random.default_rng(3)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
    covariances = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]], [[1.5, -0.7], [-0.7, 1.0]]])
    z = rng.choice(3, size=3000, p=weights)
    noise = np.einsum("nde,ne->nd", np.linalg.cholesky(covariances)[z], rng.normal(size=(3000, 2)))
    x = means[z] + noise
    return x, {"weights": weights, "means": means, "covariances": covariances}


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of small torch programs: on a busy two-core machine an OpenMP team of
    two makes each small op wait for the second core (a 3x3 ``tril`` took 10 ms), which
    costs time and tells nothing about correctness."""
    import torch  # only the modules that ask for this fixture use torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Free JAX's compiled programs after each module. Each one keeps its machine code
    in memory maps of its own, and the whole suite in one process would otherwise pass
    the kernel's limit on maps per process (``vm.max_map_count``, 65530 by default),
    at which point XLA's next compilation crashes the interpreter."""
    yield
    import jax

    jax.clear_caches()
