"""Gaussian mixture models: densities, the EM building blocks, and a NumPyro program.

Parameters come in two forms. The *public* form, used by every method a user calls
and by ``Result.params``, is ``{"weights": (K,), "means": (K, D), "covariances":
(K, D, D)}`` whatever the covariance type. The *native* form, used inside the EM
loop, stores covariances as the type needs them (full ``(K, D, D)``, diag ``(K, D)``,
spherical ``(K,)``, tied ``(D, D)``), so a diagonal mixture in many dimensions costs
``O(N K D)`` per iteration rather than ``O(N K D^2)``.
"""

import math
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from ._keys import as_key
from ._numerics import is_integer, is_positive_number

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
INITS = ("kmeans++", "kmeans", "random")
_LOG_2PI = math.log(2 * math.pi)
_KMEANS_MAX_ITER = 100


@dataclass(frozen=True)
class GaussianMixture:
    r"""A mixture of ``n_components`` Gaussians, :math:`p(x) = \sum_k \pi_k N(x \mid \mu_k, \Sigma_k)`.

    Fit it by maximum likelihood with :func:`bayeskit.inference.em` (or
    :func:`~bayeskit.inference.online_em` for data in batches), or treat it as a
    NumPyro program, with the component indicators marginalised, for
    :func:`~bayeskit.inference.nuts`, :func:`~bayeskit.inference.laplace` or
    :func:`~bayeskit.inference.svi`.

    Parameters
    ----------
    n_components : int
        Number of components K.
    covariance_type : {"full", "diag", "spherical", "tied"}
        Each component's own full covariance; its own diagonal one; its own single
        variance; or one full covariance shared by all components.
    weight_concentration, mean_scale, scale_scale : float
        Priors of the NumPyro program only (EM ignores them): weights ~
        Dirichlet(weight_concentration), means ~ Normal(0, mean_scale) with the
        first coordinate ordered across components (which removes label
        switching), standard deviations ~ HalfNormal(scale_scale), correlations ~
        LKJ(2). They suit standardised data; rescale them for other units. When K
        is known to be right, a ``weight_concentration`` above d/2 (d parameters
        per component: 5 for a full 2-D covariance) keeps every component in use
        (Rousseau & Mengersen 2011); at 1, NUTS warm-up started at random can strand
        a chain in a mode with an empty component, whose mean then drifts away from
        the data. Starting the chains at EM's fit avoids this (:meth:`program_values`).
    params : dict, optional
        Fitted parameters in the public form; ``em`` returns a model holding them.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeskit.inference import em
    >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-4, 4)])
    >>> res = em(GaussianMixture(2), x, progress=False)
    >>> np.sort(res.params["means"][:, 0]).round(0)
    array([-4.,  4.])
    """

    n_components: int = 1
    covariance_type: str = "full"
    weight_concentration: float = 1.0
    mean_scale: float = 10.0
    scale_scale: float = 5.0
    params: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        k = self.n_components
        if not is_integer(k):
            raise TypeError(f"n_components must be an int, got {type(k).__name__} {k!r}")
        if k < 1:
            raise ValueError(f"n_components must be >= 1, got {k}")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}")
        for name in ("weight_concentration", "mean_scale", "scale_scale"):
            value = getattr(self, name)
            if not is_positive_number(value):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    # ---------------------------------------------------------------- public API

    def log_prob(self, params, x) -> np.ndarray:
        """Log density of each row of ``x``: shape ``(N,)``."""
        native, x = self._checked(params, _given(x))
        return np.asarray(_log_mixture(self.covariance_type, native, self.prepare(x)))

    def responsibilities(self, params, x) -> np.ndarray:
        """Posterior component probabilities :math:`p(z_n = k \\mid x_n)`: shape ``(N, K)``."""
        native, x = self._checked(params, _given(x))
        log_joint = _log_joint(self.covariance_type, native, self.prepare(x))
        return np.asarray(jnp.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True)))

    def predict(self, params, x) -> np.ndarray:
        """Most probable component of each row: shape ``(N,)``, ints."""
        return np.argmax(self.responsibilities(params, x), axis=1)

    def sample(self, params, n: int, *, rng_key=0) -> np.ndarray:
        """``n`` draws from the mixture: shape ``(n, D)``."""
        native, _ = self._checked(params, None)
        if not is_integer(n) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        key = as_key(rng_key)
        pick, noise = jax.random.split(key)
        full = public_covariances(self.covariance_type, native)
        z = jax.random.categorical(pick, jnp.log(native["weights"]), shape=(int(n),))
        chol = jnp.linalg.cholesky(full)[z]
        eps = jax.random.normal(noise, (int(n), full.shape[-1]), full.dtype)
        return np.asarray(native["means"][z] + jnp.einsum("nde,ne->nd", chol, eps))

    def num_parameters(self, dim: int) -> int:
        """Free parameters for data of dimension ``dim`` (weights, means, covariances)."""
        k, d = self.n_components, dim
        covariance = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k, "tied": d * (d + 1) // 2}
        return covariance[self.covariance_type] + k * d + k - 1

    def bic(self, params, x) -> float:
        """Bayesian information criterion, :math:`-2 \\log L + p \\log N` (lower is better)."""
        log_lik = float(np.sum(self.log_prob(params, x)))
        return -2 * log_lik + self.num_parameters(np.shape(x)[1]) * math.log(np.shape(x)[0])

    def aic(self, params, x) -> float:
        """Akaike information criterion, :math:`-2 \\log L + 2 p` (lower is better)."""
        log_lik = float(np.sum(self.log_prob(params, x)))
        return -2 * log_lik + 2 * self.num_parameters(np.shape(x)[1])

    def program_values(self, params) -> dict[str, np.ndarray]:
        """``params`` (e.g. EM's ``res.params``) as values of the NumPyro program's latent
        sites, components ordered by their first mean coordinate as the program orders
        them: a start for ``nuts(gmm, x, init_values=gmm.program_values(res.params))``."""
        native, _ = self._checked(params, None)
        kind = self.covariance_type
        means = np.asarray(native["means"])
        order = np.argsort(means[:, 0])
        covariances = np.asarray(public_covariances(kind, native))[order]
        scales = np.sqrt(np.diagonal(covariances, axis1=1, axis2=2))
        values = {"weights": np.asarray(native["weights"])[order], "means_first": means[order, 0]}
        d = means.shape[1]
        if d > 1:
            values["means_rest"] = means[order, 1:]
        values["scales"] = {"full": scales, "diag": scales, "spherical": scales[:, 0], "tied": scales[0]}[kind]
        if kind in ("full", "tied") and d > 1:
            correlation = np.linalg.cholesky(covariances / (scales[:, :, None] * scales[:, None, :]))
            values["correlation"] = correlation if kind == "full" else correlation[0]
        return values

    # -------------------------------------------------------- the EM protocol
    # Pure functions of native parameters, traced inside the compiled EM loop.

    def prepare(self, x, reference=None):
        """The data as the EM loop reads it, computed once per fit.

        The points are centred (on their mean, or on ``reference``'s centre so that
        batches of a stream share one frame), and their second-moment features
        (the upper triangle of each outer product, or the squares for diagonal
        types) are stored, so that both E- and M-step are large matrix products
        over all points rather than per-component passes.
        """
        centre = jnp.mean(x, axis=0) if reference is None else reference["centre"]
        centred = x - centre
        if self.covariance_type in ("full", "tied"):
            rows, cols = np.triu_indices(x.shape[1])
            features = centred[:, rows] * centred[:, cols]
        else:
            features = centred**2
        return {"centred": centred, "features": features, "centre": centre}

    def initialize(self, rng_key, data, weights, *, init="kmeans++", means_init=None, reg_covar=1e-6):
        """Native parameters to start EM from, and the (K,) mask of components repaired.

        Centres come from ``means_init``, k-means++ seeding (Arthur & Vassilvitskii
        2007), k-means++ followed by Lloyd's iterations (``"kmeans"``), or distinct
        data points drawn at random; each point is assigned to its nearest centre and
        one M-step turns the hard assignment into parameters.
        """
        x = data["centred"]
        if means_init is not None:
            centres = jnp.asarray(means_init, x.dtype) - data["centre"]
        elif init == "random":
            index = jax.random.choice(rng_key, x.shape[0], (self.n_components,), replace=False, p=_normalise(weights))
            centres = x[index]
        else:
            centres = _kmeans_plusplus(rng_key, x, weights, self.n_components)
            if init == "kmeans":
                centres = _lloyd(x, weights, centres)
        distances = _squared_distances(x, centres)
        assignment = jax.nn.one_hot(jnp.argmin(distances, axis=1), self.n_components, dtype=x.dtype)
        stats = self._statistics(assignment * _normalise(weights)[:, None], data)
        params = self.m_step(stats, reg_covar)
        return self.repair(params, data, weights, -jnp.min(distances, axis=1), reg_covar)

    def e_step(self, params, data, weights):
        """Expected sufficient statistics under ``params`` and each point's log-likelihood.

        The statistics are per unit of total weight, in moment form: component
        weights, means and covariances before regularisation.
        """
        log_joint = _log_joint(self.covariance_type, params, data)
        log_lik = logsumexp(log_joint, axis=1)
        resp = jnp.exp(log_joint - log_lik[:, None])
        return self._statistics(resp * _normalise(weights)[:, None], data), log_lik

    def m_step(self, stats, reg_covar):
        """Maximum-likelihood native parameters from statistics; ``reg_covar`` is added to
        every variance so that no covariance is singular."""
        scatter = stats["covariances"]
        kind = self.covariance_type
        if kind == "tied":
            scatter = jnp.einsum("k,kde->de", stats["weights"], scatter)
        elif kind == "spherical":
            scatter = jnp.mean(scatter, axis=-1)
        if kind in ("full", "tied"):
            covariances = scatter + reg_covar * jnp.eye(scatter.shape[-1], dtype=scatter.dtype)
        else:
            covariances = scatter + reg_covar
        return {"weights": stats["weights"], "means": stats["means"], "covariances": covariances}

    def lower_bound(self, params, data, weights):
        """Mean log-likelihood per unit weight, the quantity EM never decreases."""
        return jnp.sum(_normalise(weights) * _log_mixture(self.covariance_type, params, data))

    def repair(self, params, data, weights, score, reg_covar):
        """Re-initialise collapsed components; return the parameters and the (K,) mask.

        A component is collapsed when it explains less than one point's worth of
        weight, or its mean or covariance is not finite (or not positive definite).
        It is moved to a poorly explained point (lowest ``score``, distinct points
        for several components), given the data's covariance and weight 1/K.
        """
        k = self.n_components
        total = jnp.sum(weights)
        healthy = jnp.all(jnp.isfinite(params["means"]), axis=1) & _positive_definite(self.covariance_type, params)
        collapsed = (params["weights"] * total < 1.0) | ~healthy | ~jnp.isfinite(params["weights"])
        worst = _lowest(jnp.where(weights > 0, score, jnp.inf), k)
        slot = jnp.clip(jnp.cumsum(collapsed) - 1, 0, k - 1)
        points = data["centred"][worst[slot]] + data["centre"]
        means = jnp.where(collapsed[:, None], points, params["means"])
        spread = self.m_step(self._statistics(_normalise(weights)[:, None], data), reg_covar)
        fallback = spread["covariances"]
        if self.covariance_type == "tied":
            covariances = jnp.where(healthy.all(), params["covariances"], fallback)
        else:
            mask = collapsed.reshape((k,) + (1,) * (fallback.ndim - 1))
            covariances = jnp.where(mask, fallback, params["covariances"])
        mixing = jnp.where(collapsed, 1.0 / k, params["weights"])
        return {"weights": mixing / jnp.sum(mixing), "means": means, "covariances": covariances}, collapsed

    def interpolate_stats(self, old, new, step_size):
        """The statistics of ``(1 - step_size) * old + step_size * new`` (stepwise EM).

        The interpolation is linear in the raw moments; in moment form each side's
        covariance picks up the spread of its mean about the combined mean
        (the parallel-variance rule of Chan et al. 1979).
        """
        a, b = (1 - step_size) * old["weights"], step_size * new["weights"]
        n = a + b
        safe = jnp.where(n > 0, n, 1.0)
        means = (a[:, None] * old["means"] + b[:, None] * new["means"]) / safe[:, None]

        def spread(stats, share):
            shift = stats["means"] - means
            outer = shift[:, :, None] * shift[:, None, :] if stats["covariances"].ndim == 3 else shift**2
            scale = (share / safe).reshape((-1,) + (1,) * (outer.ndim - 1))
            return scale * (stats["covariances"] + outer)

        return {"weights": n, "means": means, "covariances": spread(old, a) + spread(new, b)}

    def with_params(self, native) -> "GaussianMixture":
        """This model holding fitted parameters (converted to the public form)."""
        public = {
            "weights": np.asarray(native["weights"]),
            "means": np.asarray(native["means"]),
            "covariances": np.asarray(public_covariances(self.covariance_type, native)),
        }
        return replace(self, params=public)

    def _statistics(self, weighted_resp, data):
        """Moment-form statistics from responsibilities that sum to 1 over all points."""
        counts = jnp.sum(weighted_resp, axis=0)
        safe = jnp.where(counts > 0, counts, 1.0)[:, None]
        means = weighted_resp.T @ data["centred"] / safe  # in the centred frame
        second = weighted_resp.T @ data["features"] / safe
        if self.covariance_type in ("full", "tied"):
            scatter = _unpack_symmetric(second, means.shape[1]) - means[:, :, None] * means[:, None, :]
        else:
            scatter = second - means**2
        return {"weights": counts, "means": means + data["centre"], "covariances": scatter}

    # -------------------------------------------------------- NumPyro program

    def __call__(self, x=None, *, num_points=None, dim=None):
        """The mixture as a NumPyro program with the indicators summed out.

        Sites: ``weights``, ``means_first`` (the ordered first coordinate),
        ``means_rest``, ``scales``, ``correlation`` (full and tied), the deterministic
        ``means`` and ``covariances`` (K, D, D), and the observed ``x``. Without ``x``,
        give ``num_points`` and ``dim`` to simulate.
        """
        if x is None:
            if num_points is None or dim is None:
                raise ValueError("without x, give num_points and dim to simulate from the prior")
            n, d = int(num_points), int(dim)
        else:
            if jnp.ndim(x) != 2:
                raise ValueError(f"x must be 2-D (points, dimensions), got shape {jnp.shape(x)}")
            n, d = jnp.shape(x)
        k, kind = self.n_components, self.covariance_type
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(k, float(self.weight_concentration))))
        first = numpyro.sample("means_first", _SortedNormal(self.mean_scale, k))
        means = first[:, None]
        if d > 1:
            rest = numpyro.sample("means_rest", dist.Normal(0.0, self.mean_scale).expand([k, d - 1]).to_event(2))
            means = jnp.concatenate([means, rest], axis=1)
        means = numpyro.deterministic("means", means)
        scale_shape = {"full": (k, d), "diag": (k, d), "spherical": (k,), "tied": (d,)}[kind]
        scales = numpyro.sample("scales", dist.HalfNormal(self.scale_scale).expand(scale_shape).to_event())
        if kind == "spherical":
            scales = jnp.broadcast_to(scales[:, None], (k, d))
        if kind in ("full", "tied") and d > 1:
            lkj = dist.LKJCholesky(d, 2.0)
            correlation = numpyro.sample("correlation", lkj.expand([k]).to_event(1) if kind == "full" else lkj)
            scale_tril = scales[..., :, None] * correlation
        else:
            scale_tril = scales[..., :, None] * jnp.eye(d)
        scale_tril = jnp.broadcast_to(scale_tril, (k, d, d))
        numpyro.deterministic("covariances", scale_tril @ jnp.swapaxes(scale_tril, -1, -2))
        mixture = dist.MixtureSameFamily(
            dist.Categorical(probs=weights), dist.MultivariateNormal(means, scale_tril=scale_tril)
        )
        with numpyro.plate("data", n):
            numpyro.sample("x", mixture, obs=x)

    # ------------------------------------------------------------ validation

    def _checked(self, params, x):
        """Validate public parameters (and data) and return them in native form."""
        if not isinstance(params, dict) or not {"weights", "means", "covariances"} <= set(params):
            raise ValueError("params must be a dict with 'weights', 'means' and 'covariances' (e.g. res.params)")
        k = self.n_components
        weights, means, covs = (np.asarray(params[n], float) for n in ("weights", "means", "covariances"))
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(f"params['means'] must have shape ({k}, D), got {means.shape}")
        d = means.shape[1]
        expected = {"weights": (k,), "covariances": (k, d, d)}
        for name, value in (("weights", weights), ("covariances", covs)):
            if value.shape != expected[name]:
                raise ValueError(f"params[{name!r}] must have shape {expected[name]}, got {value.shape}")
        for name, value in (("weights", weights), ("means", means), ("covariances", covs)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"params[{name!r}] must be finite")
        if np.any(weights < 0) or abs(weights.sum() - 1) > 1e-6:
            raise ValueError(f"params['weights'] must be non-negative and sum to 1, got sum {weights.sum():.8g}")
        native = {"weights": jnp.asarray(weights), "means": jnp.asarray(means), "covariances": _native(self, covs)}
        if x is not None:
            x = np.asarray(x, float)
            if x.ndim != 2 or x.shape[1] != d or x.shape[0] == 0:
                raise ValueError(f"x must have shape (N, {d}) with N >= 1 to match params['means'], got {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError("x contains NaN or inf")
            x = jnp.asarray(x)
        return native, x


jax.tree_util.register_dataclass(
    GaussianMixture,
    data_fields=["params"],
    meta_fields=["n_components", "covariance_type", "weight_concentration", "mean_scale", "scale_scale"],
)


def _given(x):
    """Data for a method that needs it (``_checked`` reads None as "no data")."""
    if x is None:
        raise TypeError("x must be an array of shape (N, D), got None")
    return x


class _SortedNormal(dist.Distribution):
    """K iid Normal(0, scale) values in increasing order: density K! prod N(x_k) on the
    ordered cone, the ``ordered`` vector with a normal prior of Stan's mixture models."""

    support = constraints.ordered_vector

    def __init__(self, scale, size, *, validate_args=None):
        self.scale, self.size = scale, size
        super().__init__(event_shape=(size,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        draws = self.scale * jax.random.normal(key, sample_shape + (self.size,))
        return jnp.sort(draws, axis=-1)

    def log_prob(self, value):
        normal = dist.Normal(0.0, self.scale).log_prob(value).sum(-1)
        return normal + jax.scipy.special.gammaln(self.size + 1.0)


def public_covariances(kind: str, native):
    """Native covariances as (K, D, D) matrices."""
    k, d = native["means"].shape
    covs = native["covariances"]
    if kind == "full":
        return covs
    if kind == "tied":
        return jnp.broadcast_to(covs, (k, d, d))
    variances = covs if kind == "diag" else jnp.broadcast_to(covs[:, None], (k, d))
    return variances[:, :, None] * jnp.eye(d, dtype=variances.dtype)


def _native(model: GaussianMixture, covs: np.ndarray):
    """(K, D, D) covariances in the native form of ``model``, refused if not of that form
    (nothing is silently dropped) or not symmetric positive definite."""
    kind = model.covariance_type
    if not np.allclose(covs, np.swapaxes(covs, 1, 2), rtol=1e-10, atol=1e-12):
        raise ValueError("params['covariances'] must be symmetric")
    if np.any(np.linalg.eigvalsh(covs)[:, 0] <= 0):
        raise ValueError("params['covariances'] must be positive definite")
    variances = np.diagonal(covs, axis1=1, axis2=2)
    if kind == "full":
        return jnp.asarray(covs)
    if kind == "tied":
        if not np.allclose(covs, covs[:1], rtol=1e-10, atol=1e-12):
            raise ValueError("covariance_type='tied' needs the same covariance for every component")
        return jnp.asarray(covs[0])
    if not np.allclose(covs, variances[:, :, None] * np.eye(covs.shape[1]), rtol=0, atol=1e-12):
        raise ValueError(f"covariance_type={kind!r} needs diagonal covariances")
    if kind == "diag":
        return jnp.asarray(variances)
    if not np.allclose(variances, variances[:, :1], rtol=1e-10, atol=1e-12):
        raise ValueError("covariance_type='spherical' needs covariances that are multiples of the identity")
    return jnp.asarray(variances[:, 0])


def _log_gaussians(kind: str, params, data):
    """log N(x_n | mu_k, Sigma_k): shape (N, K).

    The Mahalanobis distance is expanded as x'Px - 2 x'P mu + mu'P mu in the
    centred frame, the quadratic term a product of the stored second-moment
    features with each precision matrix: one matrix product over all points.
    """
    x, features = data["centred"], data["features"]
    means = params["means"] - data["centre"]
    covs = params["covariances"]
    k, d = means.shape
    if kind in ("full", "tied"):
        chol = jnp.broadcast_to(jnp.linalg.cholesky(covs), (k, d, d))
        inverse = solve_triangular(chol, jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), chol.shape), lower=True)
        precision = jnp.swapaxes(inverse, -1, -2) @ inverse
        rows, cols = np.triu_indices(d)
        packed = precision[:, rows, cols] * jnp.where(rows == cols, 1.0, 2.0)
        linear = jnp.einsum("kde,ke->kd", precision, means)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    else:
        variances = covs if kind == "diag" else jnp.broadcast_to(covs[:, None], (k, d))
        packed = 1.0 / variances
        linear = means / variances
        log_det = jnp.sum(jnp.log(variances), axis=-1)
    constant = jnp.sum(linear * means, axis=-1)
    mahalanobis = features @ packed.T - 2 * x @ linear.T + constant
    return -0.5 * (d * _LOG_2PI + log_det + mahalanobis)


def _log_joint(kind, params, data):
    return jnp.log(params["weights"]) + _log_gaussians(kind, params, data)


def _log_mixture(kind, params, data):
    return logsumexp(_log_joint(kind, params, data), axis=1)


def _unpack_symmetric(packed, d):
    """(..., d(d+1)/2) upper triangles back to (..., d, d) symmetric matrices."""
    rows, cols = np.triu_indices(d)
    full = jnp.zeros(packed.shape[:-1] + (d, d), packed.dtype).at[..., rows, cols].set(packed)
    return full + jnp.swapaxes(jnp.triu(full, 1), -1, -2)


def _positive_definite(kind, params):
    covs = params["covariances"]
    if kind in ("full", "tied"):
        chol = jnp.linalg.cholesky(covs)
        ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1)) & jnp.all(jnp.diagonal(chol, axis1=-2, axis2=-1) > 0, -1)
        return jnp.broadcast_to(ok, params["weights"].shape)
    ok = jnp.isfinite(covs) & (covs > 0)
    return jnp.all(ok, axis=-1) if kind == "diag" else ok


