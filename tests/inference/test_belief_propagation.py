"""Belief propagation against ground truth: enumeration on trees, forward-backward on
chains, the junction tree on small loopy grids."""

import numpy as np
import pytest

from bayeskit.graphs import FactorGraph, chain, exact_marginals, ising_grid
from bayeskit.inference import Result, belief_propagation, diagnose
from tests.graphs.brute_force import enumerate_graph, random_graph, random_tree


def _bp(fg, **kwargs):
    return belief_propagation(fg, progress=False, **kwargs)


@pytest.mark.parametrize("seed", range(6))
def test_sum_product_on_trees_equals_enumeration(seed):
    fg = random_tree(np.random.default_rng(seed), 9)
    truth, log_z, _, _ = enumerate_graph(fg)
    res = _bp(fg)
    assert res.converged and res.info["is_tree"]
    for name in fg.variables:
        np.testing.assert_allclose(res.marginals[name], truth[name], atol=1e-9)
    assert abs(res.info["log_partition"] - log_z) < 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_max_product_on_trees_finds_the_brute_force_argmax(seed):
    fg = random_tree(np.random.default_rng(100 + seed), 9)
    _, _, best, best_score = enumerate_graph(fg)
    res = _bp(fg, kind="max")
    assert {k: int(v) for k, v in res.params.items()} == best
    assert res.info["log_score"] == pytest.approx(best_score, abs=1e-9)


def test_max_product_breaks_ties_into_a_jointly_optimal_assignment():
    # the two variables should disagree; each max-marginal is flat, so picking each
    # variable's lowest best state on its own would give the worse (0, 0)
    fg = FactorGraph()
    for name in "ab":
        fg.add_variable(name, 2)
    fg.add_factor(["a", "b"], [[1.0, 2.0], [2.0, 1.0]])
    res = _bp(fg, kind="max")
    assert (int(res.params["a"]), int(res.params["b"])) == (0, 1)
    np.testing.assert_allclose(res.marginals["a"], [0.5, 0.5])
    assert res.info["log_score"] == pytest.approx(np.log(2.0))


def test_evidence_on_trees_is_exact():
    rng = np.random.default_rng(11)
    fg = random_tree(rng, 8)
    fg.add_variable("s", 2, states=("low", "high"))
    fg.add_factor(["s", "v3"], rng.random((2, fg.cardinality("v3"))) + 0.1)
    soft = np.linspace(0.2, 1.0, fg.cardinality("v5"))
    evidence = {"v1": 1, "v5": soft, "s": "high"}
    with np.errstate(divide="ignore"):
        logs = {"v1": np.log(np.eye(fg.cardinality("v1"))[1]), "v5": np.log(soft), "s": np.log([0.0, 1.0])}
    truth, log_z, best, best_score = enumerate_graph(fg, logs)
    res = _bp(fg, evidence=evidence)
    for name in fg.variables:
        np.testing.assert_allclose(res.marginals[name], truth[name], atol=1e-9)
    assert abs(res.info["log_partition"] - log_z) < 1e-9
    res = _bp(fg, evidence=evidence, kind="max")
    assert {k: int(v) for k, v in res.params.items()} == best
    assert res.info["log_score"] == pytest.approx(best_score, abs=1e-9)


def _forward_backward(initial, transition, emission, y):
    """Scaled forward-backward recursions (Rabiner 1989)."""
    T, K = len(y), len(initial)
    alpha, beta, scale = np.zeros((T, K)), np.ones((T, K)), np.zeros(T)
    a = initial * emission[:, y[0]]
    for t in range(T):
        if t:
            a = (alpha[t - 1] @ transition) * emission[:, y[t]]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    for t in range(T - 2, -1, -1):
        beta[t] = transition @ (emission[:, y[t + 1]] * beta[t + 1]) / scale[t + 1]
    return alpha * beta, np.log(scale).sum()


