import math

import numpy as np
import pytest

from bayeskit.inference import Check, Result, diagnose, laplace, nuts, register_check
from bayeskit.inference._checks import energy_distance_test, khat_threshold
from bayeskit.models import data, examples


def _iid(rng, chains, draws):
    return Result(method="test", draws={"x": rng.normal(size=(chains, draws))})


def test_one_chain_of_iid_draws_reports_r_hat_as_not_applicable():
    report = diagnose(_iid(np.random.default_rng(0), 1, 2000))
    assert report["r_hat"].status == "ok" and math.isnan(report["r_hat"].value)
    assert "not applicable" in report["r_hat"].message
    assert report["ess_bulk"].value > 1500 and report.ok


def test_stuck_chains_fail_r_hat_and_ess():
    rng = np.random.default_rng(1)
    draws = np.cumsum(rng.normal(size=(4, 500)), axis=1) + np.arange(4)[:, None] * 5
    report = diagnose(Result(method="test", draws={"x": draws}))
    assert report["r_hat"].status == "fail" and report["ess_bulk"].status == "fail"
    assert not report.ok


def test_non_finite_draws_fail_rather_than_drop_out():
    draws = np.random.default_rng(2).normal(size=(2, 1000))
    draws[0, 3] = np.inf
    report = diagnose(Result(method="test", draws={"x": draws, "y": np.full((2, 1000), np.nan)}))
    assert report["finite_draws"].status == "fail" and report["finite_draws"].value == 2001
    assert "'x': 1" in report["finite_draws"].message and not report.ok
    good = Result(method="test", draws={"x": draws[:, 4:]})
    with pytest.raises(ValueError, match=r"reference\['x'\] contains 1 NaN or inf"):
        diagnose(good, reference=np.r_[np.nan, np.zeros(99)])
    with pytest.raises(ValueError, match=r"reference\['x'\] must have shape \(n, \*\(\)\) with n >= 1"):
        diagnose(good, reference=np.zeros(0))


def test_pareto_khat_separates_good_from_bad_approximations():
    rng = np.random.default_rng(2)
    z = rng.normal(size=4000)
    good = Result(
        method="t",
        draws={"x": z[None]},
        sample_stats={"log_p": (-0.5 * z**2)[None], "log_q": (-0.5 * z**2 / 1.1**2)[None]},
    )
    # a proposal five times narrower than the target: heavy-tailed importance ratios
    bad = Result(
        method="t",
        draws={"x": z[None]},
        sample_stats={"log_p": (-0.5 * (z / 5) ** 2)[None], "log_q": (-0.5 * z**2)[None]},
    )
    assert diagnose(good)["pareto_khat"].status == "ok"
    assert diagnose(bad)["pareto_khat"].status == "fail"
    assert khat_threshold(1000) == pytest.approx(2 / 3) and khat_threshold(10**8) == 0.7


def test_energy_distance_accepts_the_same_law_and_rejects_a_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(800, 2)), rng.normal(size=(800, 2))
    same, critical = energy_distance_test(x, y, rng=rng)
    assert same <= critical
    shifted, critical = energy_distance_test(x + 0.3, y, rng=rng)
    assert shifted > critical
    res = Result(method="t", draws={"x": x[None]})
    assert diagnose(res, reference=y)["reference"].status == "ok"
    assert diagnose(res, reference={"x": y + 0.5})["reference"].status == "fail"
    with pytest.raises(ValueError, match=r"reference\['x'\] must have shape"):
        diagnose(res, reference={"x": y[:, :1]})


def test_centred_eight_schools_gets_divergences_flagged():
    d = data.load("eight_schools")
    res = nuts(
        examples.eight_schools_centered,
        d["sigma"].astype(float),
        y=d["y"].astype(float),
        num_warmup=500,
        num_samples=500,
        progress=False,
    )
    report = diagnose(res)
    assert report["divergences"].status == "fail" and report["divergences"].value > 0
    assert not report.ok and not res.converged


