"""Pyro programs through the generic routines, against closed forms and the same model in NumPyro."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample

from bayeskit.inference import (
    ConvergenceError,
    diagnose,
    laplace,
    map_estimate,
    nuts,
    predictive,
    prior_predictive,
    svi,
)
from bayeskit.inference._program import detect_backend
from bayeskit.models import examples

_rng = np.random.default_rng(11)
N, D = 60, 3
X_NP = _rng.normal(size=(N, D))
Y_NP = X_NP @ np.array([0.8, -0.5, 0.3]) + _rng.normal(size=N)
X, Y = torch.tensor(X_NP), torch.tensor(Y_NP)  # float64, as the user gives them
MEAN, COV = examples.linear_regression_posterior(X_NP, Y_NP)
SD = np.sqrt(np.diag(COV))
QUIET = {"progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pyro_regression(X, y=None):
    w = pyro.sample("w", pdist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", pdist.Normal(X @ w, 1.0), obs=y)


def pyro_scaled(X, y=None):
    w = pyro.sample("w", pdist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 1.0).to_event(1))
    sigma = pyro.sample("sigma", pdist.HalfNormal(torch.ones((), dtype=X.dtype)))
    pyro.deterministic("variance", sigma**2)
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", pdist.Normal(X @ w, sigma), obs=y)


def numpyro_scaled(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.deterministic("variance", sigma**2)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


class Regression(PyroModule):
    """The same regression as a PyroModule: a Linear layer whose weight has a prior."""

    def __init__(self, d):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](d, 1, bias=False).double()
        self.linear.weight = PyroSample(pdist.Normal(torch.zeros(1, d, dtype=torch.float64), 1.0).to_event(2))

    def forward(self, X, y=None):
        mean = self.linear(X).squeeze(-1)
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", pdist.Normal(mean, 1.0), obs=y)


@pytest.fixture(scope="module")
def laplace_fit():
    return laplace(pyro_regression, X, Y, num_samples=500, **QUIET)


def test_laplace_and_map_estimate_match_the_closed_form(laplace_fit):
    res = laplace_fit
    assert res.method == "laplace" and res.converged and res.info["latent_sites"] == ["w"]
    np.testing.assert_allclose(res.params["w"], MEAN, atol=1e-8)
    w = res.draws["w"][0]
    assert res.draws["w"].shape == (1, 500, D)
    assert np.all(np.abs(w.mean(0) - MEAN) < 4 * SD / np.sqrt(500))
    np.testing.assert_allclose(w.std(0), SD, rtol=0.1)
    # the posterior is Gaussian, so q is exact and log p - log q is the log evidence for every draw
    ratio = res.sample_stats["log_p"] - res.sample_stats["log_q"]
    assert ratio.shape == (1, 500) and np.ptp(ratio) < 1e-6
    assert res.log_likelihood["y"].shape == (1, 500, N)
    np.testing.assert_array_equal(res.observed_data["y"], Y_NP)
    mode = map_estimate(pyro_regression, X, Y, **QUIET)
    assert mode.method == "map" and mode.converged and mode.draws == {}
    np.testing.assert_allclose(mode.params["w"], MEAN, atol=1e-8)


def test_svi_matches_the_closed_form_and_the_same_model_in_numpyro():
    options = {"guide": "mvn", "num_steps": 500, "learning_rate": 0.01, "num_samples": 600, **QUIET}
    ours = svi(pyro_regression, X, Y, **options)
    assert ours.method == "svi" and ours.info["guide"] == "mvn" and ours.trace["elbo"].shape == (500,)
    w = ours.draws["w"][0]
    assert np.all(np.abs(w.mean(0) - MEAN) < 0.25 * SD)
    np.testing.assert_allclose(w.std(0), SD, rtol=0.15)
    theirs = svi(examples.linear_regression, X_NP, y=Y_NP, **options)
    assert ours.info.keys() == theirs.info.keys() and ours.sample_stats.keys() == theirs.sample_stats.keys()
    np.testing.assert_allclose(ours.params["w"], theirs.params["w"], atol=0.3 * SD.min())
    np.testing.assert_allclose(w.std(0), theirs.draws["w"][0].std(0), rtol=0.2)
    # log p and log q mean the same in both: their difference is near the log evidence either way
    gap = np.median(ours.sample_stats["log_p"] - ours.sample_stats["log_q"])
    assert abs(gap - np.median(theirs.sample_stats["log_p"] - theirs.sample_stats["log_q"])) < 0.1
    checks = {c.name: c for c in diagnose(ours).checks}
    assert checks["pareto_khat"].status == "ok" and "loo" in checks


def test_a_constrained_site_is_reported_in_its_own_space_and_laplace_includes_the_jacobian():
    ours = laplace(pyro_scaled, X, Y, num_samples=400, **QUIET)
    theirs = laplace(numpyro_scaled, X_NP, y=Y_NP, num_samples=400, **QUIET)
    for name in ("w", "sigma", "variance"):
        np.testing.assert_allclose(ours.params[name], theirs.params[name], rtol=1e-6)
    for group in ("params", "draws", "sample_stats", "log_likelihood", "observed_data", "trace"):
        assert getattr(ours, group).keys() == getattr(theirs, group).keys()
    assert ours.info.keys() == theirs.info.keys()
    sigma = ours.draws["sigma"]
    assert sigma.shape == (1, 400) and np.all(sigma > 0)
    np.testing.assert_allclose(ours.draws["variance"], sigma**2)
    mode = map_estimate(pyro_scaled, X, Y, **QUIET)
    their_mode = map_estimate(numpyro_scaled, X_NP, y=Y_NP, **QUIET)
    np.testing.assert_allclose(mode.params["sigma"], their_mode.params["sigma"], rtol=1e-6)
    # the log-Jacobian of sigma = exp(z) adds log sigma to the density Laplace maximises
    assert ours.params["sigma"] > mode.params["sigma"] + 1e-3


def test_nuts_agrees_with_the_closed_form_and_predictive_draws_the_observed_site(laplace_fit):
    res = nuts(pyro_regression, X, Y, num_warmup=80, num_samples=150, num_chains=2, rng_key=1, **QUIET)
    assert res.method == "nuts" and res.draws["w"].shape == (2, 150, D)
    assert res.sample_stats["diverging"].shape == (2, 150) and res.sample_stats["diverging"].dtype == bool
    assert res.info["num_divergences"] == 0 and res.info["converged_per_chain"] == [True, True]
    assert 0.5 < res.info["mean_acceptance_rate"] <= 1
    w = res.draws["w"].reshape(-1, D)
    assert np.all(np.abs(w.mean(0) - MEAN) < 0.25 * SD)
    np.testing.assert_allclose(w.std(0), SD, rtol=0.2)
    checks = {c.name for c in diagnose(res).checks}
    assert {"divergences", "r_hat", "loo"} <= checks

    x_new = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]], dtype=torch.float64)
    draws = predictive(res, x_new, num_samples=100)
    assert set(draws) == {"y"} and draws["y"].shape == (2, 100, 2)
    draws = predictive(laplace_fit, x_new)["y"]
    assert draws.shape == (1, 500, 2)
    np.testing.assert_allclose(draws[0].mean(0), x_new.numpy() @ MEAN, atol=0.2)
    np.testing.assert_allclose(draws[0].var(0), 1 + np.diag(x_new.numpy() @ COV @ x_new.numpy().T), rtol=0.25)
    prior = prior_predictive(pyro_regression, X, num_samples=300)
    assert prior["w"].shape == (1, 300, D) and prior["y"].shape == (1, 300, N)
    assert abs(prior["w"].std() - 1.0) < 0.1


def test_an_observation_the_plate_would_broadcast_is_refused():
    with pytest.raises(ValueError, match=r"observed site 'y' has shape \(60, 1\).*shape \(60,\)"):
        map_estimate(pyro_regression, X, Y[:, None], **QUIET)


def test_nuts_chains_start_from_init_values():
    """Modes at +-10 up to N(0, 1), ~50 nats apart: each chain stays where it starts."""

    def two_modes():
        x = pyro.sample("x", pdist.Normal(torch.tensor(0.0, dtype=torch.float64), 12.0))
        pyro.factor("two_modes", torch.logaddexp(-0.5 * (x - 10.0) ** 2, -0.5 * (x + 10.0) ** 2))

    for start in (10.0, -10.0):
        res = nuts(two_modes, init_values={"x": start}, num_warmup=50, num_samples=50, num_chains=1, **QUIET)
        assert np.all(np.sign(res.draws["x"]) == np.sign(start))
    with pytest.raises(ValueError, match=r"init_values\['x'\] must have shape \(\), got \(2,\)"):
        nuts(two_modes, init_values={"x": [1.0, 2.0]}, **QUIET)

    def positive():
        pyro.sample("s", pdist.HalfNormal(torch.tensor(1.0, dtype=torch.float64)))

    with pytest.raises(ValueError, match="could not start from init_values.*support"):
        nuts(positive, init_values={"s": -1.0}, num_warmup=10, num_samples=10, num_chains=1, **QUIET)


def test_backend_detection_for_functions_modules_and_the_override():
    assert detect_backend(pyro_regression, None) == "pyro"
    assert detect_backend(examples.linear_regression, None) == "numpyro"
    module = Regression(D)
    assert detect_backend(module, None) == "pyro"

    def calls_a_module(X, y=None):  # names no `pyro`, but the module it calls is one
        module(X, y)

    assert detect_backend(calls_a_module, None) == "pyro"
    assert detect_backend(pyro_regression, "numpyro") == "numpyro"
    with pytest.raises(ValueError, match="backend must be one of"):
        detect_backend(pyro_regression, "stan")
    # the PyroModule goes through the routines like a function, with its own site names
    res = laplace(module, X, Y, num_samples=200, **QUIET)
    np.testing.assert_allclose(res.params["linear.weight"], MEAN[None], atol=1e-8)
    assert res.draws["linear.weight"].shape == (1, 200, 1, D)
    # forcing the wrong backend gets the error of the routine that could not read the program
    with pytest.raises(ValueError, match="has none"):
        laplace(pyro_regression, X, Y, backend="numpyro", **QUIET)
    with pytest.raises(ValueError, match="model raised"):
        laplace(examples.linear_regression, X_NP, y=Y_NP, backend="pyro", **QUIET)


def test_the_users_torch_rng_and_param_store_are_left_as_they_were():
    def with_param(X, y=None):
        scale = pyro.param("prior_scale", torch.tensor(1.0, dtype=X.dtype))
        w = pyro.sample("w", pdist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), scale).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", pdist.Normal(X @ w, 1.0), obs=y)

    pyro.clear_param_store()
    try:
        torch.manual_seed(5)
        pyro.param("users_own", torch.tensor([1.0, 2.0]))
        expected = torch.rand(4)
        torch.manual_seed(5)
        pyro.param("users_own", torch.tensor([1.0, 2.0]))
        res = svi(with_param, X, Y, guide="normal", num_steps=50, num_samples=20, **QUIET)
        laplace(with_param, X, Y, num_samples=20, **QUIET)
        nuts(with_param, X, Y, num_warmup=5, num_samples=5, num_chains=1, **QUIET)
        assert torch.equal(torch.rand(4), expected)
        assert list(pyro.get_param_store().keys()) == ["users_own"]
        assert torch.equal(pyro.param("users_own").detach(), torch.tensor([1.0, 2.0]))
        assert set(res.info["guide_params"]) == {"AutoDiagonalNormal.loc", "AutoDiagonalNormal.scale"}
    finally:
        pyro.clear_param_store()


@pytest.mark.parametrize(
    ("routine", "options"),
    [
        (laplace, {"num_samples": 50}),
        (svi, {"num_steps": 30, "num_samples": 50}),
        (nuts, {"num_warmup": 10, "num_samples": 10, "num_chains": 1}),
    ],
)
def test_same_seed_same_draws_different_seed_different_draws(routine, options):
    a = routine(pyro_regression, X, Y, rng_key=3, **options, **QUIET)
    b = routine(pyro_regression, X, Y, rng_key=3, **options, **QUIET)
    c = routine(pyro_regression, X, Y, rng_key=4, **options, **QUIET)
    np.testing.assert_array_equal(a.draws["w"], b.draws["w"])
    assert not np.array_equal(a.draws["w"], c.draws["w"])


def test_a_guide_program_and_the_delta_guide():
    def guide(X, y=None):
        loc = pyro.param("loc", torch.zeros(X.shape[1], dtype=X.dtype))
        scale = pyro.param("scale", 0.1 * torch.ones(X.shape[1], dtype=X.dtype), constraint=pdist.constraints.positive)
        pyro.sample("w", pdist.Normal(loc, scale).to_event(1))

    res = svi(pyro_regression, X, Y, guide=guide, num_steps=400, learning_rate=0.05, num_samples=300, **QUIET)
    assert res.info["guide"] == "custom" and set(res.info["guide_params"]) == {"loc", "scale"}
    np.testing.assert_allclose(res.params["w"], res.draws["w"][0].mean(0))
    assert np.all(np.abs(res.params["w"] - MEAN) < 0.25 * SD)
    assert diagnose(res).checks
    point = svi(pyro_regression, X, Y, guide="delta", num_steps=200, learning_rate=0.05, **QUIET)
    assert point.draws == {} and np.all(np.abs(point.params["w"] - MEAN) < 1e-3)

    def partial_guide(X, y=None):
        pyro.sample("sigma", pdist.HalfNormal(1.0))

    with pytest.raises(ValueError, match=r"leaves out \['w'\]"):
        svi(pyro_scaled, X, Y, guide=partial_guide, num_steps=5, **QUIET)


def test_bad_input_gets_a_clear_error():
    y = Y.clone()
    y[3] = float("nan")
    for routine in (laplace, svi, nuts, map_estimate):
        with pytest.raises(ValueError, match="observed site 'y' contains 1 non-finite"):
            routine(pyro_regression, X, y, **QUIET)

    def no_latent(y=None):
        pyro.sample("y", pdist.Normal(0.0, 1.0), obs=y)

    def discrete(y=None):
        z = pyro.sample("z", pdist.Bernoulli(0.5))
        pyro.sample("y", pdist.Normal(z, 1.0), obs=y)

    with pytest.raises(ValueError, match="has none"):
        svi(no_latent, torch.tensor(1.0), **QUIET)
    with pytest.raises(ValueError, match=r"\['z'\] are discrete"):
        laplace(discrete, torch.tensor(1.0), **QUIET)
    with pytest.raises(TypeError, match="rng_key must be an int seed for a Pyro program"):
        laplace(pyro_regression, X, Y, rng_key=jax.random.PRNGKey(0), **QUIET)
    with pytest.raises(ValueError, match="chain_method must be 'sequential'"):
        nuts(pyro_regression, X, Y, chain_method="vectorized", **QUIET)

    def float32_prior(X, y=None):
        w = pyro.sample("w", pdist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
        pyro.sample("y", pdist.Normal(X @ w, 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match="same dtype as the data"):
        laplace(float32_prior, X, Y, **QUIET)

    def nan_far_out(X, y=None):
        w = pyro.sample("w", pdist.Normal(torch.zeros((), dtype=X.dtype), 1.0))
        nan, zero = torch.tensor(float("nan"), dtype=X.dtype), torch.zeros((), dtype=X.dtype)
        pyro.factor("edge", torch.where(w > 5, nan, zero))  # a density that breaks down far out
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", pdist.Normal(w * X[:, 0], 1.0), obs=y)

    def far_guide(X, y=None):
        pyro.sample("w", pdist.Normal(pyro.param("w_loc", torch.tensor(10.0, dtype=X.dtype)), 0.1))

    with pytest.raises(ConvergenceError, match="non-finite at step 0 .*log_factor"):
        svi(nan_far_out, X, Y, guide=far_guide, num_steps=10, **QUIET)
