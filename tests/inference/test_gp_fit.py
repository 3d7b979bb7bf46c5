"""fit_gp against scikit-learn, the GP as a NumPyro program, and the LOO residuals."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process import kernels as sk

from bayeskit.inference import diagnose, fit_gp, laplace, nuts
from bayeskit.inference._gp_fit import _exact_objective, _parameterise, sample_hyperparameters
from bayeskit.models import GaussianProcess, kernels


@pytest.fixture(scope="module")
def ard_data():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, size=(80, 3))
    y = np.sin(4 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.1 * rng.normal(size=80)  # X[:, 2] is irrelevant
    return X, y


@pytest.mark.parametrize("name", ["rbf", "matern32", "matern52"])
def test_fit_gp_reaches_sklearns_log_marginal_likelihood(name, ard_data):
    X, y = ard_data
    ours = {"rbf": kernels.RBF, "matern32": kernels.Matern32, "matern52": kernels.Matern52}[name](np.ones(3), 1.0)
    base = sk.RBF(np.ones(3)) if name == "rbf" else sk.Matern(np.ones(3), nu={"matern32": 1.5, "matern52": 2.5}[name])
    theirs = GaussianProcessRegressor(
        sk.ConstantKernel(1.0) * base + sk.WhiteKernel(1.0), n_restarts_optimizer=4, random_state=0
    ).fit(X, y)
    res = fit_gp(GaussianProcess(ours, noise_variance=1.0), X, y, num_restarts=5, fixed=("mean",), progress=False)
    assert res.info["log_marginal_likelihood"] >= theirs.log_marginal_likelihood_value_ - 0.05
    assert res.converged
    # the irrelevant input gets the longest lengthscale (ARD)
    assert np.argmax(res.params["kernel.lengthscale"]) == 2


def test_host_evaluation_equals_autodiff_of_the_compiled_loss(ard_data):
    """fit_gp's evaluation (kernel compiled, LAPACK on the host) against reverse mode through
    the loss bayes_opt compiles, with priors, a fixed leaf and a composite kernel."""
    X, y = ard_data
    kernel = kernels.Matern52(np.array([0.3, 0.5, 2.0]), 1.3) * kernels.RBF(1.5) + kernels.Linear(0.2)
    priors = {"noise_variance": dist.LogNormal(-3, 1), "kernel.left.left.lengthscale": dist.Gamma(2.0, 2.0)}
    gp = GaussianProcess(kernel, noise_variance=0.05, mean=0.2, priors=priors)
    parameterisation, fixed_leaves, z0 = _parameterise(gp, ("kernel.right.variance",))
    z = z0 + 0.1 * np.random.default_rng(0).normal(size=z0.size)
    value, grad = _exact_objective(parameterisation, (jnp.asarray(X), jnp.asarray(y), fixed_leaves))(z)
    data = (jnp.asarray(X), jnp.asarray(y), np.ones(len(y), bool), fixed_leaves)
    expected_value, expected_grad = jax.value_and_grad(parameterisation)(jnp.asarray(z), data)
    assert value == pytest.approx(float(expected_value), rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_fit_gp_recovers_known_hyperparameters():
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 10, size=400)
    truth = GaussianProcess(kernels.RBF(1.3, 2.0), noise_variance=0.04, mean=1.5)
    K = truth.kernel(X) + 0.04 * np.eye(400)
    y = 1.5 + np.linalg.cholesky(K) @ rng.normal(size=400)
    res = fit_gp(GaussianProcess(kernels.RBF(1.0, 1.0), 0.1), X, y, progress=False)
    assert res.params["kernel.lengthscale"] == pytest.approx(1.3, rel=0.15)
    assert res.params["noise_variance"] == pytest.approx(0.04, rel=0.2)
    # the fitted model's lml is the optimum: no nearby point is higher
    best = res.info["log_marginal_likelihood"]
    for scale in (0.95, 1.05):
        nearby = res.model.with_hyperparameters({"kernel.lengthscale": res.params["kernel.lengthscale"] * scale})
        assert nearby.condition(X, y).log_marginal_likelihood < best


def test_a_fit_that_stops_without_a_decrease_is_not_reported_as_converged():
    # outputs near 1e150 put the loss near overflow: the line search finds no decrease
    # from any start, and the run stops there rather than at an optimum
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(30, 1))
    res = fit_gp(GaussianProcess(kernels.RBF(1.0)), X, 1e150 * np.sin(6 * X[:, 0]), progress=False)
    assert not res.converged and not any(res.info["restarts_converged"])


def test_priors_make_it_a_map_fit_and_fixed_holds_values(ard_data):
    X, y = ard_data
    prior = dist.LogNormal(np.log(0.05), 0.3)
    gp = GaussianProcess(kernels.RBF(np.ones(3)), 0.5, priors={"noise_variance": prior})
    fixed = ("mean", "kernel.variance", "kernel.lengthscale")
    res = fit_gp(gp, X, y, fixed=fixed, progress=False)
    assert res.params["kernel.variance"] == 1.0 and res.params["mean"] == 0.0
    np.testing.assert_array_equal(res.params["kernel.lengthscale"], np.ones(3))
    # brute force over the one free hyperparameter: the MAP of lml + log prior
    grid = np.exp(np.linspace(np.log(0.01), np.log(0.2), 400))
    objective = [
        gp.with_hyperparameters({"noise_variance": s}).condition(X, y).log_marginal_likelihood
        + float(prior.log_prob(s))
        for s in grid
    ]
    assert res.params["noise_variance"] == pytest.approx(grid[np.argmax(objective)], rel=0.01)
    assert res.info["log_prior"] == pytest.approx(float(prior.log_prob(res.params["noise_variance"])), abs=1e-6)


def test_gp_program_laplace_matches_the_map_fit():
    rng = np.random.default_rng(3)
    X = np.linspace(0, 5, 30)
    y = np.sin(X) + 0.1 * rng.normal(size=30)
    priors = {"kernel.lengthscale": dist.LogNormal(0, 1), "noise_variance": dist.LogNormal(-4, 2)}
    gp = GaussianProcess(kernels.RBF(1.0), 0.05, priors=priors)
    # Laplace's mode is on the log scale (Jacobian included), fit_gp's in the hyperparameters' own space;
    # a LogNormal prior's log-scale density is Normal, so the two objectives differ by sum(log theta)
    res = laplace(gp, X, y=y, progress=False)
    fitted = fit_gp(gp, X, y, fixed=("mean", "kernel.variance"), progress=False)
    assert np.isfinite(res.params["kernel.lengthscale"])
    assert res.params["kernel.lengthscale"] == pytest.approx(fitted.params["kernel.lengthscale"], rel=0.3)


def test_hyperparameter_draws_match_numpyro_nuts_on_the_gp_program():
    """The compiled NUTS over (padded) data that bayes_opt uses, against NumPyro's NUTS
    on the GP as a NumPyro program; a scalar prior on ARD lengthscales is one per input."""
    rng = np.random.default_rng(5)
    X = rng.uniform(size=(30, 2))
    y = np.sin(3 * X[:, 0]) + 0.1 * rng.normal(size=30)
    priors = {
        "kernel.lengthscale": dist.LogNormal(0, 1),
        "kernel.variance": dist.LogNormal(0, 1),
        "noise_variance": dist.LogNormal(-3, 1),
        "mean": dist.Normal(0, 1),
    }
    gp = GaussianProcess(kernels.Matern52(np.ones(2), 1.0), 0.1, priors=priors)
    X_pad, y_pad = np.vstack([X, np.zeros((10, 2))]), np.concatenate([y, np.zeros(10)])
    mask = np.arange(40) < 30
    draws, divergences = sample_hyperparameters(gp, X_pad, y_pad, mask, 0, num_warmup=500, num_draws=2000, thinning=1)
    reference = nuts(gp, X, y=y, num_chains=2, num_samples=2000, progress=False).draws
    assert divergences == 0 and np.shape(reference["kernel.lengthscale"]) == (2, 2000, 2)
    # posterior means and spreads of the log hyperparameters agree to Monte Carlo error
    ours = {"kernel.lengthscale": draws.kernel.lengthscale, "noise_variance": draws.noise_variance}
    for name, values in ours.items():
        theirs = np.log(np.asarray(reference[name])).reshape(-1, *np.shape(values)[1:])
        np.testing.assert_allclose(np.mean(np.log(values), 0), np.mean(theirs, 0), atol=0.1)
        np.testing.assert_allclose(np.std(np.log(values), 0), np.std(theirs, 0), rtol=0.15)
    assert np.mean(draws.mean) == pytest.approx(np.mean(np.asarray(reference["mean"])), abs=0.1)
    with pytest.raises(ValueError, match="prior on every hyperparameter"):
        sample_hyperparameters(GaussianProcess(gp.kernel, 0.1), X, y, None, 0, num_warmup=5, num_draws=2, thinning=1)


def test_sparse_fit_equals_the_exact_fit_at_z_equal_x_and_recovers_the_noise():
    rng = np.random.default_rng(6)
    X = rng.uniform(0, 10, 40)
    y = np.sin(X) + 0.1 * rng.normal(size=40)
    gp = GaussianProcess(kernels.RBF(1.0), 0.1)
    exact = fit_gp(gp, X, y, progress=False)
    sparse = fit_gp(gp, X, y, inducing_points=X, progress=False)  # the bound is tight at Z = X
    # the same optimum: its value to round-off, its location to the optimiser's tolerance
    assert sparse.info["log_marginal_likelihood"] == pytest.approx(exact.info["log_marginal_likelihood"], abs=1e-6)
    for name, value in exact.params.items():
        assert sparse.params[name] == pytest.approx(value, rel=1e-4), name
    assert "loo_residuals" not in sparse.info

    X = rng.uniform(0, 10, 3000)
    y = np.sin(X) + 0.3 * rng.normal(size=3000)
    Z = np.linspace(0, 10, 30)
    res = fit_gp(GaussianProcess(kernels.Matern52(1.0), 1.0), X, y, inducing_points=Z, num_restarts=2, progress=False)
    assert res.params["noise_variance"] == pytest.approx(0.09, rel=0.1)  # sd 0.3, 3000 points
    post = res.model.condition(X, y, inducing_points=Z)
    assert res.info["log_marginal_likelihood"] == pytest.approx(post.log_marginal_likelihood, abs=1e-8)
    mean, _ = post.predict(np.linspace(1, 9, 50))
    np.testing.assert_allclose(mean, np.sin(np.linspace(1, 9, 50)), atol=0.05)


def test_loo_residuals_equal_brute_force_refits():
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 3, size=12)
    y = np.cos(2 * X) + 0.2 * rng.normal(size=12)
    gp = GaussianProcess(kernels.Matern52(0.7, 1.2), 0.04)
    residuals = gp.condition(X, y).loo_residuals()
    for i in range(12):
        keep = np.arange(12) != i
        mean, var = gp.condition(X[keep], y[keep]).predict(X[i : i + 1], include_noise=True)
        assert residuals[i] == pytest.approx((y[i] - mean[0]) / np.sqrt(var[0]), rel=1e-8)


def test_diagnose_reports_jitter_and_loo():
    X = np.repeat(np.linspace(0, 1, 10), 3)
    y = np.sin(3 * X)
    res = fit_gp(GaussianProcess(kernels.RBF(0.5), 1e-3), X, y, fixed=("noise_variance", "mean"), progress=False)
    report = diagnose(res)
    assert report["loo_residuals"].status in ("ok", "warn")
    assert report["jitter"].value == res.info["jitter"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_restarts": 0}, "num_restarts"),
        ({"fixed": ("kernel.nope",)}, "unknown hyperparameters"),
        ({"fixed": ("kernel.lengthscale", "kernel.variance", "noise_variance", "mean")}, "nothing to fit"),
        ({"fixed": None}, "fixed must be a tuple of hyperparameter names"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    X = np.linspace(0, 1, 5)
    with pytest.raises((ValueError, TypeError), match=message):
        fit_gp(GaussianProcess(kernels.RBF(1.0), 0.1), X, X, progress=False, **kwargs)


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.array([0.0, np.nan]), np.zeros(2), "X contains NaN"),
        (np.zeros(2), np.array([0.0, np.inf]), "y contains NaN"),
        (np.zeros(3), np.zeros(2), "one value per row"),
    ],
)
def test_bad_data_is_refused(X, y, message):
    with pytest.raises(ValueError, match=message):
        fit_gp(GaussianProcess(kernels.RBF(1.0), 0.1), X, y, progress=False)


def test_non_positive_lengthscale_and_bad_priors_are_refused():
    with pytest.raises(ValueError, match="lengthscale"):
        kernels.RBF(lengthscale=[1.0, -1.0])
    with pytest.raises(ValueError, match="not a hyperparameter"):
        GaussianProcess(kernels.RBF(1.0), priors={"kernel.period": dist.LogNormal(0, 1)})
    with pytest.raises(TypeError, match="numpyro distribution"):
        GaussianProcess(kernels.RBF(1.0), priors={"kernel.lengthscale": 1.0})
    with pytest.raises(ValueError, match="broadcasts to the hyperparameter's"):
        GaussianProcess(kernels.RBF(np.ones(2)), priors={"kernel.lengthscale": dist.LogNormal(np.zeros(3), 1.0)})
    with pytest.raises(ValueError, match="univariate"):
        GaussianProcess(kernels.RBF(np.ones(2)), priors={"kernel.lengthscale": dist.Dirichlet(np.ones(2))})
