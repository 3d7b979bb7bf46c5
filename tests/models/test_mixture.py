"""GaussianMixture's densities against scikit-learn and closed forms."""

import jax
import numpy as np
import pytest
from numpyro import handlers
from sklearn.mixture import GaussianMixture as SklearnMixture

from bayeskit.models import GaussianMixture

TYPES = ("full", "diag", "spherical", "tied")


def _as_full(kind, covariances, k, d):
    if kind == "full":
        return covariances
    if kind == "tied":
        return np.broadcast_to(covariances, (k, d, d)).copy()
    variances = covariances if kind == "diag" else np.repeat(covariances[:, None], d, axis=1)
    return variances[:, :, None] * np.eye(d)


@pytest.fixture(scope="module", params=TYPES)
def fitted_sklearn(request, iris):
    kind = request.param
    sk = SklearnMixture(3, covariance_type=kind, random_state=0).fit(iris)
    params = {"weights": sk.weights_, "means": sk.means_, "covariances": _as_full(kind, sk.covariances_, 3, 4)}
    return kind, sk, params


def test_log_prob_and_responsibilities_equal_sklearn(fitted_sklearn, iris):
    kind, sk, params = fitted_sklearn
    gmm = GaussianMixture(3, kind)
    np.testing.assert_allclose(gmm.log_prob(params, iris), sk.score_samples(iris), rtol=0, atol=1e-6)
    np.testing.assert_allclose(gmm.responsibilities(params, iris), sk.predict_proba(iris), atol=1e-6)
    np.testing.assert_array_equal(gmm.predict(params, iris), sk.predict(iris))
    assert gmm.bic(params, iris) == pytest.approx(sk.bic(iris), rel=1e-9)
    assert gmm.aic(params, iris) == pytest.approx(sk.aic(iris), rel=1e-9)


def test_log_prob_far_from_the_origin_is_exact():
    # the expanded Mahalanobis form is computed in a centred frame; data around 1e6 still matches
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(size=(50, 2))
    params = {"weights": np.array([1.0]), "means": np.full((1, 2), 1e6), "covariances": np.eye(2)[None]}
    expected = -np.log(2 * np.pi) - 0.5 * np.sum((x - 1e6) ** 2, axis=1)
    np.testing.assert_allclose(GaussianMixture(1).log_prob(params, x), expected, atol=1e-8)


def test_sample_has_the_mixture_moments(three_clusters):
    _, truth = three_clusters
    draws = GaussianMixture(3).sample(truth, 200_000, rng_key=1)
    w, m, c = truth["weights"], truth["means"], truth["covariances"]
    mean = w @ m
    cov = np.einsum("k,kde->de", w, c + m[:, :, None] * m[:, None, :]) - np.outer(mean, mean)
    n = len(draws)
    # four standard errors of the sample mean and of each sample covariance entry
    mean_se = np.sqrt(np.diag(cov) / n)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * mean_se)
    assert np.all(np.abs(np.cov(draws.T) - cov) < 4 * cov_se)


def test_program_likelihood_is_the_mixture_density(iris):
    x = (iris - iris.mean(0)) / iris.std(0)
    gmm = GaussianMixture(2)

    @jax.jit
    def simulate(x):
        trace = handlers.trace(handlers.seed(gmm, 0)).get_trace(x)
        values = {name: trace[name]["value"] for name in ("weights", "means", "covariances")}
        return values, trace["x"]["fn"].log_prob(x)

    values, site_log_prob = simulate(x)
    params = {name: np.asarray(value) for name, value in values.items()}
    np.testing.assert_allclose(site_log_prob, gmm.log_prob(params, x), atol=1e-8)
    assert np.all(np.diff(params["means"][:, 0]) > 0)  # the ordered first coordinate


def test_program_values_put_the_program_at_the_given_parameters(fitted_sklearn, iris):
    """Substituted into the program, the site values give back the parameters, with the
    components in the program's order (increasing first mean coordinate)."""
    kind, _, params = fitted_sklearn
    gmm = GaussianMixture(3, covariance_type=kind)
    values = gmm.program_values(params)
    trace = handlers.trace(handlers.substitute(handlers.seed(gmm, 0), data=values)).get_trace(iris)
    order = np.argsort(params["means"][:, 0])
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(trace[name]["value"], params[name][order], rtol=1e-10, atol=1e-12)
    for name, value in values.items():  # every value lies in its site's support
        assert bool(np.all(trace[name]["fn"].support(value))), name


@pytest.mark.parametrize(
    "params, message",
    [
        ({"weights": [0.5, 0.5], "means": np.zeros((2, 2))}, "dict with"),
        ({"weights": [0.5, 0.5], "mean": np.zeros((2, 2)), "cov": np.eye(2)}, "dict with"),
        ({"weights": [0.5, 0.6], "means": np.zeros((2, 2)), "covariances": np.stack([np.eye(2)] * 2)}, "sum to 1"),
        ({"weights": [0.5, 0.5], "means": np.zeros((3, 2)), "covariances": np.stack([np.eye(2)] * 2)}, "means"),
        ({"weights": [0.5, 0.5], "means": np.zeros((2, 2)), "covariances": -np.stack([np.eye(2)] * 2)}, "positive"),
        ({"weights": [0.5, 0.5], "means": np.zeros((2, 2)), "covariances": np.ones((2, 2, 2))}, "positive"),
        ({"weights": [0.5, np.nan], "means": np.zeros((2, 2)), "covariances": np.stack([np.eye(2)] * 2)}, "finite"),
    ],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(2).log_prob(params, np.zeros((3, 2)))


def test_methods_that_take_data_refuse_none_and_empty_data(fitted_sklearn):
    _, _, params = fitted_sklearn
    gmm = GaussianMixture(3, covariance_type="full")
    with pytest.raises(TypeError, match=r"x must be an array of shape \(N, D\), got None"):
        gmm.log_prob(params, None)
    for method in (gmm.bic, gmm.aic, gmm.predict):
        with pytest.raises(ValueError, match=r"x must have shape \(N, 4\) with N >= 1"):
            method(params, np.zeros((0, 4)))


def test_parameters_must_match_the_covariance_type():
    full = {"weights": [0.5, 0.5], "means": np.zeros((2, 2)), "covariances": np.stack([[[1, 0.3], [0.3, 1]]] * 2)}
    with pytest.raises(ValueError, match="diagonal"):
        GaussianMixture(2, "diag").log_prob(full, np.zeros((3, 2)))
    diag = {**full, "covariances": np.stack([np.diag([1.0, 2.0]), np.diag([1.0, 1.0])])}
    with pytest.raises(ValueError, match="multiples of the identity"):
        GaussianMixture(2, "spherical").log_prob(diag, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="same covariance"):
        GaussianMixture(2, "tied").log_prob(diag, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        GaussianMixture(2, "diag").log_prob(diag, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2, "diag").log_prob(diag, np.array([[0.0, np.nan]]))


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(0)
    with pytest.raises(TypeError, match="n_components"):
        GaussianMixture(2.0)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, "banded")
    with pytest.raises(ValueError, match="mean_scale"):
        GaussianMixture(2, mean_scale=-1.0)
    with pytest.raises(ValueError, match="weight_concentration must be a finite number > 0, got True"):
        GaussianMixture(2, weight_concentration=True)