def _lowest(score, k: int):
    """Indices of the ``k`` lowest scores, by repeated argmin: O(N k), where a sort-based
    top-k costs far more on CPU for the few components EM has."""

    def pick(score, _):
        index = jnp.argmin(score)
        return score.at[index].set(jnp.inf), index

    return jax.lax.scan(pick, score, None, length=k)[1]


def _normalise(weights):
    return weights / jnp.sum(weights)


def _squared_distances(x, centres):
    return jnp.maximum(jnp.sum(x**2, axis=1)[:, None] - 2 * x @ centres.T + jnp.sum(centres**2, axis=1)[None, :], 0.0)


def _kmeans_plusplus(rng_key, x, weights, k):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre is the
    best of ``2 + log k`` candidates drawn with probability proportional to weight
    times squared distance to the nearest centre, judged by the weighted potential."""
    trials = 2 + int(math.log(k))
    first_key, key = jax.random.split(rng_key)
    first = jax.random.choice(first_key, x.shape[0], p=_normalise(weights))
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    nearest = jnp.sum((x - x[first]) ** 2, axis=1)

    def add_centre(i, carry):
        centres, nearest, key = carry
        key, sub = jax.random.split(key)
        mass = weights * nearest
        # fewer distinct points than components: fall back to the weights
        p = jnp.where(jnp.sum(mass) > 0, mass, weights)
        candidates = jax.random.choice(sub, x.shape[0], (trials,), p=_normalise(p))
        after = jnp.minimum(nearest[None, :], _squared_distances(x, x[candidates]).T)  # (trials, N)
        best = jnp.argmin(after @ weights)
        return centres.at[i].set(x[candidates[best]]), after[best], key

    return jax.lax.fori_loop(1, k, add_centre, (centres, nearest, key))[0]


def _lloyd(x, weights, centres):
    """Weighted k-means (Lloyd) until assignments stop changing; empty clusters keep their centre."""
    k = centres.shape[0]

    def assign(centres):
        return jnp.argmin(_squared_distances(x, centres), axis=1)

    def update(carry):
        centres, labels, it, _ = carry
        member = jax.nn.one_hot(labels, k, dtype=x.dtype) * weights[:, None]
        mass = jnp.sum(member, axis=0)
        moved = (member.T @ x) / jnp.where(mass > 0, mass, 1.0)[:, None]
        centres = jnp.where((mass > 0)[:, None], moved, centres)
        new_labels = assign(centres)
        return centres, new_labels, it + 1, jnp.any(new_labels != labels)

    carry = (centres, assign(centres), 0, True)
    return jax.lax.while_loop(lambda c: c[3] & (c[2] < _KMEANS_MAX_ITER), update, carry)[0]
