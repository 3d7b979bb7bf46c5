"""The sparse (inducing-point) GP against the exact GP and against dense evaluations of Titsias' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.stats import multivariate_normal

from bayeskit.models import GaussianProcess, kernels
from bayeskit.models._sparse_gp import SparseConditionedGP, sparse_log_marginal_likelihood

LENGTHSCALE = np.array([0.8, 1.5])
NOISE, MEAN = 0.01, 0.3
# one kernel (structure) and few shapes for most tests: compiling dominates their time
KERNEL = kernels.Matern52(LENGTHSCALE, 1.7) + kernels.Linear(0.2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(40, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1]) + MEAN + 0.1 * rng.normal(size=40)
    Z = rng.uniform(-3, 3, size=(8, 2))  # inducing points away from the data
    return X, y, rng.uniform(-3, 3, size=(15, 2)), Z


def _gp(kernel=KERNEL):
    return GaussianProcess(kernel, noise_variance=NOISE, mean=MEAN)


def _dense_titsias(kernel, X, y, Z, X_new):
    """Titsias' bound, the exact log marginal likelihood and the q(u) predictive from the N x N matrices, in NumPy
    (a different route to the same numbers)."""
    # one kernel call on all inputs stacked: its blocks are k(X), k(X, Z), ... (White only on the diagonal)
    n, m = len(X), len(Z)
    k_all = np.asarray(kernel(np.vstack([X, Z, X_new])))
    k_nn, k_nm, k_mm = k_all[:n, :n], k_all[:n, n : n + m], k_all[n : n + m, n : n + m]
    k_sm, k_ss = k_all[n + m :, n : n + m], k_all[n + m :, n + m :]
    q_nn = k_nm @ np.linalg.solve(k_mm, k_nm.T)
    bound = multivariate_normal(np.full(n, MEAN), q_nn + NOISE * np.eye(n)).logpdf(y)
    bound -= np.trace(k_nn - q_nn) / (2 * NOISE)
    exact = multivariate_normal(np.full(n, MEAN), k_nn + NOISE * np.eye(n)).logpdf(y)
    # q(u) = N(mu, S): mu = K_mm Sigma K_mn (y - m) / s2, S = K_mm Sigma K_mm, Sigma = (K_mm + K_mn K_nm / s2)^-1
    sigma = np.linalg.inv(k_mm + k_nm.T @ k_nm / NOISE)
    mu, s = k_mm @ sigma @ k_nm.T @ (y - MEAN) / NOISE, k_mm @ sigma @ k_mm
    proj = np.linalg.solve(k_mm, k_sm.T).T  # K_*m K_mm^-1
    mean = MEAN + proj @ mu
    cov = k_ss - proj @ k_sm.T + proj @ s @ proj.T
    return bound, exact, mean, cov


def test_inducing_points_at_the_data_give_the_exact_posterior(data):
    X, y, X_new, _ = data
    exact, sparse = _gp().condition(X, y), _gp().condition(X, y, inducing_points=X)
    assert isinstance(sparse, SparseConditionedGP)
    assert sparse.log_marginal_likelihood == pytest.approx(exact.log_marginal_likelihood, abs=1e-6)
    for full_cov in (False, True):
        ours, theirs = sparse.predict(X_new, full_cov=full_cov), exact.predict(X_new, full_cov=full_cov)
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6)  # mean
        np.testing.assert_allclose(ours[1], theirs[1], atol=1e-6)  # variance or covariance
    np.testing.assert_allclose(sparse.inducing_points, X)
    assert sparse.jitter == 0.0 and sparse.near_duplicates == 0


def test_bound_is_below_the_exact_one_and_rises_as_inducing_points_nest(data):
    X, y, _, Z = data
    gp = _gp()
    exact = gp.condition(X, y).log_marginal_likelihood
    order = np.random.default_rng(1).permutation(len(X))
    for candidates in (X[order], np.vstack([Z, X[order[:32]]])):  # subsets of the data, then points off it
        bounds = [gp.condition(X, y, inducing_points=candidates[:m]).log_marginal_likelihood for m in (8, 20, 40)]
        assert np.all(np.diff(bounds) >= -1e-9), bounds
        assert bounds[-1] <= exact + 1e-9
    assert bounds[0] < exact - 1.0  # eight points do not explain this function: the gap is real


def test_bound_and_predictions_equal_the_dense_formulas(data):
    X, y, X_new, Z = data
    bound, _, mean, cov = _dense_titsias(KERNEL, X, y, Z, X_new)
    post = _gp().condition(X, y, inducing_points=Z)
    assert post.log_marginal_likelihood == pytest.approx(bound, abs=1e-8)
    assert float(sparse_log_marginal_likelihood(KERNEL, NOISE, MEAN, X, y, Z)) == pytest.approx(bound, abs=1e-8)
    ours_mean, ours_var = post.predict(X_new)
    np.testing.assert_allclose(ours_mean, mean, atol=1e-8)
    np.testing.assert_allclose(ours_var, np.diag(cov), atol=1e-8)
    np.testing.assert_allclose(post.predict(X_new, full_cov=True)[1], cov, atol=1e-8)
    np.testing.assert_allclose(post.predict(X_new, include_noise=True)[1] - ours_var, NOISE, atol=1e-12)


def test_white_noise_in_the_kernel_is_unexplained_by_inducing_points(data):
    X, y, X_new, _ = data
    kernel = KERNEL + kernels.White(0.05)
    sparse = _gp(kernel).condition(X, y, inducing_points=X)
    bound, exact, _, _ = _dense_titsias(kernel, X, y, X, X_new)
    assert sparse.log_marginal_likelihood == pytest.approx(bound, abs=1e-8)
    # the bound pays tr(White) / (2 s2) for it (less what K(Z, Z)'s own White term gives back)
    assert sparse.log_marginal_likelihood < exact - 1.0
    # the latent variance includes the White term whether asked for alone or as a covariance
    np.testing.assert_allclose(sparse.predict(X_new)[1], np.diag(sparse.predict(X_new, full_cov=True)[1]), atol=1e-12)


def test_gradients_are_finite_and_match_finite_differences(data):
    X, y, _, Z = data

    def bound(params):
        kernel = kernels.Matern52(params["lengthscale"], params["variance"]) + kernels.Linear(params["linear"])
        return sparse_log_marginal_likelihood(kernel, params["noise"], params["mean"], X, y, params["Z"])

    params = {"lengthscale": LENGTHSCALE, "variance": 1.7, "linear": 0.2, "noise": NOISE, "mean": MEAN, "Z": Z}
    params = jax.tree_util.tree_map(jnp.asarray, params)
    value, grads = jax.jit(jax.value_and_grad(bound))(params)
    assert float(value) == pytest.approx(_gp().condition(X, y, inducing_points=Z).log_marginal_likelihood, abs=1e-9)
    flat, unflatten = ravel_pytree(params)
    analytic = np.asarray(ravel_pytree(grads)[0])
    assert np.all(np.isfinite(analytic))
    numeric = np.empty_like(analytic)
    for i in range(flat.shape[0]):
        step = 1e-6 * max(1.0, abs(float(flat[i])))
        up, down = flat.at[i].add(step), flat.at[i].add(-step)
        numeric[i] = (float(bound(unflatten(up))) - float(bound(unflatten(down)))) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-4)


def test_samples_have_the_predictive_moments(data):
    X, y, X_new, Z = data
    post = _gp().condition(X, y, inducing_points=Z)
    draws = post.sample(X_new, 20_000, rng_key=np.int64(3))
    mean, var = post.predict(X_new)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(var / 20_000) + 1e-12)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.06, atol=1e-10)


def test_duplicate_inducing_points_get_jitter_and_are_counted(data):
    X, y, X_new, _ = data
    post = _gp().condition(X, y, inducing_points=np.vstack([X[:4], X[:4]]))
    assert post.near_duplicates == 4 and post.jitter > 0
    # repeated inducing points add nothing; jitter only makes the bound a little looser
    distinct = _dense_titsias(KERNEL, X, y, X[:4], X_new)[0]
    assert distinct - 1e-3 * abs(distinct) < post.log_marginal_likelihood <= distinct + 1e-9
    mean, var = post.predict(X_new)
    assert np.all(np.isfinite(mean)) and np.all(var >= 0)


def _largest_intermediate(closed_jaxpr) -> int:
    """The most elements any value in a jaxpr has, nested jaxprs (jit, while, custom rules) included."""

    def walk(jaxpr):
        sizes = [int(np.prod(var.aval.shape)) for eqn in jaxpr.eqns for var in eqn.outvars]
        for eqn in jaxpr.eqns:
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        sizes.append(walk(inner))
        return max(sizes, default=0)

    return walk(closed_jaxpr.jaxpr)


def _smooth(X):
    return np.sin(1.5 * X[:, 0]) * np.cos(X[:, 1])


def test_twenty_thousand_points_never_form_an_n_by_n_matrix_and_match_the_exact_gp():
    rng = np.random.default_rng(1)
    n = 20_000
    X = rng.uniform(-2, 2, size=(n, 2))
    y = _smooth(X) + 0.1 * rng.normal(size=n)
    grid = np.linspace(-2, 2, 8)
    Z = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)  # M = 64
    X_new = rng.uniform(-1.8, 1.8, size=(100, 2))
    gp = GaussianProcess(kernels.RBF(1.0, 1.0), noise_variance=0.01)

    def bound(kernel, noise):
        return sparse_log_marginal_likelihood(kernel, noise, 0.0, X, y, Z)

    for traced in (bound, jax.grad(bound, argnums=(0, 1))):
        # kernels form their (N, M, D) input differences: O(N M D) memory, never O(N^2)
        assert _largest_intermediate(jax.make_jaxpr(traced)(gp.kernel, 0.01)) <= n * len(Z) * X.shape[1]

    post = gp.condition(X, y, inducing_points=Z)
    mean, var = post.predict(X_new)
    assert np.isfinite(post.log_marginal_likelihood)
    assert np.max(np.abs(mean - _smooth(X_new))) < 0.03 and np.all(var < 1e-3)
    # against the exact GP where it is affordable: the first 2,000 points
    exact, sparse = gp.condition(X[:2000], y[:2000]), gp.condition(X[:2000], y[:2000], inducing_points=Z)
    np.testing.assert_allclose(sparse.predict(X_new)[0], exact.predict(X_new)[0], atol=0.01)
    np.testing.assert_allclose(sparse.predict(X_new)[1], exact.predict(X_new)[1], atol=1e-3)
    assert exact.log_marginal_likelihood - 0.01 * abs(exact.log_marginal_likelihood) < sparse.log_marginal_likelihood
    assert sparse.log_marginal_likelihood <= exact.log_marginal_likelihood


@pytest.mark.parametrize(
    "noise, Z, message",
    [
        (NOISE, np.zeros((3, 1)), "inducing_points must have 2 columns"),
        (NOISE, np.array([[0.0, 0.0], [np.nan, 1.0]]), "inducing_points contains NaN"),
        (NOISE, np.zeros((0, 2)), "inducing_points must be"),
        (NOISE, np.zeros((2, 2, 2)), "inducing_points must be"),
        (np.full(40, NOISE), np.zeros((3, 2)), "per-point noise is not supported"),
        (0.0, np.zeros((3, 2)), r"noise_variance must be finite and > 0"),
    ],
)
def test_bad_sparse_inputs_are_refused(noise, Z, message, data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=message):
        GaussianProcess(kernels.RBF(), noise_variance=noise).condition(X, y, inducing_points=Z)


def test_the_pure_bound_checks_what_it_can_while_traced(data):
    X, y, _, Z = data
    kernel = kernels.RBF()
    with pytest.raises(ValueError, match="Z must have 2 columns"):
        sparse_log_marginal_likelihood(kernel, NOISE, MEAN, X, y, Z[:, :1])
    with pytest.raises(ValueError, match="> 0"):
        sparse_log_marginal_likelihood(kernel, -1.0, MEAN, X, y, Z)
    with pytest.raises(ValueError, match="per-point"):
        jax.jit(lambda s2: sparse_log_marginal_likelihood(kernel, s2, MEAN, X, y, Z))(np.full(40, NOISE))
    with pytest.raises(ValueError, match=r"Z must be \(M, 2\)"):
        jax.jit(lambda Z: sparse_log_marginal_likelihood(kernel, NOISE, MEAN, X, y, Z))(Z[:, :1])
    # a traced noise_variance cannot be checked: a non-positive one gives NaN, not a wrong number
    assert np.isnan(jax.jit(lambda s2: sparse_log_marginal_likelihood(kernel, s2, MEAN, X, y, Z))(-1.0))


def test_bad_prediction_requests_are_refused(data):
    X, y, _, Z = data
    post = _gp().condition(X, y, inducing_points=Z)
    with pytest.raises(ValueError, match="2 columns"):
        post.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="num_samples"):
        post.sample(np.zeros((1, 2)), 0)
