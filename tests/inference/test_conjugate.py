"""Generic routines against the closed-form posterior of a conjugate linear regression."""

import numpy as np

from bayeskit.inference import diagnose, laplace, map_estimate, nuts, svi
from bayeskit.models import examples


def _sd(cov):
    return np.sqrt(np.diag(cov))


def test_laplace_equals_the_closed_form(regression_data):
    X, y, mean, cov = regression_data
    res = laplace(examples.linear_regression, X, y=y, num_samples=4000, progress=False)
    np.testing.assert_allclose(res.params["w"], mean, atol=1e-5)
    draws = res.draws["w"].reshape(-1, 10)
    se = _sd(cov) / np.sqrt(4000)
    assert np.all(np.abs(draws.mean(0) - mean) < 4.5 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=5 * np.max(_sd(cov)) ** 2 * np.sqrt(2 / 4000))
    assert res.converged and res.info["hessian_positive_definite"]
    report = diagnose(res)
    assert report.ok, str(report)
    assert report["pareto_khat"].value < 0.5


def test_map_equals_the_posterior_mean_of_a_gaussian_posterior(regression_data):
    X, y, mean, _ = regression_data
    res = map_estimate(examples.linear_regression, X, y=y, progress=False)
    np.testing.assert_allclose(res.params["w"], mean, atol=1e-5)
    assert res.method == "map" and res.converged and res.draws == {}


def test_svi_mvn_converges_to_the_optimum_of_its_family(regression_data):
    """The full-rank family contains the exact posterior, so its optimum is the posterior.
    A constant Adam step leaves the answer at a noise floor; ours must not."""
    X, y, mean, cov = regression_data
    res = svi(examples.linear_regression, X, y=y, guide="mvn", num_samples=4000, progress=False)
    sd = _sd(cov)
    loc = np.asarray(res.info["guide_params"]["loc"])
    assert np.max(np.abs(loc - mean) / sd) < 0.1
    draws = res.draws["w"].reshape(-1, 10)
    assert np.max(np.abs(draws.mean(0) - mean) / sd) < 0.1
    assert np.max(np.abs(draws.std(0) / sd - 1)) < 0.08
    report = diagnose(res)
    assert report.ok, str(report)
    assert report["ess_bulk"].value > 400


def test_svi_normal_family_matches_the_marginals_of_a_near_diagonal_posterior(regression_data):
    X, y, mean, cov = regression_data
    res = svi(examples.linear_regression, X, y=y, guide="normal", num_samples=4000, progress=False)
    # mean-field optimum: mean exact, sd = 1/sqrt(diag(precision))
    mf_sd = 1 / np.sqrt(np.diag(np.linalg.inv(cov)))
    draws = res.draws["w"].reshape(-1, 10)
    assert np.max(np.abs(draws.mean(0) - mean) / mf_sd) < 0.1
    assert np.max(np.abs(draws.std(0) / mf_sd - 1)) < 0.08


def test_svi_delta_is_the_map(regression_data):
    X, y, mean, _ = regression_data
    res = svi(examples.linear_regression, X, y=y, guide="delta", progress=False)
    np.testing.assert_allclose(res.params["w"], mean, atol=1e-3 * np.max(np.abs(mean)))
    assert res.draws == {}


def test_nuts_matches_the_closed_form_within_monte_carlo_error(regression_data):
    X, y, mean, cov = regression_data
    res = nuts(examples.linear_regression, X, y=y, num_warmup=500, num_samples=1000, num_chains=2, progress=False)
    report = diagnose(res)
    assert report.ok, str(report)
    assert report["r_hat"].value < 1.01
    draws = res.draws["w"].reshape(-1, 10)
    ess = report["ess_bulk"].value
    assert np.all(np.abs(draws.mean(0) - mean) < 4.5 * _sd(cov) / np.sqrt(ess))
    assert np.max(np.abs(draws.std(0) / _sd(cov) - 1)) < 0.1
    assert res.draws["w"].shape == (2, 1000, 10)
    assert res.log_likelihood["y"].shape == (2, 1000, 1000)


def test_svi_lowrank_recovers_a_low_rank_plus_diagonal_covariance():
    """A target inside the low-rank family: N(m, diag(d^2) + w w^T) with rank one."""
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(0)
    w, d, m = rng.normal(size=(8, 1)), rng.uniform(0.2, 1.0, size=8), rng.normal(size=8)
    cov = np.diag(d**2) + w @ w.T

    def model():
        numpyro.sample("x", dist.MultivariateNormal(m, cov))

    res = svi(model, guide="lowrank", rank=1, num_samples=4000, progress=False)
    params = {k: np.asarray(v) for k, v in res.info["guide_params"].items()}
    fitted = params["cov_factor"] @ params["cov_factor"].T + np.diag(np.logaddexp(0, params["raw_diag"]) ** 2)
    assert np.linalg.norm(fitted - cov) / np.linalg.norm(cov) < 0.1
    assert np.max(np.abs(params["loc"] - m) / np.sqrt(np.diag(cov))) < 0.1
    assert diagnose(res).ok


def test_svi_with_a_guide_program_reaches_the_closed_form():
    """Normal mean with known noise: the posterior is N(m, s^2), inside the guide's family."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    y = np.random.default_rng(5).normal(1.5, 2.0, size=20)
    precision = 1 / 3.0**2 + len(y) / 2.0**2
    post_mean, post_sd = (y.sum() / 2.0**2) / precision, precision**-0.5

    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
        numpyro.deterministic("mu_squared", mu**2)
        with numpyro.plate("data", len(y)):
            numpyro.sample("y", dist.Normal(mu, 2.0), obs=y)

    def guide(y=None):
        loc = numpyro.param("loc", 0.0)
        scale = numpyro.param("scale", 1.0, constraint=constraints.positive)
        numpyro.sample("mu", dist.Normal(loc, scale))

    res = svi(model, y=y, guide=guide, num_samples=4000, progress=False)
    fitted = res.info["guide_params"]
    assert abs(fitted["loc"] - post_mean) < 0.05 * post_sd
    assert abs(fitted["scale"] / post_sd - 1) < 0.05
    assert abs(res.params["mu"] - post_mean) < 0.1 * post_sd  # the mean of the draws
    np.testing.assert_allclose(res.draws["mu_squared"], res.draws["mu"] ** 2)
    assert res.draws["mu"].shape == (1, 4000)
    assert diagnose(res).ok
