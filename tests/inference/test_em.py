"""EM, online EM and the choice of K, against scikit-learn and known parameters."""

import dataclasses

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnMixture

from bayeskit.inference import Result, RobbinsMonro, diagnose, em, online_em, select_n_components
from bayeskit.models import GaussianMixture


def _matched(params, truth):
    """Fitted parameters with components in the order of the true means."""
    order = [int(np.argmin(np.sum((params["means"] - m) ** 2, axis=1))) for m in truth["means"]]
    assert len(set(order)) == len(order)
    return {name: np.asarray(value)[order] for name, value in params.items()}


@pytest.mark.parametrize("kind", ["full", "tied"])
def test_best_of_ten_restarts_on_iris_is_at_least_sklearns(iris, kind):
    ours = em(GaussianMixture(3, kind), iris, num_inits=10, rng_key=0, progress=False)
    theirs = max(
        SklearnMixture(3, covariance_type=kind, n_init=10, random_state=seed).fit(iris).score(iris) for seed in (0, 1)
    )
    assert ours.info["log_likelihood"] >= theirs - 1e-3
    # the reported bound is the log-likelihood of the returned parameters
    assert ours.info["log_likelihood"] == pytest.approx(ours.model.log_prob(ours.params, iris).mean(), abs=1e-10)
    assert ours.info["best_init"] == int(np.argmax(ours.info["log_likelihood_per_init"]))
    assert ours.trace["log_likelihood"].shape[0] == 10 and ours.converged


def test_known_parameters_are_recovered(three_clusters):
    x, truth = three_clusters
    res = em(GaussianMixture(3), x, num_inits=3, progress=False)
    fit = _matched(res.params, truth)
    counts = 3000 * truth["weights"]
    # four standard errors: weights sqrt(w(1-w)/N), means sqrt(diag(S)/n_k), covariances sqrt((S_ii S_jj + S_ij^2)/n_k)
    weight_se = np.sqrt(truth["weights"] * (1 - truth["weights"]) / 3000)
    assert np.all(np.abs(fit["weights"] - truth["weights"]) < 4 * weight_se)
    var = np.diagonal(truth["covariances"], axis1=1, axis2=2)
    assert np.all(np.abs(fit["means"] - truth["means"]) < 4 * np.sqrt(var / counts[:, None]))
    cov_se = np.sqrt((var[:, :, None] * var[:, None, :] + truth["covariances"] ** 2) / counts[:, None, None])
    assert np.all(np.abs(fit["covariances"] - truth["covariances"]) < 4 * cov_se)
    assert diagnose(res).ok


@pytest.mark.parametrize("kind", ["full", "diag", "spherical", "tied"])
def test_the_bound_is_monotone_and_matches_sklearn_from_the_same_start(three_clusters, kind):
    x, truth = three_clusters
    start = truth["means"] + 0.5
    res = em(GaussianMixture(3, kind), x, means_init=start, tol=1e-10, progress=False)
    trace = res.trace["log_likelihood"]
    assert np.all(np.diff(trace) > -1e-10)
    sk = SklearnMixture(3, covariance_type=kind, means_init=start, tol=1e-10, max_iter=1000).fit(x)
    assert res.info["log_likelihood"] == pytest.approx(sk.score(x), abs=1e-6)


def test_frequency_weights_equal_repeated_points(three_clusters):
    x, truth = three_clusters
    x = x[:300]
    weights = np.random.default_rng(0).integers(0, 4, size=300)
    options = dict(means_init=truth["means"], tol=1e-12, progress=False)
    weighted = em(GaussianMixture(3), x, weights=weights, **options)
    repeated = em(GaussianMixture(3), np.repeat(x, weights, axis=0), **options)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(weighted.params[name], repeated.params[name], atol=1e-8)
    assert weighted.info["bic"] == pytest.approx(repeated.info["bic"], rel=1e-9)


def test_same_key_same_answer_and_restarts_differ(iris):
    a = em(GaussianMixture(3), iris, num_inits=4, rng_key=5, progress=False)
    b = em(GaussianMixture(3), iris, num_inits=4, rng_key=5, progress=False)
    np.testing.assert_array_equal(a.params["means"], b.params["means"])
    assert len(set(np.round(a.info["n_iter_per_init"]))) > 1 or len(set(a.info["log_likelihood_per_init"])) > 1


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_other_initialisations_reach_the_optimum(three_clusters, init):
    x, truth = three_clusters
    res = em(GaussianMixture(3), x, init=init, num_inits=3, progress=False)
    reference = em(GaussianMixture(3), x, means_init=truth["means"], progress=False)
    assert res.info["log_likelihood"] == pytest.approx(reference.info["log_likelihood"], abs=1e-5)


