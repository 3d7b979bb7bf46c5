"""fit_glm against statsmodels (the accepted reference for GLMs), recovery of a simulated
coupled population, and the time-rescaling test's power and size."""

import dataclasses

import numpy as np
import pytest
import statsmodels.api as sm

from bayeskit.inference import diagnose, fit_glm, laplace, map_estimate, nuts, svi, time_rescaling_test
from bayeskit.models import GLM, LNP, PopulationGLM, examples
from bayeskit.models._spikes import lagged


def _coefficients(res):
    return np.concatenate([[res.params["intercept"]], res.params["weights"]])


@pytest.fixture(scope="module")
def poisson_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 6))
    y = rng.poisson(np.exp(0.3 + X @ rng.normal(scale=0.3, size=6)))
    return X, y


def test_poisson_equals_statsmodels_with_offset_and_weights(poisson_data):
    X, y = poisson_data
    rng = np.random.default_rng(1)
    exposure = rng.uniform(0.5, 2.0, size=y.size)
    weights = rng.integers(1, 4, size=y.size).astype(float)
    res = fit_glm(GLM("poisson"), X, y, offset=np.log(exposure), weights=weights, progress=False)
    ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=np.log(exposure),
                 freq_weights=weights).fit(tol=1e-12)  # fmt: skip
    np.testing.assert_allclose(_coefficients(res), ref.params, rtol=1e-5)
    np.testing.assert_allclose(res.info["deviance"], ref.deviance, rtol=1e-8)
    np.testing.assert_allclose(res.info["null_deviance"], ref.null_deviance, rtol=1e-8)
    np.testing.assert_allclose(res.info["log_likelihood"], ref.llf, rtol=1e-8)


@pytest.mark.parametrize("family", ["poisson", "bernoulli"])
def test_lbfgs_start_reaches_the_newton_answer_with_many_coefficients(family):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 60)) / np.sqrt(60)
    eta = -0.5 + X @ rng.normal(scale=0.5, size=60)
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    newton = fit_glm(GLM(family), X, y, method="newton", progress=False)
    lbfgs = fit_glm(GLM(family), X, y, progress=False)  # auto: 61 coefficients
    assert lbfgs.info["solver"] == "lbfgs" and newton.info["solver"] == "newton"
    assert lbfgs.info["n_iter"] < newton.info["n_iter"]
    np.testing.assert_allclose(_coefficients(lbfgs), _coefficients(newton), rtol=1e-7, atol=1e-9)
    ref = sm.GLM(
        y, sm.add_constant(X), family=getattr(sm.families, family.title() if family == "poisson" else "Binomial")()
    ).fit(tol=1e-12)
    np.testing.assert_allclose(_coefficients(lbfgs), ref.params, rtol=1e-5, atol=1e-8)


def test_randhie_counts_equal_statsmodels():
    data = sm.datasets.randhie.load_pandas()
    X, y = data.exog.to_numpy(float), data.endog.to_numpy(float)
    res = fit_glm(GLM("poisson"), X, y, progress=False)
    ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit(tol=1e-12)
    np.testing.assert_allclose(_coefficients(res), ref.params, rtol=1e-5)
    se = np.concatenate([[res.info["standard_errors"]["intercept"]], res.info["standard_errors"]["weights"]])
    np.testing.assert_allclose(se, ref.bse, rtol=1e-6)
    table = res.summary()
    np.testing.assert_allclose(table["se"].to_numpy(), ref.bse, rtol=1e-6)
    np.testing.assert_allclose(table["lower_95%"].to_numpy(), ref.conf_int()[:, 0], rtol=1e-5, atol=1e-8)


def test_bernoulli_equals_logit_and_laplace_sd_match_standard_errors():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 4))
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X @ np.array([1.0, -0.5, 0.25, 0.0]) - 0.3)))).astype(float)
    res = fit_glm(GLM("bernoulli"), X, y, num_samples=4000, progress=False)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(_coefficients(res), ref.params, rtol=1e-5)
    sd = np.concatenate([[res.draws["intercept"].std()], res.draws["weights"].reshape(-1, 4).std(0)])
    np.testing.assert_allclose(sd, ref.bse, rtol=0.15)
    assert diagnose(res).ok


