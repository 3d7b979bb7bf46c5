"""fit_glm's start from a row subsample (method="subsample", chosen by "auto" for many rows)
reaches the answer of the plain Newton path: the same coefficients and standard errors,
with weights, offsets and the l2 prior respected."""

import numpy as np
import pytest
import statsmodels.api as sm

from bayeskit.inference import fit_glm
from bayeskit.models import GLM

N, P = 64_000, 6  # above SUBSAMPLE_MIN_ROWS, so "auto" starts from the subsample


def _coefficients(res):
    return np.concatenate([[res.params["intercept"]], res.params["weights"]])


def _standard_errors(res):
    se = res.info["standard_errors"]
    return np.concatenate([[se["intercept"]], se["weights"]])


def _assert_same_fit(fast, plain):
    assert fast.info["solver"] == "subsample" and plain.info["solver"] == "newton"
    assert fast.converged and plain.converged
    np.testing.assert_allclose(_coefficients(fast), _coefficients(plain), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_standard_errors(fast), _standard_errors(plain), rtol=1e-7)
    np.testing.assert_allclose(fast.info["deviance"], plain.info["deviance"], rtol=1e-10)


@pytest.fixture(scope="module")
def design():
    rng = np.random.default_rng(11)
    return rng.normal(size=(N, P)) / np.sqrt(P), rng.normal(scale=0.6, size=P)


@pytest.mark.parametrize("family", ["poisson", "bernoulli"])
def test_subsample_start_gives_the_newton_answer(design, family):
    X, beta = design
    rng = np.random.default_rng(12)
    eta = -0.7 + X @ beta
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    fast = fit_glm(GLM(family), X, y, num_samples=20, progress=False)  # auto
    plain = fit_glm(GLM(family), X, y, num_samples=20, method="newton", progress=False)
    _assert_same_fit(fast, plain)
    assert fast.info["n_iter"] <= 3  # full-data Newton steps, against about five from the intercept
    reference = sm.families.Poisson() if family == "poisson" else sm.families.Binomial()
    ref = sm.GLM(y, sm.add_constant(X), family=reference).fit(tol=1e-12)
    np.testing.assert_allclose(_coefficients(fast), ref.params, rtol=1e-6)
    np.testing.assert_allclose(_standard_errors(fast), ref.bse, rtol=1e-5)
    # the subsample is fixed, so the fit is reproducible to the bit
    again = fit_glm(GLM(family), X, y, num_samples=20, progress=False)
    np.testing.assert_array_equal(_coefficients(again), _coefficients(fast))


def test_subsample_start_respects_offset_weights_and_l2(design):
    X, beta = design
    rng = np.random.default_rng(13)
    offset = rng.normal(scale=0.3, size=N)
    weights = rng.integers(0, 3, size=N).astype(float)  # zeros leave rows out
    y = rng.poisson(np.exp(-0.5 + X @ beta + offset))
    kw = dict(offset=offset, weights=weights, num_samples=20, progress=False)
    fast = fit_glm(GLM("poisson"), X, y, **kw)
    _assert_same_fit(fast, fit_glm(GLM("poisson"), X, y, method="newton", **kw))
    ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset, freq_weights=weights)
    ref = ref.fit(tol=1e-12)
    np.testing.assert_allclose(_coefficients(fast), ref.params, rtol=1e-6)
    np.testing.assert_allclose(fast.info["deviance"], ref.deviance, rtol=1e-8)
    # frequency weights are repeated rows
    rows = np.repeat(np.arange(N), weights.astype(int))
    repeated = fit_glm(GLM("poisson"), X[rows], y[rows], offset=offset[rows], num_samples=20, progress=False)
    np.testing.assert_allclose(_coefficients(fast), _coefficients(repeated), rtol=1e-8, atol=1e-12)
    # the prior: the same MAP on both paths, shrunk towards zero
    penalised = fit_glm(GLM("poisson"), X, y, l2=2000.0, **kw)
    _assert_same_fit(penalised, fit_glm(GLM("poisson"), X, y, l2=2000.0, method="newton", **kw))
    assert np.linalg.norm(penalised.params["weights"]) < 0.9 * np.linalg.norm(fast.params["weights"])


def test_rare_events_whose_subsample_has_almost_none(design):
    X, beta = design
    y = np.random.default_rng(14).binomial(1, 1 / (1 + np.exp(-(-9.0 + 2 * X @ beta))))
    assert 10 <= y.sum() <= 60  # a 1/16 subsample holds a few events at most
    fast = fit_glm(GLM("bernoulli"), X, y, l2=1.0, num_samples=20, progress=False)
    _assert_same_fit(fast, fit_glm(GLM("bernoulli"), X, y, l2=1.0, num_samples=20, method="newton", progress=False))


def test_auto_keeps_newton_for_few_rows_and_for_the_gaussian_family(design):
    X, beta = design
    rng = np.random.default_rng(15)
    y = X @ beta + rng.normal(size=N)
    assert fit_glm(GLM("gaussian"), X, y, num_samples=20, progress=False).info["solver"] == "newton"
    small = fit_glm(GLM("poisson"), X[:5000], rng.poisson(1.0, size=5000), num_samples=20, progress=False)
    assert small.info["solver"] == "newton"