def test_an_empty_component_is_repaired_and_recorded(three_clusters):
    x, truth = three_clusters
    far = np.vstack([truth["means"][:2], [[100.0, 100.0]]])  # no point is nearest to it
    res = em(GaussianMixture(3), x, means_init=far, progress=False)
    assert {"init": 0, "iteration": 0, "component": 2} in res.info["repairs"]
    assert all(np.isfinite(v).all() for v in res.params.values())
    report = diagnose(res)
    assert report["collapsed_components"].status == "warn"
    assert report["monotone_bound"].status == "ok"


def test_more_components_than_distinct_points_stay_finite():
    x = np.repeat(np.eye(3), 10, axis=0)
    res = em(GaussianMixture(5), x, max_iter=50, progress=False)
    assert all(np.isfinite(v).all() for v in res.params.values())
    assert any("3 distinct points" in w for w in res.info["warnings"])


def test_duplicates_and_a_constant_column_give_a_finite_recorded_fit(three_clusters):
    x, _ = three_clusters
    x = np.column_stack([np.vstack([x, np.repeat(x[:1], 40, axis=0)]), np.full(len(x) + 40, 2.0)])
    res = em(GaussianMixture(3), x, num_inits=2, progress=False)
    assert np.isfinite(res.info["log_likelihood"]) and all(np.isfinite(v).all() for v in res.params.values())
    assert any("constant columns [2]" in w for w in res.info["warnings"])
    assert any("40 duplicate rows" in w for w in res.info["warnings"])
    # the constant column's variance is reg_covar: exactly what was added
    np.testing.assert_allclose(res.params["covariances"][:, 2, 2], 1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "x, kwargs, error, message",
    [
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), {}, ValueError, "NaN or inf in 1 rows"),
        (np.array([[0.0, np.inf], [1.0, 1.0], [2.0, 2.0]]), {}, ValueError, "NaN or inf"),
        (np.zeros((1, 2)), {}, ValueError, "1 points with positive weight but n_components=2"),
        (np.zeros(5), {}, ValueError, "2-D"),
        (np.zeros((0, 2)), {}, ValueError, "at least one point"),
        (np.ones((4, 2)), {"weights": [1.0, -1.0, 1.0, 1.0]}, ValueError, "non-negative"),
        (np.ones((4, 2)), {"weights": [1.0, 1.0]}, ValueError, r"weights must have shape \(4,\)"),
        (np.ones((4, 2)), {"init": "kmedians"}, ValueError, "init must be one of"),
        (np.ones((4, 2)), {"tol": -1.0}, ValueError, "tol"),
        (np.ones((4, 2)), {"num_inits": 0}, ValueError, "num_inits"),
        (np.ones((4, 2)), {"means_init": np.zeros((3, 2))}, ValueError, r"means_init must have shape \(2, 2\)"),
        (np.ones((4, 2)), {"means_init": np.zeros((2, 2)), "num_inits": 3}, ValueError, "num_inits must be 1"),
        ([["a", "b"]], {}, TypeError, "numeric"),
    ],
)
def test_bad_input_is_refused(x, kwargs, error, message):
    with pytest.raises(error, match=message):
        em(GaussianMixture(2), x, progress=False, **kwargs)


def test_online_em_reaches_the_batch_solution(three_clusters):
    x, _ = three_clusters
    batch = em(GaussianMixture(3), x, num_inits=3, progress=False)
    online = online_em(GaussianMixture(3), x, batch_size=100, num_epochs=5, progress=False)
    assert online.info["log_likelihood"] >= batch.info["log_likelihood"] - 0.02
    assert online.info["num_batches"] == 150 and online.info["num_points_seen"] == 15000
    # a stream of batches in a list gives the same kind of answer
    batches = list(np.array_split(x, 30))
    streamed = online_em(GaussianMixture(3), batches, num_epochs=5, progress=False)
    fit = streamed.model.log_prob(streamed.params, x).mean()
    assert fit >= batch.info["log_likelihood"] - 0.02


