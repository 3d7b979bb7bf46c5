"""Kernels and the exact GP posterior against scikit-learn."""

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process import kernels as sk

from bayeskit.models import GaussianProcess, kernels

LENGTHSCALE = np.array([0.8, 1.5])
KERNEL_PAIRS = {
    "rbf": (kernels.RBF(LENGTHSCALE, 1.7), sk.ConstantKernel(1.7) * sk.RBF(LENGTHSCALE)),
    "matern12": (kernels.Matern12(LENGTHSCALE, 1.7), sk.ConstantKernel(1.7) * sk.Matern(LENGTHSCALE, nu=0.5)),
    "matern32": (kernels.Matern32(LENGTHSCALE, 1.7), sk.ConstantKernel(1.7) * sk.Matern(LENGTHSCALE, nu=1.5)),
    "matern52": (kernels.Matern52(LENGTHSCALE, 1.7), sk.ConstantKernel(1.7) * sk.Matern(LENGTHSCALE, nu=2.5)),
    "linear": (kernels.Linear(2.0), sk.ConstantKernel(2.0) * sk.DotProduct(0.0)),
    "sum_with_white": (
        kernels.Constant(2.0) * kernels.RBF(LENGTHSCALE) + kernels.White(0.3),
        sk.ConstantKernel(2.0) * sk.RBF(LENGTHSCALE) + sk.WhiteKernel(0.3),
    ),
    "product_with_white": (
        kernels.White(0.3) * kernels.Matern32(LENGTHSCALE, 2.0),
        sk.WhiteKernel(0.3) * sk.ConstantKernel(2.0) * sk.Matern(LENGTHSCALE, nu=1.5),
    ),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(40, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1]) + 0.1 * rng.normal(size=40)
    return X, y, rng.uniform(-3, 3, size=(15, 2))


@pytest.mark.parametrize("name", KERNEL_PAIRS)
def test_kernel_matrices_equal_sklearn(name, data):
    ours, theirs = KERNEL_PAIRS[name]
    X, _, X_new = data
    np.testing.assert_allclose(ours(X), theirs(X), atol=1e-12)
    np.testing.assert_allclose(ours(X, X_new), theirs(X, X_new), atol=1e-12)
    np.testing.assert_allclose(ours.diag(X), theirs.diag(X), atol=1e-12)


@pytest.mark.parametrize("name", ["rbf", "matern32", "matern52"])
@pytest.mark.parametrize("per_point_noise", [False, True])
def test_posterior_equals_sklearn_with_fixed_hyperparameters(name, per_point_noise, data):
    ours, theirs = KERNEL_PAIRS[name]
    X, y, X_new = data
    noise = np.linspace(0.005, 0.05, len(y)) if per_point_noise else 0.01
    post = GaussianProcess(ours, noise_variance=noise).condition(X, y)
    reference = GaussianProcessRegressor(theirs, alpha=noise, optimizer=None).fit(X, y)
    mean, var = post.predict(X_new)
    ref_mean, ref_sd = reference.predict(X_new, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    np.testing.assert_allclose(var, ref_sd**2, atol=1e-6)
    _, cov = post.predict(X_new, full_cov=True)
    np.testing.assert_allclose(cov, reference.predict(X_new, return_cov=True)[1], atol=1e-6)
    assert post.log_marginal_likelihood == pytest.approx(reference.log_marginal_likelihood_value_, abs=1e-6)
    assert post.jitter == 0.0


def test_mean_and_noise_enter_where_they_should(data):
    X, y, X_new = data
    kernel = kernels.RBF(LENGTHSCALE)
    shifted = GaussianProcess(kernel, noise_variance=0.01, mean=3.0).condition(X, y + 3.0)
    plain = GaussianProcess(kernel, noise_variance=0.01).condition(X, y)
    np.testing.assert_allclose(shifted.predict(X_new)[0], plain.predict(X_new)[0] + 3.0, atol=1e-12)
    assert shifted.log_marginal_likelihood == pytest.approx(plain.log_marginal_likelihood, abs=1e-10)
    latent, noisy = plain.predict(X_new)[1], plain.predict(X_new, include_noise=True)[1]
    np.testing.assert_allclose(noisy - latent, 0.01, atol=1e-12)


def test_samples_have_the_posterior_moments(data):
    X, y, X_new = data
    post = GaussianProcess(kernels.Matern52(LENGTHSCALE), noise_variance=0.01).condition(X, y)
    draws = post.sample(X_new, 20_000, rng_key=3)
    mean, var = post.predict(X_new)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(var / 20_000) + 1e-12)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.06, atol=1e-10)  # sd of a variance estimate: 1% here