@pytest.mark.parametrize("family", ["gaussian", "negative_binomial"])
def test_other_families_equal_statsmodels(family):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 3))
    eta = 0.5 + X @ np.array([0.4, -0.3, 0.2])
    if family == "gaussian":
        y, ref_family, model = eta + rng.normal(size=2000), sm.families.Gaussian(), GLM("gaussian")
    else:
        y = rng.negative_binomial(2, 2 / (2 + np.exp(eta)))
        ref_family, model = sm.families.NegativeBinomial(alpha=0.5), GLM("negative_binomial", alpha=0.5)
    res = fit_glm(model, X, y, progress=False)
    ref = sm.GLM(y, sm.add_constant(X), family=ref_family).fit(tol=1e-12)
    np.testing.assert_allclose(_coefficients(res), ref.params, rtol=1e-5)
    # the Laplace posterior's precision is the observed information; statsmodels' default
    # standard errors use the expected one, which differs for the non-canonical log link
    observed = np.sqrt(np.diag(np.linalg.inv(-ref.model.hessian(ref.params, observed=True))))
    se = np.concatenate([[res.info["standard_errors"]["intercept"]], res.info["standard_errors"]["weights"]])
    np.testing.assert_allclose(se, ref.bse if family == "gaussian" else observed, rtol=1e-5)
    np.testing.assert_allclose(res.info["log_likelihood"], ref.llf, rtol=1e-8)


def test_l2_is_the_gaussian_prior_and_matches_sklearn(poisson_data):
    from sklearn.linear_model import PoissonRegressor

    X, y = poisson_data
    alpha = 0.05
    res = fit_glm(GLM("poisson"), X, y, l2=alpha * y.size, progress=False)
    ref = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(res.params["weights"], ref.coef_, rtol=1e-5)
    np.testing.assert_allclose(res.params["intercept"], ref.intercept_, rtol=1e-6)


@pytest.mark.parametrize("family", ["poisson", "bernoulli"])
def test_generic_routines_on_the_glm_program_agree_with_fit_glm(family):
    # with flat priors the program's mode is the MLE and its Laplace covariance the inverse Hessian
    rng = np.random.default_rng(6)
    X = rng.normal(size=(800, 3))
    eta = 0.2 + X @ np.array([0.5, -0.3, 0.2])
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    model = GLM(family)
    reference = fit_glm(model, X, y, progress=False)
    se = np.asarray(reference.info["standard_errors"]["weights"])
    mode = map_estimate(model, X, y, progress=False)
    np.testing.assert_allclose(mode.params["weights"], reference.params["weights"], atol=1e-5)
    approx = laplace(model, X, y, num_samples=4000, progress=False)
    draws = approx.draws["weights"].reshape(-1, 3)
    assert np.all(np.abs(draws.mean(0) - reference.params["weights"]) < 0.1 * se)
    np.testing.assert_allclose(draws.std(0), se, rtol=0.08)
    fitted = svi(model, X, y, guide="mvn", num_samples=4000, progress=False)
    draws = fitted.draws["weights"].reshape(-1, 3)
    assert np.all(np.abs(draws.mean(0) - reference.params["weights"]) < 0.2 * se)
    np.testing.assert_allclose(draws.std(0), se, rtol=0.15)


def test_glm_program_under_nuts_agrees_with_the_laplace_posterior():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 2))
    y = rng.poisson(np.exp(0.2 + X @ np.array([0.5, -0.3])))
    laplace = fit_glm(GLM("poisson"), X, y, progress=False)
    mcmc = nuts(GLM("poisson"), X, y, num_warmup=300, num_samples=500, num_chains=2, progress=False)
    draws = mcmc.draws["weights"].reshape(-1, 2)
    se = np.asarray(laplace.info["standard_errors"]["weights"])
    assert np.all(np.abs(draws.mean(0) - laplace.params["weights"]) < 0.2 * se)
    np.testing.assert_allclose(draws.std(0), se, rtol=0.15)


def test_perfect_separation_is_reported_not_converged():
    X = np.linspace(-1, 1, 50)[:, None]
    y = (X[:, 0] > 0).astype(float)
    with pytest.warns(RuntimeWarning, match="perfectly separated"):
        res = fit_glm(GLM("bernoulli"), X, y, progress=False)
    assert not res.converged
    assert fit_glm(GLM("bernoulli"), X, y, l2=1.0, progress=False).converged  # a finite MAP


def test_bad_input_is_named():
    X = np.ones((5, 1)) * np.arange(5)[:, None]
    with pytest.raises(ValueError, match="non-negative integer"):
        fit_glm(GLM("poisson"), X, [0, 1, -1, 2, 0], progress=False)
    with pytest.raises(ValueError, match="non-negative integer"):
        fit_glm(GLM("poisson"), X, [0, 1, 0.5, 2, 0], progress=False)
    with pytest.raises(ValueError, match="y must be finite"):
        fit_glm(GLM("poisson"), X, [0, 1, np.nan, 2, 0], progress=False)
    with pytest.raises(TypeError, match="y must be an array of responses, got None"):
        fit_glm(GLM("poisson"), X, None, progress=False)
    with pytest.raises(ValueError, match="y must have shape"):
        fit_glm(GLM("poisson"), X, [0, 1, 2], progress=False)
    with pytest.raises(ValueError, match="0/1"):
        fit_glm(GLM("bernoulli"), X, [0, 1, 2, 1, 0], progress=False)
    with pytest.raises(ValueError, match="X must be finite"):
        fit_glm(GLM("poisson"), np.full((5, 1), np.inf), [0, 1, 1, 2, 0], progress=False)
    with pytest.raises(ValueError, match="every response is 0"):
        fit_glm(GLM("poisson"), X, np.zeros(5), progress=False)
    with pytest.raises(ValueError, match="offset must be"):
        fit_glm(GLM("poisson"), X, [0, 1, 1, 2, 0], offset=np.zeros(4), progress=False)
    with pytest.raises(ValueError, match="l2 must be"):
        fit_glm(GLM("poisson"), X, [0, 1, 1, 2, 0], l2=-1.0, progress=False)
    with pytest.raises(ValueError, match="link"):
        GLM("bernoulli", link="log")


