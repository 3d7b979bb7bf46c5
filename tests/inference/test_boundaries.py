"""Bad input gets a clear error naming the problem; same key, same numbers; save/load."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from bayeskit.graphs import FactorGraph
from bayeskit.inference import (
    Result,
    bayes_opt,
    diagnose,
    em,
    fit_glm,
    laplace,
    map_estimate,
    nuts,
    predictive,
    prior_predictive,
    svi,
)
from bayeskit.models import GLM, GaussianMixture, GaussianProcess, examples, kernels

X = np.random.default_rng(1).normal(size=(30, 2))
Y = X @ np.array([1.0, -1.0]) + np.random.default_rng(2).normal(size=30)
FAST = {
    "laplace": (laplace, {"num_samples": 200}),
    "svi": (svi, {"num_steps": 200, "num_samples": 200}),
    "nuts": (nuts, {"num_warmup": 100, "num_samples": 100, "num_chains": 2}),
    "map_estimate": (map_estimate, {}),
}


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_checked_observations_are_refused(name, bad):
    routine, options = FAST[name]
    y = Y.copy()
    y[3] = bad
    with pytest.raises(ValueError, match="observed site 'y' contains 1 non-finite"):
        routine(examples.linear_regression, X, y=y, progress=False, **options)


def test_non_finite_covariates_are_refused_with_the_distribution_that_saw_them():
    x = X.copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="model raised ValueError.*invalid loc"):
        laplace(examples.linear_regression, x, y=Y, progress=False)


def test_unknown_guide_and_bad_counts():
    with pytest.raises(ValueError, match="guide must be one of"):
        svi(examples.linear_regression, X, y=Y, guide="flow", progress=False)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        svi(examples.linear_regression, X, y=Y, num_steps=0, progress=False)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got -5"):
        svi(examples.linear_regression, X, y=Y, num_steps=-5, progress=False)
    with pytest.raises(TypeError, match="num_samples must be an int"):
        laplace(examples.linear_regression, X, y=Y, num_samples=10.5, progress=False)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        svi(examples.linear_regression, X, y=Y, learning_rate=-1.0, progress=False)
    with pytest.raises(ValueError, match="target_accept must lie in"):
        nuts(examples.linear_regression, X, y=Y, target_accept=1.5, progress=False)
    with pytest.raises(TypeError, match="rng_key must be an int seed or a JAX PRNG key"):
        laplace(examples.linear_regression, X, y=Y, rng_key="seed", progress=False)


def test_a_model_that_raises_is_reported_with_its_error():
    def broken(x, y=None):
        numpyro.sample("w", dist.Normal(0, 1))
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="the model raised RuntimeError.*boom"):
        laplace(broken, X, y=Y, progress=False)


def test_a_model_without_latent_sites_or_with_discrete_ones_is_refused():
    def no_latent(y=None):
        numpyro.sample("y", dist.Normal(0, 1), obs=y)

    def discrete(y=None):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(z, 1), obs=y)

    with pytest.raises(ValueError, match="has none"):
        svi(no_latent, y=1.0, progress=False)
    with pytest.raises(ValueError, match=r"\['z'\] are discrete"):
        laplace(discrete, y=1.0, progress=False)


def test_an_unknown_backend_or_a_numpyro_program_forced_through_pyro_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        laplace(examples.linear_regression, X, y=Y, backend="stan", progress=False)
    with pytest.raises(ValueError, match="the model raised"):
        laplace(examples.linear_regression, X, y=Y, backend="pyro", progress=False)


@pytest.mark.parametrize("name", ["laplace", "svi", "nuts"])
def test_same_key_same_draws_different_key_different_draws(name):
    routine, options = FAST[name]
    a = routine(examples.linear_regression, X, y=Y, rng_key=3, progress=False, **options)
    b = routine(examples.linear_regression, X, y=Y, rng_key=3, progress=False, **options)
    c = routine(examples.linear_regression, X, y=Y, rng_key=4, progress=False, **options)
    np.testing.assert_array_equal(a.draws["w"], b.draws["w"])
    assert not np.array_equal(a.draws["w"], c.draws["w"])


@pytest.mark.parametrize("bad_y", [Y[:, None], Y[:-1]], ids=["column", "short"])
def test_observations_that_the_distribution_would_broadcast_are_refused(bad_y):
    """A (N, 1) column against an (N,) plate would silently make an N x N likelihood."""
    with pytest.raises(ValueError, match=r"observed site 'y' has shape \(\d+,( 1)?\), which does not match its "
                                         r"distribution's shape \(30,\)"):  # fmt: skip
        map_estimate(examples.linear_regression, X, y=bad_y, progress=False)


def _two_modes():
    """x is 10 or -10 up to N(0, 1): the modes are ~50 nats apart, so NUTS stays in the
    one it starts in."""
    x = numpyro.sample("x", dist.Normal(0.0, 12.0))
    numpyro.factor("two_modes", jnp.logaddexp(-0.5 * (x - 10.0) ** 2, -0.5 * (x + 10.0) ** 2))


@pytest.mark.parametrize("start", [10.0, -10.0])
def test_nuts_chains_start_from_init_values(start):
    res = nuts(_two_modes, init_values={"x": start}, rng_key=0, progress=False, **FAST["nuts"][1])
    draws = res.draws["x"]
    assert np.all(np.sign(draws) == np.sign(start))
    assert np.abs(draws.mean() - start) < 0.5


@pytest.mark.filterwarnings("ignore:.*Out-of-support values")
def test_nuts_refuses_bad_init_values():
    with pytest.raises(ValueError, match=r"init_values names \['v'\], which are not latent sites.*\['w'\]"):
        nuts(examples.linear_regression, X, y=Y, init_values={"v": np.zeros(2)}, progress=False)
    with pytest.raises(ValueError, match=r"init_values\['w'\] must have shape \(2,\), got \(3,\)"):
        nuts(examples.linear_regression, X, y=Y, init_values={"w": np.zeros(3)}, progress=False)
    with pytest.raises(ValueError, match=r"init_values\['w'\] must be finite"):
        nuts(examples.linear_regression, X, y=Y, init_values={"w": [0.0, np.nan]}, progress=False)
    with pytest.raises(TypeError, match="init_values must be a dict"):
        nuts(examples.linear_regression, X, y=Y, init_values=[0.0, 0.0], progress=False)

    def positive():
        numpyro.sample("s", dist.HalfNormal(1.0))

    with pytest.raises(ValueError, match="could not start from init_values.*support"):
        nuts(positive, init_values={"s": -1.0}, progress=False, **FAST["nuts"][1])

    def scaled():
        s = numpyro.sample("s", dist.Normal(0.0, 1.0))
        numpyro.sample("t", dist.Normal(0.0, s))

    with pytest.raises(ValueError, match="could not start from init_values"):  # not from inside Normal
        nuts(scaled, init_values={"s": -1.0}, progress=False, **FAST["nuts"][1])
    with pytest.raises(TypeError, match="dense_mass must be a bool, got str"):
        nuts(examples.linear_regression, X, y=Y, dense_mass="yes", progress=False)


def test_save_and_load_round_trip(tmp_path):
    res = nuts(examples.linear_regression, X, y=Y, progress=False, **FAST["nuts"][1])
    path = res.save(tmp_path / "fit.nc")
    back = Result.load(path)
    assert back.method == "nuts" and back.model is None and back.converged == res.converged
    assert back.info == res.info
    for group in ("draws", "sample_stats", "log_likelihood", "observed_data"):
        original, loaded = getattr(res, group), getattr(back, group)
        assert original.keys() == loaded.keys()
        for key in original:
            np.testing.assert_array_equal(original[key], loaded[key])
    fit = laplace(examples.linear_regression, X, y=Y, progress=False, num_samples=50)
    loaded = Result.load(fit.save(tmp_path / "laplace.nc"))
    np.testing.assert_array_equal(loaded.params["w"], fit.params["w"])
    np.testing.assert_array_equal(loaded.trace["loss"], fit.trace["loss"])
    foreign = res.to_inference_data()
    for group in foreign.groups():
        foreign[group].attrs.pop("method", None)
    foreign.attrs.pop("method", None)
    foreign.to_netcdf(str(tmp_path / "foreign.nc"), engine="h5netcdf")
    with pytest.raises(ValueError, match="was not written by Result.save"):
        Result.load(tmp_path / "foreign.nc")


def test_predictive_draws_the_observed_site_for_new_inputs():
    res = laplace(examples.linear_regression, X, y=Y, num_samples=400, progress=False)
    x_new = np.array([[1.0, 0.0], [0.0, 2.0]])
    draws = predictive(res, x_new)
    assert set(draws) == {"y"} and draws["y"].shape == (1, 400, 2)
    w = res.draws["w"][0]
    np.testing.assert_allclose(draws["y"][0].mean(0), (w @ x_new.T).mean(0), atol=0.2)
    np.testing.assert_allclose(draws["y"][0].var(0), 1 + (w @ x_new.T).var(0), rtol=0.2)
    assert predictive(res, x_new, num_samples=10)["y"].shape == (1, 10, 2)
    prior = prior_predictive(examples.linear_regression, X, num_samples=300)
    assert prior["w"].shape == (1, 300, 2) and prior["y"].shape == (1, 300, 30)
    assert abs(prior["w"].std() - 1.0) < 0.1
    with pytest.raises(ValueError, match=r"predictive draws are NaN or inf \(\{'y': 400\} per site\)"):
        predictive(res, np.array([[np.nan, 0.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="the model raised TypeError when run with the given arguments"):
        predictive(res, x_new[:, :1])
    with pytest.raises(TypeError, match="model must be a callable"):
        prior_predictive(None, X)


def test_pyro_functions_are_recognised_by_the_module_they_call():
    import pyro
    import pyro.distributions as pdist

    def pyro_model(y=None):
        pyro.sample("mu", pdist.Normal(0.0, 1.0))

    res = laplace(pyro_model, num_samples=10, progress=False)  # through the Pyro door: see test_pyro_door.py
    assert abs(float(res.params["mu"])) < 1e-6


def two_outcomes(x, y1=None, y2=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    numpyro.factor("soft_constraint", -0.5 * (a - b) ** 2)  # a penalty, not data
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y1", dist.Normal(a * x, 1.0), obs=y1)
        numpyro.sample("y2", dist.Poisson(jnp.exp(b * x)), obs=y2)


def test_several_observed_sites_and_factor_terms_go_through_every_step():
    rng = np.random.default_rng(8)
    x = rng.normal(size=40)
    y1, y2 = 0.5 * x + rng.normal(size=40), rng.poisson(np.exp(0.3 * x))
    for res in (
        laplace(two_outcomes, x, y1=y1, y2=y2, progress=False),
        nuts(two_outcomes, x, y1=y1, y2=y2, num_warmup=200, num_samples=200, num_chains=2, progress=False),
    ):
        assert set(res.observed_data) == {"y1", "y2"} and set(res.log_likelihood) == {"y1", "y2"}
        report = diagnose(res)
        assert [c.message.split("'")[1] for c in report.checks if c.name == "loo"] == ["y1", "y2"]
        draws = predictive(res, x)
        assert set(draws) == {"y1", "y2"} and draws["y2"].shape[2:] == (40,)


def test_svi_refuses_options_it_would_ignore_and_guides_that_miss_a_site():
    with pytest.raises(ValueError, match="rank applies to guide='lowrank' only"):
        svi(examples.linear_regression, X, y=Y, guide="mvn", rank=2, progress=False)
    with pytest.raises(ValueError, match="num_particles=4"):
        svi(examples.linear_regression, X, y=Y, guide="delta", num_particles=4, progress=False)

    def partial_guide(x, y1=None, y2=None):
        numpyro.sample("a", dist.Normal(numpyro.param("loc", 0.0), 1.0))

    x = np.linspace(-1, 1, 10)
    with pytest.raises(ValueError, match=r"leaves out \['b'\]"):
        svi(two_outcomes, x, y1=x, y2=np.ones(10), guide=partial_guide, num_steps=10, progress=False)


def test_reports_leave_the_users_figures_and_backend_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    figure = plt.figure()
    res = laplace(examples.linear_regression, X, y=Y, num_samples=200, progress=False)
    diagnose(res).to_html(tmp_path / "r.html")
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == [figure.number]
    plt.close(figure)


def test_complex_data_is_refused_rather_than_cast_to_its_real_part():
    z = np.linspace(0, 1, 6) + 1j
    graph = FactorGraph()
    graph.add_variable("a", 2)
    cases = {
        "X": lambda: GaussianProcess(kernels.RBF()).condition(z, np.zeros(6)),
        "x": lambda: em(GaussianMixture(2), np.stack([z, z], 1), progress=False),
        "y": lambda: fit_glm(GLM("gaussian"), np.ones((6, 1)), z, progress=False),
        "bounds": lambda: bayes_opt(lambda x: 0.0, [(0.0, 1j)], num_iterations=1, progress=False),
        "table": lambda: graph.add_factor(["a"], table=z[:2]),
    }
    for name, call in cases.items():
        with pytest.raises(TypeError, match=f"{name} must be real, got complex values"):
            call()