def test_inputs_repeated_five_times_with_tiny_noise_still_predict(data):
    X, y, X_new = data
    post = GaussianProcess(kernels.RBF(LENGTHSCALE), noise_variance=1e-12).condition(
        np.repeat(X, 5, axis=0), np.repeat(y, 5)
    )
    mean, var = post.predict(X_new)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)
    assert post.near_duplicates == 4 * len(X)
    # repeated exact observations: the posterior mean interpolates them
    np.testing.assert_allclose(post.predict(X)[0], y, atol=1e-4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: kernels.RBF(lengthscale=0.0), "lengthscale"),
        (lambda: kernels.Matern52(lengthscale=np.array([1.0, -1.0])), "lengthscale"),
        (lambda: kernels.Periodic(period=np.nan), "period"),
        (lambda: kernels.RBF(lengthscale=np.ones(0)), "lengthscale"),
        (lambda: kernels.Periodic(lengthscale=[1.0, 0.0]), "lengthscale"),
        (lambda: GaussianProcess(kernels.RBF(), noise_variance=-1.0), "noise_variance"),
        (lambda: GaussianProcess("rbf"), "kernel"),
        (lambda: kernels.RBF() + 1.0, "Constant"),
    ],
)
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("value", [None, True, "1.0", 1 + 2j, np.array([True, False])])
def test_hyperparameters_that_are_not_real_numbers_are_refused(value):
    # a bool would otherwise be taken as 1, and None or a string fail deep inside a computation
    with pytest.raises(TypeError, match="lengthscale must be (a )?real"):
        kernels.Matern52(lengthscale=value)
    with pytest.raises(TypeError, match="noise_variance must be (a )?real"):
        GaussianProcess(kernels.RBF(), noise_variance=value)
    with pytest.raises(TypeError, match="mean must be (a )?real"):
        GaussianProcess(kernels.RBF(), mean=value)


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.array([[0.0], [np.nan]]), np.zeros(2), "X contains NaN"),
        (np.zeros((2, 1)), np.array([0.0, np.inf]), "y contains NaN"),
        (np.zeros((3, 1)), np.zeros(2), "one value per row"),
        (np.zeros((0, 1)), np.zeros(0), "N >= 1"),
    ],
)
def test_bad_data_is_refused(X, y, message):
    with pytest.raises(ValueError, match=message):
        GaussianProcess(kernels.RBF()).condition(X, y)


def test_periodic_kernel_is_scikit_learns_on_one_column_and_a_product_over_columns(data):
    X, _, X_new = data
    ours = kernels.Periodic(0.7, 1.3, 2.0)
    theirs = sk.ConstantKernel(2.0) * sk.ExpSineSquared(0.7, 1.3)
    np.testing.assert_allclose(ours(X[:, :1]), theirs(X[:, :1]), atol=1e-12)
    np.testing.assert_allclose(ours(X[:, :1], X_new[:, :1]), theirs(X[:, :1], X_new[:, :1]), atol=1e-12)
    # on two columns: the product of one-column kernels, positive semi-definite, where
    # scikit-learn's Euclidean form has eigenvalues far below zero on the same inputs
    ard = kernels.Periodic([0.7, 1.1], [1.3, 2.0], 2.0)
    columns = kernels.Periodic(0.7, 1.3, 2.0)(X[:, :1]) * kernels.Periodic(1.1, 2.0, 1.0)(X[:, 1:])
    np.testing.assert_allclose(ard(X), columns, atol=1e-12)
    assert np.linalg.eigvalsh(np.asarray(ard(X))).min() > -1e-10
    assert np.linalg.eigvalsh(theirs(X)).min() < -1e-3


