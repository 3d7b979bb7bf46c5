import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeskit.inference import _driver
from bayeskit.inference._lbfgs import LBFGS
from bayeskit.inference._optimize import minimize
from bayeskit.models._numerics import as_real_array, log_normalize, robust_cholesky, robust_cholesky_host


def test_cholesky_of_positive_definite_matrix_adds_no_jitter():
    a = np.array([[4.0, 1.0], [1.0, 3.0]])
    factor, jitter = robust_cholesky(a)
    assert float(jitter) == 0.0
    np.testing.assert_allclose(factor @ factor.T, a, rtol=1e-12)


def test_cholesky_of_singular_matrix_records_the_jitter_it_added():
    v = np.array([1.0, 2.0, 3.0])
    a = np.outer(v, v)  # rank one
    factor, jitter = robust_cholesky(a)
    assert float(jitter) > 0
    np.testing.assert_allclose(factor @ factor.T, a + float(jitter) * np.eye(3), atol=1e-10)


def test_cholesky_of_indefinite_matrix_fails_visibly():
    factor, _ = robust_cholesky(np.diag([1.0, -1.0]))
    assert np.isnan(np.asarray(factor)).any()


@pytest.mark.parametrize(
    "matrix",
    [np.array([[4.0, 1.0], [1.0, 3.0]]), np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), np.diag([1.0, -1.0])],
    ids=["positive-definite", "singular", "indefinite"],
)
def test_host_cholesky_follows_the_compiled_one(matrix):
    ours, compiled = robust_cholesky_host(matrix), robust_cholesky(matrix)
    assert ours.jitter == pytest.approx(float(compiled.jitter), rel=1e-12)
    if np.isnan(np.asarray(compiled.factor)).any():  # indefinite at every jitter: both fail visibly
        assert np.isnan(ours.factor).all()
    else:
        np.testing.assert_allclose(ours.factor, np.asarray(compiled.factor), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "real numeric array, got NoneType"),
        ([1.0, None], "real numeric array, got list"),  # NumPy would make the None a NaN
        ("1.0", "real numeric array, got str"),  # and parse the string
        ([[1.0], [2.0, 3.0]], "real numeric array, got list"),
        (np.array([1.0 + 1e-3j]), "real, got complex values"),
    ],
)
def test_data_that_is_not_real_numbers_is_refused(value, message):
    with pytest.raises(TypeError, match=f"x must be (a )?{message}"):
        as_real_array("x", value)
    assert as_real_array("x", [1, np.float32(2.5), True]).tolist() == [1.0, 2.5, 1.0]


