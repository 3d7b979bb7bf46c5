"""Real data whose posterior is nearly Gaussian (kidiq, from posteriordb): the Gaussian
approximations must agree with NUTS, and the reference check must tell a second NUTS
run apart from a shifted one."""

import pytest

from bayeskit.inference import diagnose, laplace, nuts, svi
from bayeskit.models import data, examples

SITES = ("intercept", "beta_iq", "beta_hs", "sigma")


@pytest.fixture(scope="module")
def kidiq():
    d = data.load("kidiq")
    args = (d["mom_iq"].astype(float), d["mom_hs"].astype(float))
    kwargs = {"kid_score": d["kid_score"].astype(float)}
    reference = nuts(examples.kidiq_regression, *args, num_warmup=500, num_samples=1000, progress=False, **kwargs)
    assert diagnose(reference).ok
    return args, kwargs, reference


def test_reference_check_accepts_another_nuts_run_and_rejects_a_shift(kidiq):
    args, kwargs, reference = kidiq
    again = nuts(
        examples.kidiq_regression, *args, num_warmup=500, num_samples=1000, rng_key=5, progress=False, **kwargs
    )
    assert diagnose(again, reference=reference)["reference"].status == "ok"
    shifted = {k: v.reshape(-1) + 0.3 * v.std() for k, v in reference.draws.items()}
    assert diagnose(again, reference=shifted)["reference"].status == "fail"


@pytest.mark.parametrize(
    "fit",
    [
        lambda *a, **k: laplace(examples.kidiq_regression, *a, num_samples=4000, progress=False, **k),
        lambda *a, **k: svi(examples.kidiq_regression, *a, guide="mvn", num_samples=4000, progress=False, **k),
    ],
    ids=["laplace", "svi_mvn"],
)
def test_gaussian_approximations_match_nuts_on_kidiq(kidiq, fit):
    args, kwargs, reference = kidiq
    res = fit(*args, **kwargs)
    report = diagnose(res)
    assert report.ok, str(report)
    assert report["pareto_khat"].value < 0.5
    for site in SITES:
        ref = reference.draws[site].ravel()
        # Monte Carlo error of the difference of means is about 0.03 sd here
        assert abs(res.draws[site].mean() - ref.mean()) < 0.2 * ref.std(), site
        assert abs(res.draws[site].std() / ref.std() - 1) < 0.1, site


def test_mean_field_flags_itself_on_correlated_coefficients(kidiq):
    """The intercept and the high-school coefficient are strongly correlated: the
    diagonal family cannot represent that, and k-hat says so."""
    args, kwargs, _ = kidiq
    res = svi(examples.kidiq_regression, *args, guide="normal", progress=False, **kwargs)
    assert diagnose(res)["pareto_khat"].status == "fail"