@pytest.fixture(scope="module")
def population():
    sim = examples.retinal_population(150_000)
    return sim, fit_glm(sim.model, sim.stimulus, sim.spikes, progress=False)


def test_population_filters_are_recovered(population):
    sim, res = population
    truth = sim.model.filters(sim.truth)
    assert res.converged
    for name in ("stimulus_filter", "coupling_filters"):
        for i in range(3):
            r = np.corrcoef(res.params[name][i].ravel(), truth[name][i].ravel())[0, 1]
            assert r > 0.9, (name, i, r)
    # the truth lies inside the Laplace posterior's bands at most lags
    draws = res.draws["coupling_filters"][0]
    low, high = np.quantile(draws, [0.005, 0.995], axis=0)
    inside = (truth["coupling_filters"] >= low) & (truth["coupling_filters"] <= high)
    assert inside.mean() > 0.9


def test_time_rescaling_accepts_the_fitted_model_and_rejects_one_without_history(population):
    sim, res = population
    assert res.info["time_rescaling"]["p_value"] > 0.01
    fresh = sim.model.simulate(res.params, sim.stimulus, rng_key=2)
    assert time_rescaling_test(res, sim.stimulus, fresh, rng_key=3).p_value > 0.01
    memoryless = PopulationGLM(sim.model.stimulus_basis, None, dt=sim.model.dt)
    memoryless = fit_glm(memoryless, sim.stimulus, sim.spikes, progress=False)
    assert memoryless.info["time_rescaling"]["p_value"] < 1e-6
    assert any(c.name == "time_rescaling" and c.status == "fail" for c in diagnose(memoryless).checks)


def test_time_rescaling_checks_the_recording_it_is_given(population):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    fit = fit_glm(GLM("poisson"), X, y, progress=False)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="y must be finite"):  # not dropped as a bin without a spike
        time_rescaling_test(fit, X, bad)
    bad[3] = -3
    with pytest.raises(ValueError, match="non-negative integer"):
        time_rescaling_test(fit, X, bad)
    with pytest.raises(ValueError, match="y must have shape"):
        time_rescaling_test(fit, X, y[:-1])
    with pytest.raises(ValueError, match="X has 1 columns, but the fit has 2 weights"):
        time_rescaling_test(fit, X[:, :1], y)
    sim, res = population
    with pytest.raises(ValueError, match="params are for 3 neurons, but spikes has 2 columns"):
        time_rescaling_test(res, sim.stimulus[:1000], sim.spikes[:1000, :2])


def test_uncoupled_population_holds_cross_couplings_at_zero(population):
    sim, _ = population
    uncoupled = dataclasses.replace(sim.model, coupling=False)
    res = fit_glm(uncoupled, sim.stimulus[:40_000], sim.spikes[:40_000], num_samples=50, progress=False)
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.all(res.params["coupling_weights"][off_diagonal] == 0)
    assert np.all(res.draws["coupling_weights"][0][:, off_diagonal] == 0)
    assert np.all(res.params["coupling_weights"][np.eye(3, dtype=bool)] != 0)


def test_lnp_maximum_likelihood_filter_and_softplus():
    rng = np.random.default_rng(7)
    stimulus = rng.normal(size=(40_000, 2))
    k = np.stack([np.exp(-np.arange(8) / 2), -0.5 * np.exp(-np.arange(8) / 3)], axis=1) * 0.4
    eta = -1.5 + np.einsum("tld,ld->t", lagged(stimulus, 8), k)
    res = fit_glm(LNP(filter_length=8), stimulus, rng.poisson(np.exp(eta)), progress=False)
    se = np.asarray(res.info["standard_errors"]["filter"])
    assert np.max(np.abs(res.params["filter"] - k) / se) < 4.5
    rate = np.log1p(np.exp(eta + 1.0))
    soft = fit_glm(LNP(filter_length=8, nonlinearity="softplus"), stimulus, rng.poisson(rate), progress=False)
    assert np.corrcoef(soft.params["filter"].ravel(), k.ravel())[0, 1] > 0.95