def test_log_normalize_matches_direct_computation():
    logw = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0]]))
    normalised, log_z = log_normalize(logw)
    np.testing.assert_allclose(np.exp(normalised), [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(np.exp(log_z), [4.0, 4.0])


@pytest.mark.parametrize("sequential_chains", [False, True])
def test_driver_stops_at_convergence_and_freezes_finished_chains(sequential_chains):
    def step(x, _data):
        return x / 2, {"f": x}

    monitor = _driver.absolute_change("f", 1e-3)
    out = _driver.run(
        step,
        jnp.array([1.0, 100.0]),
        max_iter=1000,
        objective="f",
        monitor=monitor,
        num_chains=2,
        sequential_chains=sequential_chains,
        chunk_size=7,
        progress=False,
    )
    # |x/2^(n-1) - x/2^(n-2)| = x/2^(n-1) < 1e-3: n = 11 for x=1, n = 18 for x=100
    np.testing.assert_array_equal(out.n_iter, [11, 18])
    assert out.converged.all() and not out.failed.any()
    assert out.trace["f"].shape == (2, 18)
    assert np.isnan(out.trace["f"][0, 11:]).all()  # the finished chain is padded, not run


def test_driver_stops_at_a_non_finite_objective_and_keeps_the_last_good_state():
    def step(x, _data):
        return x + 1, {"f": jnp.where(x > 3, jnp.nan, x)}

    out = _driver.run(step, jnp.asarray(0.0), max_iter=10, objective="f", progress=False)
    assert bool(out.failed) and not bool(out.converged)
    assert float(out.state) == 4.0


def test_driver_runs_exactly_max_iter_without_a_monitor():
    out = _driver.run(
        lambda x, _data: (x + 1, {"f": x}), jnp.asarray(0), max_iter=250, objective="f", chunk_size=100, progress=False
    )
    assert int(out.state) == 250 and out.trace["f"].shape == (250,)
    assert jax.numpy.asarray(out.trace["f"])[-1] == 249


@pytest.mark.parametrize("sequential_chains", [False, True])
def test_driver_passes_data_to_every_chain_and_keeps_array_info_per_chain(sequential_chains):
    def step(x, data):
        return x + data["shift"], {"f": x, "both": jnp.stack([x, -x])}

    out = _driver.run(
        step,
        jnp.array([0.0, 10.0]),
        data={"shift": jnp.asarray(2.0)},
        max_iter=3,
        objective="f",
        num_chains=2,
        sequential_chains=sequential_chains,
        progress=False,
    )
    np.testing.assert_allclose(out.state, [6.0, 16.0])
    assert out.trace["both"].shape == (2, 3, 2)
    np.testing.assert_allclose(out.trace["both"][1, :, 1], [-10.0, -12.0, -14.0])


def test_python_driver_stops_at_a_non_finite_objective():
    def step(total, item):
        return total + item, {"f": np.inf if item == 3 else 1.0}

    out = _driver.run_python(step, 0, range(10), objective="f", progress=False)
    assert bool(out.failed) and out.state == 0 + 1 + 2 and out.trace["f"].shape == (3,)


def _lbfgs_run(loss, z0):
    lbfgs = LBFGS(loss)
    return _driver.run(
        lbfgs, lbfgs.init(z0, None), max_iter=100, objective="loss", monitor=_driver.reported("done"), progress=False
    )


def test_lbfgs_converges_on_a_quadratic():
    out = _lbfgs_run(lambda z, _: jnp.sum((z - jnp.array([1.0, -2.0])) ** 2), np.zeros(2))
    assert bool(out.state.converged)
    np.testing.assert_allclose(out.state.z, [1.0, -2.0], atol=1e-6)


def test_lbfgs_stops_without_converging_where_no_step_decreases_a_loss_that_is_not_flat():
    # flat to round-off: 1e20 + (z - 1)^2 cannot change by any representable amount
    flat = _lbfgs_run(lambda z, _: 1e20 + jnp.sum((z - 1.0) ** 2), np.zeros(1))
    assert bool(flat.state.done) and bool(flat.state.converged)

    # a gradient that points uphill: no step decreases the loss, which is far from flat there
    @jax.custom_jvp
    def misleading(z):
        return jnp.sum(z**2)

    misleading.defjvp(lambda primals, tangents: (misleading(primals[0]), -2 * primals[0] @ tangents[0]))
    stalled = _lbfgs_run(lambda z, _: misleading(z), np.ones(2))
    assert bool(stalled.state.done) and not bool(stalled.state.converged)
    np.testing.assert_allclose(stalled.state.z, [1.0, 1.0])  # it never moved


def _quadratic_with_a_wall(wall):
    """(x - 3)^2, not finite beyond ``wall``."""

    def value_and_grad(x):
        if x[0] > wall:
            return np.inf, np.full(1, np.nan)
        return float((x[0] - 3) ** 2), np.array([2 * (x[0] - 3)])

    return value_and_grad


def test_host_lbfgs_converges_and_does_not_call_a_stop_at_a_non_finite_value_converged():
    found = minimize(_quadratic_with_a_wall(np.inf), np.zeros(1), max_iter=50, ftol=1e-12, gtol=1e-8, progress=False)
    assert found.passed_tests and found.x[0] == pytest.approx(3.0, abs=1e-6)
    # the minimum lies beyond the wall: SciPy's line search stops at the non-finite values
    # far from any stationary point (and may report its relative-change test as met)
    walled = minimize(_quadratic_with_a_wall(2.5), np.zeros(1), max_iter=50, ftol=1e-12, gtol=1e-8, progress=False)
    assert not walled.passed_tests
    assert np.isfinite(walled.value) and walled.x[0] <= 2.5 and walled.value == (walled.x[0] - 3) ** 2