def test_models_register_their_own_checks_found_through_attrs():
    class Toy:
        pass

    def toy_check(idata, context):
        return [Check("toy", "warn", 1.0, 0.0, "registered check ran")]

    register_check(Toy, toy_check)
    report = diagnose(Result(method="em", model=Toy(), params={"a": np.ones(2)}))
    assert report["toy"].message == "registered check ran"
    assert diagnose(Result(method="em", model=object(), params={"a": 1.0})).checks == []


def test_report_renders_as_text_and_html(tmp_path):
    res = _iid(np.random.default_rng(4), 2, 500)
    report = diagnose(res)
    text = str(report)
    assert "ess_bulk" in text and "r_hat" in text
    assert "<table" in report._repr_html_()
    page = report.to_html(tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page


def test_diagnose_refuses_other_types():
    with pytest.raises(TypeError, match="Result or an arviz.InferenceData"):
        diagnose({"x": 1})


def test_objective_trace_fails_an_unconverged_optimiser_and_reads_the_elbo_plateau():
    loss = np.linspace(10.0, 1.0, 50)
    assert diagnose(Result(method="map", trace={"loss": loss}, converged=False))["objective_trace"].status == "fail"
    assert diagnose(Result(method="map", trace={"loss": loss}, converged=True))["objective_trace"].status == "ok"
    rng = np.random.default_rng(6)
    flat = -100 + rng.normal(size=2000)
    rising = flat + np.linspace(0, 50, 2000)
    assert diagnose(Result(method="svi", trace={"elbo": flat}))["objective_trace"].status == "ok"
    assert diagnose(Result(method="svi", trace={"elbo": rising}))["objective_trace"].status == "warn"
    # the ELBO it reports is the mean of the last tenth (as svi's info["final_elbo"]), not one noisy step
    message = diagnose(Result(method="svi", trace={"elbo": flat}))["objective_trace"].message
    assert f"mean elbo over the last tenth {np.mean(flat[-200:]):.6g}" in message


def test_loo_matches_brute_force_leave_one_out_for_exact_and_approximate_draws():
    """Conjugate regression: the exact LOO predictive density is closed form. PSIS-LOO on
    NUTS draws and on Laplace draws reweighted by log p - log q must both reach it."""
    from scipy.stats import norm

    from bayeskit.inference._checks import _loo_from_approximation

    rng = np.random.default_rng(9)
    X = rng.normal(size=(50, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(size=50)
    exact = 0.0
    for i in range(50):
        keep = np.arange(50) != i
        mean, cov = examples.linear_regression_posterior(X[keep], y[keep])
        exact += norm.logpdf(y[i], X[i] @ mean, np.sqrt(1 + X[i] @ cov @ X[i]))

    def elpd(report):
        message = report["loo"].message
        return float(message.split("elpd ")[1].split(" ")[0])

    mcmc = nuts(examples.linear_regression, X, y=y, num_warmup=500, num_samples=1000, progress=False)
    approx = laplace(examples.linear_regression, X, y=y, num_samples=4000, progress=False)
    assert abs(elpd(diagnose(mcmc)) - exact) < 0.2
    assert abs(elpd(diagnose(approx)) - exact) < 0.2
    # a deliberately wrong proposal, twice too wide, is corrected by the weights
    z = rng.normal(size=(4000, 2))
    mean, cov = examples.linear_regression_posterior(X, y)
    chol = np.linalg.cholesky(cov)
    w = mean + 2.0 * z @ chol.T
    log_lik = norm.logpdf(y[None, :], w @ X.T, 1.0)
    log_p = norm.logpdf(w, 0, 1).sum(1) + log_lik.sum(1)
    log_q = -0.5 * np.sum(z**2, 1) - np.log(np.diag(2.0 * chol)).sum()  # up to a constant
    corrected, _, k = _loo_from_approximation(log_lik, log_p - log_q)
    assert abs(corrected - exact) < 0.3 and k.max() < 0.7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": ""}, "method must be"),
        ({"method": "test", "converged": "no"}, "converged must be a bool"),
        ({"method": "test", "params": None}, "params must be a dict"),
        ({"method": "test", "draws": [1.0]}, "draws must be a dict"),
    ],
)
def test_a_result_refuses_fields_of_the_wrong_kind(kwargs, message):
    with pytest.raises(TypeError, match=message):
        Result(**kwargs)
