"""robbins_monro and sgld against closed forms, NUTS, and held-out coverage."""

import math

import numpy as np
import pyro
import pytest
import torch

from bayeskit.inference import (
    ConvergenceError,
    Cyclical,
    RobbinsMonro,
    diagnose,
    nuts,
    predictive,
    robbins_monro,
    sgld,
)
from bayeskit.models import BayesianMLP, examples
from bayeskit.models.pyro_examples import linear_regression, logistic_regression


def logistic_regression_numpyro(X, y=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist

    w = numpyro.sample("w", ndist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", ndist.Bernoulli(logits=X @ w), obs=y)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 2))
    y = X @ np.array([0.5, -1.0]) + rng.normal(size=1000)
    mean, cov = examples.linear_regression_posterior(X, y)
    return torch.as_tensor(X), torch.as_tensor(y), mean, np.sqrt(np.diag(cov))


def _ess(res, name):
    return res.summary().filter(like=name, axis=0)["ess_bulk"].to_numpy()


def test_robbins_monro_reaches_the_map(regression):
    X, y, mean, sd = regression
    res = robbins_monro(linear_regression, X, y, num_steps=3000, batch_size=100, progress=False)
    assert res.method == "robbins_monro" and res.converged
    # the posterior mean is the MAP here; decaying steps leave the iterate within a few
    # hundredths of a posterior sd of it
    assert np.max(np.abs(res.params["w"] - mean) / sd) < 0.05
    assert res.trace["loss"].shape == (3000,) and res.trace["step_size"][0] > res.trace["step_size"][-1]


def test_sgld_matches_the_closed_form_posterior(regression):
    X, y, mean, sd = regression
    res = sgld(linear_regression, X, y, num_samples=1000, num_chains=2, thinning=5, num_warmup=500,
               batch_size=200, progress=False)  # fmt: skip
    draws = res.draws["w"].reshape(-1, 2)
    ess = _ess(res, "w")
    # Monte Carlo error from the effective sample size (4 standard errors), plus SGLD's
    # own bias: minibatch noise adds variance in the ratio diagnose reports
    assert np.all(np.abs(draws.mean(0) - mean) / sd < 4 / np.sqrt(ess))
    bias = max(res.info["gradient_noise_ratio"])
    assert bias < 0.2
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 / np.sqrt(2 * ess) + bias)
    assert res.draws["log_joint"].shape == (2, 1000)
    report = diagnose(res)
    assert report["robbins_monro_conditions"].status == "ok"
    assert report["gradient_noise"].status == "ok"


def test_sgld_logistic_regression_agrees_with_nuts():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 3))
    y = (rng.random(500) < 1 / (1 + np.exp(-X @ np.array([1.0, -0.5, 0.0])))).astype(float)
    reference = nuts(logistic_regression_numpyro, X, y=y, num_warmup=500, num_samples=1000, num_chains=2,
                     progress=False)  # fmt: skip
    ref = reference.draws["w"].reshape(-1, 3)
    res = sgld(logistic_regression, torch.as_tensor(X), torch.as_tensor(y), num_samples=1000, num_chains=2,
               thinning=5, num_warmup=500, batch_size=100, progress=False)  # fmt: skip
    draws = res.draws["w"].reshape(-1, 3)
    ess = _ess(res, "w")
    sd = ref.std(0)
    assert np.all(np.abs(draws.mean(0) - ref.mean(0)) / sd < 4 / np.sqrt(ess))
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 / np.sqrt(2 * ess) + max(res.info["gradient_noise_ratio"]))


def test_bnn_predictive_intervals_cover_held_out_data():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, size=600)
    y = np.sin(x) + 0.3 * rng.normal(size=600)
    train, test = slice(0, 400), slice(400, 600)
    net = BayesianMLP(1, hidden=(50,))
    res = sgld(net, x[train, None], y[train], num_samples=200, num_chains=2, thinning=10, num_warmup=2000,
               progress=False)  # fmt: skip
    draws = predictive(res, torch.as_tensor(x[test, None], dtype=torch.float32))["y"].reshape(-1, 200)
    lower, upper = np.quantile(draws, [0.05, 0.95], axis=0)
    coverage = np.mean((y[test] >= lower) & (y[test] <= upper))
    # 200 held-out points: the binomial standard error of a 90% coverage is 0.021
    assert abs(coverage - 0.9) < 0.065
    # the predictive mean is close to sin(x): its error is mostly the noise (sd 0.3)
    rmse = np.sqrt(np.mean((draws.mean(0) - y[test]) ** 2))
    assert rmse < 0.36, rmse
    report = diagnose(res)
    # chains are compared on what the network predicts, not on its weights
    assert res.info["diagnostic_sites"] == ["log_joint", "f_probe"]
    assert "f_probe" in report["r_hat"].message or "log_joint" in report["r_hat"].message