def test_hmm_chain_equals_forward_backward():
    rng = np.random.default_rng(5)
    K, M, T = 3, 4, 60
    initial = rng.dirichlet(np.ones(K))
    transition = rng.dirichlet(np.ones(K), size=K)
    emission = rng.dirichlet(np.ones(M), size=K)
    y = rng.integers(0, M, size=T)
    posterior, log_likelihood = _forward_backward(initial, transition, emission, y)
    res = _bp(chain(initial, transition, emission, y))
    got = np.stack([res.marginals[f"z_{t}"] for t in range(T)])
    np.testing.assert_allclose(got, posterior, atol=1e-9)
    assert res.info["log_partition"] == pytest.approx(log_likelihood, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_damped_loopy_bp_on_small_grids_is_close_to_exact(seed):
    fg = ising_grid(4, 4, coupling=0.4, field=0.3, rng_key=seed)
    exact = exact_marginals(fg)
    for schedule in ("flooding", "residual"):
        res = _bp(fg, damping=0.5, schedule=schedule, max_iter=500)
        assert res.converged
        assert max(np.max(np.abs(res.marginals[v] - exact[v])) for v in fg.variables) < 0.05
        assert res.info["exact_max_error"] < 0.05


def test_damping_changes_the_path_not_the_fixed_point():
    fg = random_graph(np.random.default_rng(2), 8, 10)
    plain = _bp(fg, max_iter=500)
    damped = _bp(fg, max_iter=2000, damping=0.8)
    assert plain.converged and damped.converged
    assert damped.info["num_iterations"] > plain.info["num_iterations"]
    for v in fg.variables:
        np.testing.assert_allclose(damped.marginals[v], plain.marginals[v], atol=1e-7)


def test_non_convergence_is_reported_not_hidden():
    fg = ising_grid(4, 4, coupling=3.0, field=0.5, rng_key=1)  # a frustrated, strongly coupled spin glass
    res = _bp(fg, max_iter=200)
    assert not res.converged and res.trace["residual"].shape == (200,)
    report = diagnose(res)
    assert report["bp_convergence"].status == "fail" and "oscillates" in report["bp_convergence"].message
    assert report["exact_marginals"].status == "warn"
    # a residual that is still falling asks for more sweeps, not for damping
    slow = _bp(ising_grid(8, 8, coupling=1.4, field=0.5, rng_key=2), max_iter=500)
    assert not slow.converged and "still falling" in diagnose(slow)["bp_convergence"].message


def test_result_reaches_inference_data_and_the_report(tmp_path):
    fg = ising_grid(3, 3, coupling=0.5, field=0.2, rng_key=0)
    res = _bp(fg, damping=0.3)
    idata = res.to_inference_data()
    np.testing.assert_allclose(idata.marginals["x_1_1"].values, res.marginals["x_1_1"])
    report = diagnose(res)
    assert report.ok and report["bp_convergence"].status == "ok" and report["exact_marginals"].value < 0.05
    loaded = Result.load(res.save(tmp_path / "bp.nc"))
    np.testing.assert_allclose(loaded.marginals["x_0_2"], res.marginals["x_0_2"])
    np.testing.assert_allclose(loaded.trace["residual"], res.trace["residual"])
    assert [c.name for c in diagnose(loaded).checks] == [c.name for c in report.checks]


def test_bad_arguments_and_impossible_evidence():
    fg = FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable("b", 2)
    fg.add_factor(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])  # a == b
    with pytest.raises(ValueError, match="kind"):
        _bp(fg, kind="mean")
    with pytest.raises(ValueError, match="schedule"):
        _bp(fg, schedule="random")
    with pytest.raises(ValueError, match="damping"):
        _bp(fg, damping=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        _bp(fg, max_iter=0)
    with pytest.raises(TypeError, match="FactorGraph"):
        belief_propagation({"a": 1})
    with pytest.raises(ValueError, match=r"in 0\.\.1"):
        _bp(fg, evidence={"a": 5})
    with pytest.raises(ValueError, match="probability zero"):
        _bp(fg, evidence={"a": 0, "b": 1})
