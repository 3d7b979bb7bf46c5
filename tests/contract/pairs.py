"""The registry of pairs: one row per model and routine, checked the same way.

Each row runs its pair on small data (``run``) and compares the answer with its
oracle (``oracle(result)`` raises AssertionError on a mismatch). Every new pair adds
its rows here.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from bayeskit.graphs import exact_marginals
from bayeskit.graphs import examples as graph_examples
from bayeskit.inference import (
    bayes_opt,
    belief_propagation,
    em,
    fit_glm,
    fit_gp,
    laplace,
    map_estimate,
    nuts,
    online_em,
    svi,
)
from bayeskit.models import GLM, GaussianMixture, GaussianProcess, data, examples, kernels
from tests.graphs.brute_force import enumerate_graph, random_tree


class Pair(NamedTuple):
    name: str
    run: Callable[[], object]
    oracle: Callable[[object], None]


_rng = np.random.default_rng(7)
_X = _rng.normal(size=(200, 3))
_Y = _X @ np.array([0.5, -1.0, 2.0]) + _rng.normal(size=200)
_MEAN, _COV = examples.linear_regression_posterior(_X, _Y)
_SD = np.sqrt(np.diag(_COV))


def _matches_closed_form(mean_tol: float, sd_tol: float):
    def oracle(res):
        draws = res.draws["w"].reshape(-1, 3)
        assert np.max(np.abs(draws.mean(0) - _MEAN) / _SD) < mean_tol
        assert np.max(np.abs(draws.std(0) / _SD - 1)) < sd_tol

    return oracle


def _point_is_mean(res):
    np.testing.assert_allclose(res.params["w"], _MEAN, atol=1e-5)


PAIRS = [
    Pair(
        "linear_regression/map",
        lambda: map_estimate(examples.linear_regression, _X, y=_Y, progress=False),
        _point_is_mean,
    ),
    Pair(
        "linear_regression/laplace",
        lambda: laplace(examples.linear_regression, _X, y=_Y, num_samples=2000, progress=False),
        _matches_closed_form(0.15, 0.08),
    ),
    Pair(
        "linear_regression/svi",
        lambda: svi(examples.linear_regression, _X, y=_Y, guide="mvn", num_samples=2000, progress=False),
        _matches_closed_form(0.15, 0.08),
    ),
    Pair(
        "linear_regression/nuts",
        lambda: nuts(
            examples.linear_regression, _X, y=_Y, num_warmup=300, num_samples=500, num_chains=2, progress=False
        ),
        _matches_closed_form(0.2, 0.1),
    ),
]


# Gaussian mixtures: iris against scikit-learn, and Old Faithful (standardised) where
# EM's maximum-likelihood fit is the large-sample centre of the NUTS posterior.
_iris = data.load("iris")
_IRIS = np.column_stack([_iris[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")])
_faithful = data.load("old_faithful")
_FAITHFUL = np.column_stack([_faithful["eruptions"], _faithful["waiting"]]).astype(float)
_FAITHFUL = (_FAITHFUL - _FAITHFUL.mean(0)) / _FAITHFUL.std(0)


def _at_least_sklearns_best(res):
    from sklearn.mixture import GaussianMixture as SklearnMixture

    best = SklearnMixture(3, n_init=10, random_state=0).fit(_IRIS).score(_IRIS)
    assert res.info["log_likelihood"] >= best - 1e-3


# a stream of 20,000 points from the mixture EM fits to iris: online EM sees it in batches
_STREAM = GaussianMixture(3).sample(em(GaussianMixture(3), _IRIS, num_inits=10, progress=False).params, 20_000)


def _near_the_batch_fit(res):
    batch = em(GaussianMixture(3), _STREAM, num_inits=3, progress=False)
    assert res.info["log_likelihood"] >= batch.info["log_likelihood"] - 0.02


_FAITHFUL_MLE = em(GaussianMixture(2), _FAITHFUL, num_inits=5, progress=False).params


def _centred_on_the_mle(res):
    mle = _FAITHFUL_MLE
    order = np.argsort(mle["means"][:, 0])  # the program orders components by the first coordinate
    for name in ("weights", "means"):
        draws = res.draws[name].reshape((-1,) + res.draws[name].shape[2:])
        z = (draws.mean(0) - mle[name][order]) / draws.std(0)
        assert np.max(np.abs(z)) < 3, (name, z)


PAIRS += [
    Pair(
        "gmm/em",
        lambda: em(GaussianMixture(3), _IRIS, num_inits=10, progress=False),
        _at_least_sklearns_best,
    ),
    Pair(
        "gmm/online_em",
        lambda: online_em(GaussianMixture(3), _STREAM, batch_size=200, num_epochs=2, progress=False),
        _near_the_batch_fit,
    ),
    Pair(
        "gmm/nuts",
        # chains started at EM's fit: started at random, warm-up can strand a chain in a mode
        # with an empty component, whose mean then drifts with nothing to pull it back
        lambda: nuts(
            GaussianMixture(2),
            _FAITHFUL,
            num_warmup=500,
            num_samples=500,
            num_chains=2,
            progress=False,
            init_values=GaussianMixture(2).program_values(_FAITHFUL_MLE),
        ),  # fmt: skip
        _centred_on_the_mle,
    ),
]


# Gaussian processes: type-II maximum likelihood against scikit-learn, and BO on a
# quadratic bowl whose minimum is known.
_GP_X = np.random.default_rng(3).uniform(-3, 3, size=(60, 2))
_GP_Y = np.sin(_GP_X[:, 0]) * np.cos(_GP_X[:, 1]) + 0.1 * np.random.default_rng(4).normal(size=60)


def _at_least_sklearns_lml(res):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process import kernels as sk

    kernel = sk.ConstantKernel(1.0) * sk.Matern(np.ones(2), nu=2.5) + sk.WhiteKernel(1.0)
    theirs = GaussianProcessRegressor(kernel, n_restarts_optimizer=4, random_state=0).fit(_GP_X, _GP_Y)
    assert res.info["log_marginal_likelihood"] >= theirs.log_marginal_likelihood_value_ - 0.05


def _finds_the_bowls_minimum(res):
    assert np.max(np.abs(res.params["x"] - np.array([0.3, -0.2]))) < 0.05
    assert float(res.params["value"]) < 1e-3


PAIRS += [
    Pair(
        "gp/fit_gp",
        lambda: fit_gp(
            GaussianProcess(kernels.Matern52(np.ones(2)), 1.0), _GP_X, _GP_Y, fixed=("mean",), progress=False
        ),
        _at_least_sklearns_lml,
    ),
    Pair(
        "gp/bayes_opt",
        lambda: bayes_opt(
            lambda x: float(np.sum((x - np.array([0.3, -0.2])) ** 2)),
            [(-1.0, 1.0), (-1.0, 1.0)],
            num_iterations=15,
            progress=False,
        ),
        _finds_the_bowls_minimum,
    ),
]


# GLMs: Poisson regression against statsmodels' IRLS, and a simulated coupled population
# whose filters are known.
_GLM_X = np.random.default_rng(8).normal(size=(1000, 3))
_GLM_Y = np.random.default_rng(9).poisson(np.exp(0.2 + _GLM_X @ np.array([0.3, -0.2, 0.1])))
_POPULATION = examples.retinal_population(60_000)


def _equals_statsmodels(res):
    import statsmodels.api as sm

    ref = sm.GLM(_GLM_Y, sm.add_constant(_GLM_X), family=sm.families.Poisson()).fit(tol=1e-12)
    np.testing.assert_allclose(np.r_[res.params["intercept"], res.params["weights"]], ref.params, rtol=1e-5)


def _recovers_the_filters(res):
    truth = _POPULATION.model.filters(_POPULATION.truth)
    for name in ("stimulus_filter", "coupling_filters"):
        for i in range(3):
            assert np.corrcoef(res.params[name][i].ravel(), truth[name][i].ravel())[0, 1] > 0.9, (name, i)


PAIRS += [
    Pair("glm/fit_glm", lambda: fit_glm(GLM("poisson"), _GLM_X, _GLM_Y, progress=False), _equals_statsmodels),
    Pair(
        "population_glm/fit_glm",
        lambda: fit_glm(_POPULATION.model, _POPULATION.stimulus, _POPULATION.spikes, progress=False),
        _recovers_the_filters,
    ),
]


_TREE = random_tree(np.random.default_rng(21), 9)
_TREE_MARGINALS, _TREE_LOG_Z, _TREE_MAP, _ = enumerate_graph(_TREE)
_ASIA_EVIDENCE = {"dysp": "yes", "asia": "yes"}


def _equals_enumeration(res):
    for name, marginal in _TREE_MARGINALS.items():
        np.testing.assert_allclose(res.marginals[name], marginal, atol=1e-9)
    assert abs(res.info["log_partition"] - _TREE_LOG_Z) < 1e-9


def _is_the_brute_force_argmax(res):
    assert {name: int(state) for name, state in res.params.items()} == _TREE_MAP


def _near_the_junction_tree(res):
    # ASIA has one loop (smoking -> lung cancer / bronchitis -> dyspnoea): BP is approximate
    exact = exact_marginals(res.model, evidence=_ASIA_EVIDENCE)
    errors = [np.max(np.abs(res.marginals[name] - marginal)) for name, marginal in exact.items()]
    assert max(errors) < 0.05 and max(errors) == res.info["exact_max_error"]


PAIRS += [
    Pair("factor_tree/belief_propagation", lambda: belief_propagation(_TREE, progress=False), _equals_enumeration),
    Pair(
        "factor_tree/belief_propagation_max",
        lambda: belief_propagation(_TREE, kind="max", progress=False),
        _is_the_brute_force_argmax,
    ),
    Pair(
        "asia/belief_propagation",
        lambda: belief_propagation(graph_examples.load_network("asia"), _ASIA_EVIDENCE, progress=False),
        _near_the_junction_tree,
    ),
]


def _pyro_regression():
    import torch

    return torch.as_tensor(_X), torch.as_tensor(_Y)


def _robbins_monro():
    from bayeskit.inference import robbins_monro
    from bayeskit.models.pyro_examples import linear_regression

    return robbins_monro(linear_regression, *_pyro_regression(), num_steps=3000, batch_size=50, progress=False)


def _sgld():
    from bayeskit.inference import RobbinsMonro, sgld
    from bayeskit.models.pyro_examples import linear_regression

    # plain SGLD (Welling & Teh), steps from 0.13 down to 0.05 per point: large enough that
    # 10,000 steps per chain mix; small enough that discretisation and minibatch noise stay
    # near 5%
    step_size = RobbinsMonro(a=6.0, b=1000.0, gamma=0.55)
    data = _pyro_regression()
    options = dict(num_samples=500, thinning=20, num_warmup=300, batch_size=100, step_size=step_size,
                   preconditioner=None, progress=False)  # fmt: skip
    return sgld(linear_regression, *data, **options)


def _map_is_mean(res):
    np.testing.assert_allclose(res.params["w"], _MEAN, atol=0.05 * _SD.min())


PAIRS += [
    Pair("pyro_linear_regression/robbins_monro", _robbins_monro, _map_is_mean),
    # 2,000 SGLD draws with ESS above 700: mean within 0.2 sd, scale within 15%
    Pair("pyro_linear_regression/sgld", _sgld, _matches_closed_form(0.2, 0.15)),
]


# a Gaussian target whose score is known at every noise level: the samplers are
# checked against it without training
_GAUSS_MEAN, _GAUSS_COV = np.array([1.0, -2.0]), np.array([[2.0, 0.9], [0.9, 0.7]])


def _gaussian_diffusion():
    import torch

    from bayeskit.models import DiffusionModel
    from bayeskit.models._diffusion import Schedule

    schedule = Schedule.cosine(1000)
    mean, cov = torch.as_tensor(_GAUSS_MEAN), torch.as_tensor(_GAUSS_COV)

    def score(x, t):
        alpha, sigma = schedule.marginal(t)
        alpha, sigma = torch.as_tensor(alpha)[:, None, None], torch.as_tensor(sigma)[:, None, None]
        precision = torch.linalg.inv(alpha**2 * cov + sigma**2 * torch.eye(2, dtype=cov.dtype))
        return -(precision @ (x - alpha[:, 0] * mean)[..., None])[..., 0]

    return DiffusionModel.from_score(score, dim=2, schedule=schedule)


def _sample(method, num_steps):
    from bayeskit.inference import sample

    return lambda: sample(_gaussian_diffusion(), 4000, method=method, num_steps=num_steps, progress=False)


def _is_the_gaussian(res):
    x = res.draws["x"].reshape(-1, 2)
    sd = np.sqrt(np.diag(_GAUSS_COV))
    # 4,000 independent draws: standard errors of 0.016 sd for the mean and 1.1% for the sd
    assert np.max(np.abs(x.mean(0) - _GAUSS_MEAN) / sd) < 0.07
    assert np.max(np.abs(x.std(0) / sd - 1)) < 0.05
    assert abs(np.corrcoef(x.T)[0, 1] - _GAUSS_COV[0, 1] / np.prod(sd)) < 0.03


PAIRS += [
    Pair("gaussian_diffusion/ddim", _sample("ddim", 50), _is_the_gaussian),
    Pair("gaussian_diffusion/ode", _sample("ode", 25), _is_the_gaussian),
]