def test_defaults_fit_standardised_low_noise_data():
    """No step size given: on standardised data whose noise is a tenth of the signal,
    the MAP and the posterior mean follow the true function to within the noise, and
    the inferred noise comes down near its true value (plain SGD stalls at three times it)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=1000)
    y = np.sin(2 * x) + 0.1 * rng.normal(size=1000)
    X, y_std = ((x - x.mean()) / x.std())[:, None], (y - y.mean()) / y.std()
    truth, noise = (np.sin(2 * x) - y.mean()) / y.std(), 0.1 / y.std()
    net = BayesianMLP(1, hidden=(50,))
    inputs = torch.as_tensor(X, dtype=torch.float32)
    fit = robbins_monro(net, X, y_std, progress=False)
    f_map = net.predict({k: torch.as_tensor(v) for k, v in fit.params.items()}, inputs).numpy().squeeze()
    assert np.sqrt(np.mean((f_map - truth) ** 2)) < noise
    assert noise < fit.params["sigma"] < 1.6 * noise
    post = sgld(net, X, y_std, num_samples=200, num_chains=2, thinning=10, num_warmup=2000, progress=False)
    weights = {
        k: torch.as_tensor(v.reshape(400, *v.shape[2:]))
        for k, v in post.draws.items()
        if k in post.info["latent_sites"]
    }
    f_mean = net.predict(weights, inputs).numpy().reshape(400, -1).mean(0)
    assert np.sqrt(np.mean((f_mean - truth) ** 2)) < noise
    assert noise < post.draws["sigma"].mean() < 1.6 * noise


def test_same_seed_same_draws_and_user_state_untouched():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(100, 2)), rng.normal(size=100)
    net = BayesianMLP(2, hidden=(8,))
    pyro.get_param_store().clear()
    pyro.param("users_own", torch.ones(2))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = sgld(net, X, y, num_samples=20, num_chains=2, thinning=2, num_warmup=10, batch_size=20, rng_key=5,
                 progress=False)  # fmt: skip
    after = torch.rand(3)
    second = sgld(net, X, y, num_samples=20, num_chains=2, thinning=2, num_warmup=10, batch_size=20, rng_key=5,
                  progress=False)  # fmt: skip
    torch.testing.assert_close(after, expected)
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    for name in first.draws:
        np.testing.assert_array_equal(first.draws[name], second.draws[name])
    third = sgld(net, X, y, num_samples=20, num_chains=2, thinning=2, num_warmup=10, batch_size=20, rng_key=6,
                 progress=False)  # fmt: skip
    assert not np.array_equal(first.draws["sigma"], third.draws["sigma"])
    pyro.get_param_store().clear()


def test_rmsprop_preconditioning_fits_digits_classifier():
    from bayeskit.models import data

    d = data.load("digits")
    order = np.random.default_rng(0).permutation(len(d["target"]))
    X, y = d["images"].reshape(-1, 64)[order] / 16.0, d["target"][order]
    net = BayesianMLP(64, hidden=(32,), out_features=10, likelihood="categorical")
    res = robbins_monro(net, X[:1200], y[:1200], num_steps=1500, preconditioner="rmsprop", progress=False)
    weights = {k: torch.as_tensor(v) for k, v in res.params.items()}
    logits = net.predict(weights, torch.as_tensor(X[1200:], dtype=torch.float32))
    # one in twenty held-out digits wrong at most (multinomial logistic regression gets 0.978 on this split)
    assert np.mean(logits.argmax(-1).numpy() == y[1200:]) > 0.93


def test_schedules():
    with pytest.raises(ValueError, match=r"gamma must lie in \(0.5, 1\]"):
        RobbinsMonro(a=1.0, gamma=0.5)
    with pytest.raises(ValueError, match=r"gamma must lie in \(0.5, 1\]"):
        RobbinsMonro(a=1.0, gamma=1.2)
    cyclical = Cyclical(a=0.1, cycle_length=100)
    assert (
        cyclical(0) == pytest.approx(0.1)
        and cyclical(50) == pytest.approx(0.05)
        and cyclical(100) == pytest.approx(0.1)
    )
    rng = np.random.default_rng(4)
    X, y = torch.as_tensor(rng.normal(size=(200, 2))), torch.as_tensor(rng.normal(size=200))
    for step_size, kind in ((0.01, "constant"), (cyclical, "cyclical")):
        res = robbins_monro(linear_regression, X, y, num_steps=200, batch_size=50, step_size=step_size, progress=False)
        check = diagnose(res)["robbins_monro_conditions"]
        assert check.status == "warn" and kind in check.message
    # SGLD evaluates the schedule at every kept step at once, as an array
    res = sgld(linear_regression, X, y, num_samples=5, num_chains=1, thinning=2, num_warmup=5, batch_size=50,
               step_size=cyclical, progress=False)  # fmt: skip
    np.testing.assert_allclose(res.sample_stats["step_size"][0], [cyclical(t) for t in range(6, 15, 2)])


def test_bad_input():
    net = BayesianMLP(2, likelihood="categorical", out_features=3)
    X, y = np.zeros((10, 2)), np.zeros(10, int)
    with pytest.raises(ValueError, match="same number of rows|y must have shape"):
        robbins_monro(net, X, y[:9], progress=False)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 non-finite"):
        robbins_monro(net, bad, y, batch_size=5, progress=False)
    with pytest.raises(TypeError, match="X must be a numeric array or tensor, got NoneType"):
        robbins_monro(net, None, y, batch_size=5, progress=False)
    with pytest.raises(ValueError, match=r"class labels in \[0, 3\)"):
        sgld(net, X, np.full(10, 3), batch_size=5, progress=False)
    with pytest.raises(ValueError, match="batch_size must be at most the 10 data points, got 64"):
        robbins_monro(net, X, y, progress=False)
    with pytest.raises(ValueError, match="preconditioner"):
        sgld(net, X, y, batch_size=5, preconditioner="adam", progress=False)
    with pytest.raises(TypeError, match="step_size"):
        sgld(net, X, y, batch_size=5, step_size="big", progress=False)
    with pytest.raises(ValueError, match="plate named 'obs'"):
        robbins_monro(linear_regression, torch.zeros(10, 2), torch.zeros(10), batch_size=5, plate="obs", progress=False)


def test_nan_loss_stops_with_the_step():
    rng = np.random.default_rng(5)
    X, y = torch.as_tensor(rng.normal(size=(100, 2))), torch.as_tensor(100 * rng.normal(size=100))
    with pytest.raises(ConvergenceError, match=r"non-finite at step \d+ of 500"):
        robbins_monro(
            linear_regression, X, y, num_steps=500, batch_size=10, step_size=50.0, preconditioner=None, progress=False
        )
    # the network's hand-written gradient too: a noise scale driven to zero stops the run
    with pytest.raises(ConvergenceError, match=r"non-finite at step \d+ of 500"):
        robbins_monro(
            BayesianMLP(2, (8,)),
            X,
            y / 100,
            num_steps=500,
            batch_size=10,
            step_size=50.0,
            preconditioner=None,
            progress=False,
        )


def test_minibatch_scaling_is_unbiased(regression):
    """The plate sites are scaled by N / B and the prior is not: averaged over every
    batch of an epoch, the estimate is the full log joint."""
    from bayeskit.inference._sg_target import bind_target

    X, y, _, _ = regression
    target = bind_target(linear_regression, X, y, plate="data", routine="test")
    position = torch.tensor([0.3, -0.2], dtype=torch.float64)
    full = float(target.log_posterior(position, X, y, likelihood_scale=1.0, jacobian=False))
    batches = [
        float(target.log_posterior(position, X[i : i + 100], y[i : i + 100], likelihood_scale=10.0, jacobian=False))
        for i in range(0, 1000, 100)
    ]
    assert math.isclose(np.mean(batches), full, rel_tol=1e-12)