def test_online_em_checks_its_inputs(three_clusters):
    x, _ = three_clusters
    with pytest.raises(ValueError, match="at most 1"):
        online_em(GaussianMixture(3), x, step_size=RobbinsMonro(a=2.0), progress=False)
    with pytest.raises(TypeError, match="RobbinsMonro"):
        online_em(GaussianMixture(3), x, step_size=0.1, progress=False)
    with pytest.raises(ValueError, match="re-iterable"):
        online_em(GaussianMixture(3), iter(np.array_split(x, 5)), num_epochs=2, progress=False)
    with pytest.raises(ValueError, match="batch 2 has 3 columns, the first batch had 2"):
        online_em(GaussianMixture(3), [x[:100], x[100:200], np.zeros((10, 3))], progress=False)
    with pytest.raises(ValueError, match="batch 1 has NaN"):
        online_em(GaussianMixture(3), [x[:100], np.full((10, 2), np.nan)], progress=False)
    with pytest.raises(TypeError, match="EM protocol"):
        online_em(None, x, progress=False)
    with pytest.raises(TypeError, match="batches_or_x must be an array"):
        online_em(GaussianMixture(3), 3.0, progress=False)
    with pytest.raises(TypeError, match="candidates must be an iterable"):
        select_n_components(x, candidates=3, progress=False)
    # rows of one array, or batches of one-dimensional data? Neither is guessed
    with pytest.raises(ValueError, match=r"batch 0 must be 2-D \(points, dimensions\), got shape \(40,\)"):
        online_em(GaussianMixture(2), [x[:40, 0], x[40:80, 0]], progress=False)


@pytest.mark.parametrize("gamma", [0.5, 1.2, -1.0])
def test_robbins_monro_refuses_exponents_outside_the_conditions(gamma):
    with pytest.raises(ValueError, match="gamma"):
        RobbinsMonro(a=1.0, b=1.0, gamma=gamma)


def test_robbins_monro_values():
    schedule = RobbinsMonro(a=0.5, b=10.0, gamma=1.0)
    np.testing.assert_allclose([schedule(0), schedule(10)], [0.05, 0.025])


def test_select_n_components_finds_the_true_number(three_clusters):
    x, _ = three_clusters
    res = select_n_components(x, candidates=range(2, 5), num_inits=2, progress=False)
    selection = res.info["selection"]
    assert selection["selected"] == 3 and res.params["weights"].shape == (3,)
    assert selection["values"][1] == pytest.approx(res.model.bic(res.params, x), rel=1e-9)
    with pytest.raises(ValueError, match="criterion"):
        select_n_components(x, candidates=[2], criterion="dic")


def test_a_bound_that_falls_without_a_repair_fails_the_check(three_clusters):
    x, _ = three_clusters
    res = em(GaussianMixture(2), x[:500], progress=False)
    trace = res.trace["log_likelihood"].copy()
    trace[-1] = trace[-2] - 0.1
    report = diagnose(dataclasses.replace(res, trace={"log_likelihood": trace}))
    assert report["monotone_bound"].status == "fail" and not report.ok


def test_a_saved_fit_loads_with_its_model(tmp_path, iris):
    res = em(GaussianMixture(3, "diag"), iris, progress=False)
    loaded = Result.load(res.save(tmp_path / "fit.nc"))
    assert loaded.model == res.model
    np.testing.assert_array_equal(loaded.model.log_prob(loaded.params, iris), res.model.log_prob(res.params, iris))
    assert [c.name for c in diagnose(loaded).checks] == [c.name for c in diagnose(res).checks]


def test_the_mixture_program_goes_through_laplace_and_svi():
    # Old Faithful, standardised: with N=272 the posterior is centred near the maximum-likelihood fit
    from bayeskit.inference import laplace, svi
    from bayeskit.models import data

    d = data.load("old_faithful")
    x = np.column_stack([d["eruptions"], d["waiting"]]).astype(float)
    x = (x - x.mean(0)) / x.std(0)
    mle = em(GaussianMixture(2), x, num_inits=5, progress=False).params
    order = np.argsort(mle["means"][:, 0])  # the program orders components by the first coordinate
    for res in (
        laplace(GaussianMixture(2), x, progress=False),
        svi(GaussianMixture(2), x, guide="mvn", num_steps=3000, progress=False),
    ):
        draws = res.draws["means"].reshape(-1, 2, 2)
        z = (draws.mean(0) - mle["means"][order]) / draws.std(0)
        assert np.max(np.abs(z)) < 3, (res.method, z)
        assert diagnose(res)["pareto_khat"].status == "ok"