def test_an_ard_lengthscale_needs_one_entry_per_input_column():
    """Two lengthscales on one column would be broadcast (inputs read as two copies) rather than refused."""
    X, y = np.linspace(0, 1, 8), np.zeros(8)
    message = r"RBF's lengthscale has 2 entries, but the inputs have 1 column\(s\)"
    with pytest.raises(ValueError, match=message):
        GaussianProcess(kernels.RBF([1.0, 1.0])).condition(X, y)
    with pytest.raises(ValueError, match=message):
        GaussianProcess(kernels.Constant() * kernels.RBF([1.0, 1.0])).condition(X, y, inducing_points=X[::2])
    with pytest.raises(ValueError, match=r"Periodic's period has 2 entries"):
        GaussianProcess(kernels.Periodic(period=[1.0, 2.0])).condition(X, y)


def test_per_point_noise_must_match_the_data():
    with pytest.raises(ValueError, match="3 values but there are 2 points"):
        GaussianProcess(kernels.RBF(), noise_variance=np.ones(3)).condition(np.zeros((2, 1)), np.zeros(2))
    post = GaussianProcess(kernels.RBF(), noise_variance=np.ones(2)).condition(np.zeros((2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="include_noise"):
        post.predict(np.zeros((1, 1)), include_noise=True)
    with pytest.raises(ValueError, match="1 columns"):
        post.predict(np.zeros((1, 2)))


@pytest.mark.parametrize("kernel", [kernels.Matern12, kernels.Matern32, kernels.Matern52, kernels.RBF])
def test_compiled_kernel_gradients_match_finite_differences_on_1d_inputs(kernel):
    # points spread far from their centre: where round-off near the diagonal would
    # show through the Matérn kernels' square root
    import jax

    x = np.sort(np.random.default_rng(0).uniform(0, 10, 30))

    def total(lengthscale):
        return jax.numpy.sum(kernel(lengthscale, 1.0)(x))

    gradient = float(jax.jit(jax.grad(total))(1.0))
    finite_difference = (float(total(1.0 + 1e-6)) - float(total(1.0 - 1e-6))) / 2e-6
    assert gradient == pytest.approx(finite_difference, rel=1e-6)
    np.testing.assert_allclose(np.diag(jax.jit(lambda: kernel(1.0, 1.0)(x))()), 1.0, atol=1e-15)


def test_written_out_distance_gradients_equal_autodiff_of_the_differences():
    """The squared distances' hand-written reverse rule (matrix products) against
    autodiff through the (N1, N2, D) differences, for inputs far from the origin;
    second derivatives too (Laplace and NUTS differentiate it again)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(7, 3)) + 100, rng.normal(size=(5, 3)) + 100
    weights = rng.normal(size=(7, 5))
    for lengthscale in (1.3, np.array([0.5, 1.0, 2.0])):
        ours = lambda a, b, ell: jnp.sum(weights * kernels._scaled_sq_dist(a, b, ell))  # noqa: E731
        direct = lambda a, b, ell: jnp.sum(weights * jnp.sum(((a[:, None] - b[None]) / ell) ** 2, -1))  # noqa: E731
        for argnum in range(3):
            np.testing.assert_allclose(
                jax.grad(ours, argnum)(x1, x2, lengthscale), jax.grad(direct, argnum)(x1, x2, lengthscale), rtol=1e-9
            )
        for argnum in (0, 2):
            np.testing.assert_allclose(
                jax.hessian(ours, argnum)(x1, x2, jnp.asarray(lengthscale)),
                jax.hessian(direct, argnum)(x1, x2, jnp.asarray(lengthscale)),
                rtol=1e-9,
                atol=1e-10,
            )
