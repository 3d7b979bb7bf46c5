"""Spike-train models: the LNP cascade, the coupled population GLM of Pillow et al.
(2008), and the spike-triggered moments.

Both models are Poisson GLMs on designs built from the recording, so :func:`fit_glm`
fits them through the protocol described in ``_glm``. Time runs down axis 0 in
bins; a stimulus filter sees lags 0, 1, ... (the current bin and before) and a
spike-history or coupling filter lags 1, 2, ... (the past only).
"""

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import bases
from ._glm import GLM, LinearProblem, observation_vector
from ._keys import as_key
from ._numerics import as_real_array, is_integer, is_positive_number

_POISSON = GLM("poisson")


def _check_stimulus(stimulus, num_bins: int | None = None) -> np.ndarray:
    stimulus = as_real_array("stimulus", stimulus)
    stimulus = stimulus[:, None] if stimulus.ndim == 1 else stimulus
    if stimulus.ndim != 2 or stimulus.shape[0] == 0:
        raise ValueError(f"stimulus must have shape (T,) or (T, stim_dim) with T >= 1, got {np.shape(stimulus)}")
    if not np.all(np.isfinite(stimulus)):
        raise ValueError(f"stimulus must be finite; found {int(np.sum(~np.isfinite(stimulus)))} NaN or infinite values")
    if num_bins is not None and stimulus.shape[0] != num_bins:
        raise ValueError(f"stimulus has {stimulus.shape[0]} bins but spikes has {num_bins}: they must match")
    return stimulus


def _check_spikes(spikes, *, ndim: int | None = None) -> np.ndarray:
    spikes = _POISSON.check_response(spikes, "spikes")
    if ndim == 1 and spikes.ndim != 1:
        raise ValueError(f"spikes must have shape (T,) (one neuron), got {spikes.shape}")
    spikes = spikes[:, None] if spikes.ndim == 1 else spikes
    if spikes.ndim != 2 or spikes.shape[0] == 0:
        raise ValueError(f"spikes must have shape (T,) or (T, n_neurons) with T >= 1, got {spikes.shape}")
    return spikes


def _check_filter_length(filter_length, num_bins: int) -> int:
    if not is_integer(filter_length) or filter_length < 1:
        raise ValueError(f"filter_length must be an int >= 1, got {filter_length!r}")
    if filter_length > num_bins:
        raise ValueError(f"filter_length {filter_length} is longer than the recording of {num_bins} bins")
    return int(filter_length)


def lagged(stimulus: np.ndarray, filter_length: int) -> np.ndarray:
    """``(T, filter_length, d)``: row ``t`` holds ``stimulus[t - l]`` at lag ``l`` (zero before the start)."""
    T, d = stimulus.shape
    padded = np.concatenate([np.zeros((filter_length - 1, d)), stimulus])
    windows = np.lib.stride_tricks.sliding_window_view(padded, filter_length, axis=0)  # (T, d, L), oldest first
    return np.ascontiguousarray(windows[:, :, ::-1].transpose(0, 2, 1))


def _spike_triggered_ensemble(stimulus, spikes, filter_length):
    spikes = _check_spikes(spikes, ndim=1)[:, 0]
    stimulus = _check_stimulus(stimulus, spikes.shape[0])
    filter_length = _check_filter_length(filter_length, spikes.shape[0])
    # only spikes whose whole window lies inside the recording
    counts = spikes[filter_length - 1 :]
    if counts.sum() == 0:
        raise ValueError(f"no spikes after bin {filter_length - 1}: the spike-triggered ensemble is empty")
    windows = lagged(stimulus, filter_length)[filter_length - 1 :].reshape(counts.shape[0], -1)
    return windows, counts, stimulus.shape[1]


def spike_triggered_average(stimulus, spikes, filter_length: int) -> np.ndarray:
    r"""The mean stimulus before a spike: ``(filter_length, stim_dim)``.

    Row ``l`` is :math:`\sum_t n_t s_{t-l} / \sum_t n_t`, lag 0 being the spike's own
    bin; spikes earlier than bin ``filter_length - 1`` (whose window would reach
    before the recording) are left out. Under a Gaussian white-noise stimulus the STA
    is proportional to an LNP's linear filter (Chichilnisky 2001).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=20000)
    >>> spikes = rng.poisson(np.exp(-2 + np.convolve(s, [1.0, 0.5])[:20000]))
    >>> sta = spike_triggered_average(s, spikes, 3)[:, 0]
    >>> bool(sta[0] > sta[1] > abs(sta[2]))
    True
    """
    windows, counts, d = _spike_triggered_ensemble(stimulus, spikes, filter_length)
    return (counts @ windows / counts.sum()).reshape(-1, d)


def spike_triggered_covariance(stimulus, spikes, filter_length: int) -> np.ndarray:
    r"""Covariance of the spike-triggered stimulus windows: ``(L * d, L * d)``.

    Windows are flattened lag-major, as ``spike_triggered_average(...).ravel()``:
    :math:`C = \sum_t n_t (x_t - \bar x)(x_t - \bar x)^\top / (\sum_t n_t - 1)`.
    Compare its eigenvalues with the raw stimulus's covariance: directions where the
    variance rises or falls are the features a neuron is sensitive to beyond the STA
    (Schwartz et al. 2006).
    """
    windows, counts, _ = _spike_triggered_ensemble(stimulus, spikes, filter_length)
    total = counts.sum()
    if total < 2:
        raise ValueError("the spike-triggered covariance needs at least two spikes")
    centred = windows - counts @ windows / total
    return (centred * counts[:, None]).T @ centred / (total - 1)


@dataclass(frozen=True)
class LNP:
    """Linear-nonlinear-Poisson neuron: ``spikes_t ~ Poisson(f(b + sum_l k_l . s_{t-l}))``.

    One coefficient per lag and stimulus dimension (no basis): the maximum-likelihood
    filter of :func:`fit_glm` is consistent for any stimulus distribution, unlike the
    STA, which needs a spherical one (Paninski 2004).

    Parameters
    ----------
    filter_length : int
        Lags 0 .. filter_length - 1.
    nonlinearity : {"exp", "softplus"}
        The inverse link; the rate is in spikes per bin.

    Examples
    --------
    >>> from bayeskit.inference import fit_glm
    >>> rng = np.random.default_rng(1)
    >>> s = rng.normal(size=(30000, 1))
    >>> k = np.array([0.6, 0.3, -0.2])
    >>> spikes = rng.poisson(np.exp(-1.5 + lagged(s, 3)[:, :, 0] @ k))
    >>> res = fit_glm(LNP(filter_length=3), s, spikes, progress=False)
    >>> np.round(res.params["filter"][:, 0], 1)
    array([ 0.6,  0.3, -0.2])
    """

    filter_length: int = 20
    nonlinearity: str = "exp"

    def __post_init__(self):
        _check_filter_length(self.filter_length, self.filter_length)
        if self.nonlinearity not in ("exp", "softplus"):
            raise ValueError(f"nonlinearity must be 'exp' or 'softplus', got {self.nonlinearity!r}")

    @property
    def glm(self) -> GLM:
        return GLM("poisson", link="log" if self.nonlinearity == "exp" else "softplus")

    def design(self, stimulus, num_bins: int) -> np.ndarray:
        stimulus = _check_stimulus(stimulus, num_bins)
        _check_filter_length(self.filter_length, num_bins)
        return lagged(stimulus, self.filter_length).reshape(num_bins, -1)

    def linear_problem(self, stimulus, spikes, *, offset=None, weights=None) -> LinearProblem:
        spikes = _check_spikes(spikes, ndim=1)
        X = self.design(stimulus, spikes.shape[0])
        n = X.shape[0]
        return LinearProblem(
            X, spikes, observation_vector(offset, "offset", n, 0.0),
            observation_vector(weights, "weights", n, 1.0, nonnegative=True),
            np.ones((1, 1 + X.shape[1]), bool), self.glm,
        )  # fmt: skip

    def unpack(self, coefficients, *, derived: bool = True) -> dict:
        del derived  # the filter is the coefficients themselves
        coefficients = np.asarray(coefficients)[..., 0, :]
        shape = coefficients.shape[:-1] + (self.filter_length, -1)
        return {"intercept": coefficients[..., 0], "filter": coefficients[..., 1:].reshape(shape)}

    def spike_probability(self, params, stimulus, spikes) -> np.ndarray:
        """P(at least one spike) in each bin: ``(T, 1)``."""
        spikes = _check_spikes(spikes, ndim=1)
        X = self.design(stimulus, spikes.shape[0])
        eta = X @ np.ravel(params["filter"]) + params["intercept"]
        return np.asarray(self.glm.event_probability(jnp.asarray(eta)))[:, None]

    def __call__(self, stimulus, spikes=None):
        """As a NumPyro program: flat priors on ``intercept`` and ``filter``, then ``spikes``."""
        import numpyro
        import numpyro.distributions as dist

        X = jnp.asarray(self.design(stimulus, np.shape(stimulus)[0]))
        d = X.shape[1] // self.filter_length
        intercept = numpyro.sample("intercept", dist.ImproperUniform(dist.constraints.real, (), ()))
        k = numpyro.sample("filter", dist.ImproperUniform(dist.constraints.real, (), (self.filter_length, d)))
        rate = self.glm.mean(X @ k.ravel() + intercept)
        with numpyro.plate("time", X.shape[0]):
            return numpyro.sample("spikes", dist.Poisson(rate), obs=None if spikes is None else jnp.asarray(spikes))


@dataclass(frozen=True)
class PopulationGLM:
    r"""Coupled Poisson GLM of a neural population (Pillow et al. 2008).

    Neuron :math:`i` spikes in bin :math:`t` with rate (spikes per second)

    .. math:: \lambda_{it} = \exp\big(b_i + (k_i * s)_t + \textstyle\sum_j (h_{ij} * n_j)_{t-1}\big),

    so its count is :math:`\mathrm{Poisson}(\lambda_{it}\,dt)`. The stimulus filters
    :math:`k_i` are combinations of ``stimulus_basis``; the history filter
    :math:`h_{ii}` and the coupling filters :math:`h_{ij}` of ``history_basis``
    (the past only). With ``coupling=False`` each neuron sees only its own history.

    Fitted parameters (``res.params``): ``intercept`` (n,) in log spikes/s;
    ``stimulus_weights`` (n, stim_dim, K_s) and the filters they make,
    ``stimulus_filter`` (n, L_s, stim_dim); ``coupling_weights`` (n, n, K_h) and
    ``coupling_filters`` (n, n, L_h), row ``i`` receiving from column ``j``, the
    diagonal being each neuron's own history filter (row ``l`` is lag ``l + 1``).

    Examples
    --------
    >>> basis = bases.RaisedCosine(n_basis=4, window=0.02, dt=0.001)
    >>> pop = PopulationGLM(stimulus_basis=basis, history_basis=basis, dt=0.001)
    >>> params = {"intercept": np.log([20.0, 30.0]), "stimulus_weights": np.ones((2, 1, 4)),
    ...           "coupling_weights": -np.ones((2, 2, 4))}
    >>> pop.simulate(params, np.zeros(1000), rng_key=0).shape
    (1000, 2)
    """

    stimulus_basis: object
    history_basis: object | None = None
    coupling: bool = True
    dt: float = 0.001

    def __post_init__(self):
        for name in ("stimulus_basis", "history_basis"):
            basis = getattr(self, name)
            if basis is None and name == "history_basis":
                continue
            if not hasattr(basis, "matrix"):
                raise TypeError(f"{name} must be a basis from bayeskit.models.bases, got {type(basis).__name__}")
        if not is_positive_number(self.dt):
            raise ValueError(f"dt must be a finite number > 0 (seconds), got {self.dt!r}")
        for name in ("stimulus_basis", "history_basis"):
            basis_dt = getattr(getattr(self, name), "dt", self.dt)  # a basis carries its bin width
            if not math.isclose(basis_dt, self.dt, rel_tol=1e-9):
                raise ValueError(f"{name} has bins of dt={basis_dt} s but the model's dt is {self.dt} s: "
                                 "its filters would span a different time than the basis says")  # fmt: skip

    @property
    def glm(self) -> GLM:
        return _POISSON

    @property
    def _num_basis(self) -> tuple[int, int]:
        """(K_s, K_h): stimulus and history basis sizes (K_h = 0 without history)."""
        k_h = 0 if self.history_basis is None else self.history_basis.matrix.shape[1]
        return self.stimulus_basis.matrix.shape[1], k_h

    def design(self, stimulus, spikes) -> np.ndarray:
        """``(T, stim_dim * K_s + n * K_h)``: stimulus features, then each neuron's history features."""
        T = spikes.shape[0]
        stimulus = _check_stimulus(stimulus, T)
        columns = [bases.convolve(stimulus, self.stimulus_basis, first_lag=0).reshape(T, -1)]
        if self.history_basis is not None:
            columns.append(bases.convolve(spikes, self.history_basis, first_lag=1).reshape(T, -1))
        return np.concatenate(columns, axis=1)

    def linear_problem(self, stimulus, spikes, *, offset=None, weights=None) -> LinearProblem:
        spikes = _check_spikes(spikes)
        X = self.design(stimulus, spikes)
        T, n = spikes.shape
        k_h = self._num_basis[1]
        free = np.ones((n, 1 + X.shape[1]), bool)
        if not self.coupling and k_h:
            free[:, X.shape[1] + 1 - n * k_h :] = np.kron(np.eye(n, dtype=bool), np.ones((1, k_h), bool))
        offset = observation_vector(offset, "offset", T, 0.0) + math.log(self.dt)
        return LinearProblem(
            X, spikes, offset, observation_vector(weights, "weights", T, 1.0, nonnegative=True), free, _POISSON
        )

    def unpack(self, coefficients, *, derived: bool = True) -> dict:
        coefficients = np.asarray(coefficients)
        lead = coefficients.shape[:-2]
        n, q = coefficients.shape[-2:]
        k_s, k_h = self._num_basis
        p_s = q - 1 - n * k_h
        out = {
            "intercept": coefficients[..., 0],
            "stimulus_weights": coefficients[..., 1 : 1 + p_s].reshape(lead + (n, p_s // k_s, k_s)),
        }
        if k_h:
            out["coupling_weights"] = coefficients[..., 1 + p_s :].reshape(lead + (n, n, k_h))
        if derived:
            out.update(self.filters(out))
        return out

    def filters(self, params) -> dict:
        """The stimulus filters ``(..., n, L_s, stim_dim)`` and coupling filters
        ``(..., n, n, L_h)`` that the basis weights in ``params`` make."""
        out = {"stimulus_filter": np.einsum("lk,...ndk->...nld", self.stimulus_basis.matrix,
                                            np.asarray(params["stimulus_weights"]))}  # fmt: skip
        if self.history_basis is not None:
            out["coupling_filters"] = np.einsum(
                "lk,...ijk->...ijl", self.history_basis.matrix, np.asarray(params["coupling_weights"])
            )
        return out

    def _coefficients(self, params, n: int) -> np.ndarray:
        if np.size(params["intercept"]) != n:
            raise ValueError(f"params are for {np.size(params['intercept'])} neurons, but spikes has {n} columns")
        parts = [np.reshape(params["intercept"], (n, 1)), np.reshape(params["stimulus_weights"], (n, -1))]
        if self.history_basis is not None:
            parts.append(np.reshape(params["coupling_weights"], (n, -1)))
        return np.concatenate(parts, axis=1)

    def log_rate(self, params, stimulus, spikes) -> np.ndarray:
        """``log lambda`` (T, n) in log spikes/s, given the recorded spikes as history."""
        spikes = _check_spikes(spikes)
        beta = self._coefficients(params, spikes.shape[1])
        return self.design(stimulus, spikes) @ beta[:, 1:].T + beta[:, 0]

    def spike_probability(self, params, stimulus, spikes) -> np.ndarray:
        """P(at least one spike) per bin and neuron: ``1 - exp(-lambda dt)``, (T, n)."""
        return -np.expm1(-np.exp(self.log_rate(params, stimulus, spikes)) * self.dt)

    def branching_ratio(self, params, stimulus=None) -> float:
        r"""Spectral radius of the excitatory part of
        :math:`A_{ij} = \bar\lambda_i\,dt \sum_l (e^{h_{ij}[l]} - 1)`:
        the extra spikes of neuron ``i`` that one spike of ``j`` causes at the mean
        rate :math:`\bar\lambda_i` without feedback (``exp(b_i)``, or with a ``stimulus``
        the mean of its stimulus-driven rate). At 1 or more a burst feeds itself."""
        if self.history_basis is None:
            return 0.0
        h = self.filters(params)["coupling_filters"]
        if stimulus is None:
            rate = np.exp(np.asarray(params["intercept"], float))
        else:
            rate = np.exp(self._stimulus_drive(params, _check_stimulus(stimulus))).mean(axis=0)
        gain = (rate * self.dt)[:, None] * np.sum(np.expm1(h), axis=-1)
        # inhibition (negative entries) cannot feed a burst: the Perron root of the excitatory part
        return float(np.max(np.abs(np.linalg.eigvals(np.maximum(gain, 0.0)))))

    def _checked_params(self, params, stim_dim: int) -> dict:
        """``params`` (e.g. ``res.params`` of a fit) as finite float arrays of this model's sizes."""
        names = ("intercept", "stimulus_weights") + (() if self.history_basis is None else ("coupling_weights",))
        if not isinstance(params, dict) or not set(names) <= set(params):
            raise ValueError(f"params must be a dict with {list(names)} (e.g. res.params of fit_glm)")
        values = {name: np.asarray(params[name], float) for name in names}
        n = values["intercept"].size
        k_s, k_h = self._num_basis
        sizes = {"intercept": n, "stimulus_weights": n * stim_dim * k_s, "coupling_weights": n * n * k_h}
        for name, value in values.items():
            if value.size != sizes[name]:
                raise ValueError(f"params[{name!r}] has {value.size} values; {n} neurons with a {stim_dim}-column "
                                 f"stimulus need {sizes[name]}")  # fmt: skip
            if not np.all(np.isfinite(value)):
                raise ValueError(f"params[{name!r}] must be finite")
        return {**params, **values}

    def _stimulus_drive(self, params, stimulus) -> np.ndarray:
        """``b_i + (k_i * s)_t`` in log spikes/s, (T, n)."""
        features = bases.convolve(stimulus, self.stimulus_basis).reshape(stimulus.shape[0], -1)
        n = np.size(params["intercept"])
        return features @ np.reshape(params["stimulus_weights"], (n, -1)).T + np.reshape(params["intercept"], n)

    def simulate(self, params, stimulus, *, rng_key=0) -> np.ndarray:
        """Spike counts ``(T, n)`` drawn bin by bin, each bin's history fed back.

        Warns (RuntimeWarning) when :meth:`branching_ratio` is 1 or more, and raises if
        a rate overflows: the fitted couplings then excite without bound.
        """
        stimulus = _check_stimulus(stimulus)
        params = self._checked_params(params, stimulus.shape[1])
        ratio = self.branching_ratio(params, stimulus)
        if ratio >= 1:
            warnings.warn(
                f"the coupling filters' branching ratio is {ratio:.3g} >= 1: the simulated population may "
                "excite itself without bound", RuntimeWarning, stacklevel=2,
            )  # fmt: skip
        drive = self._stimulus_drive(params, stimulus) + math.log(self.dt)
        n = drive.shape[1]
        history = np.zeros((n, n, 1)) if self.history_basis is None else self.filters(params)["coupling_filters"]
        spikes, overflow = _simulate(jnp.asarray(drive), jnp.asarray(history), as_key(rng_key))
        if bool(overflow):
            raise FloatingPointError(
                "simulate: a rate overflowed, so the population excited itself without bound "
                f"(branching ratio {ratio:.3g}); the coupling filters are unstable for this stimulus"
            )
        return np.asarray(spikes)

    def compare_psth(self, params, stimulus, trials, *, smoothing: float = 0.005, rng_key=0) -> "PSTHComparison":
        """Peri-stimulus time histograms of recorded repeats against the model's.

        ``stimulus`` is the repeated segment (S,) or (S, stim_dim) and ``trials`` the
        recorded counts ``(num_trials, S, n)``. As many trials are simulated, the segment
        played back to back as in the recording, and both PSTHs (spikes/s) are smoothed
        by a Gaussian of ``smoothing`` seconds. Per neuron: their correlation and the
        share of the recorded PSTH's variance about its mean that the model's explains.
        """
        stimulus = _check_stimulus(stimulus)
        trials = _POISSON.check_response(trials, "trials")
        if trials.ndim != 3 or trials.shape[1] != stimulus.shape[0]:
            raise ValueError(
                f"trials must have shape (num_trials, {stimulus.shape[0]}, n_neurons) to match the stimulus "
                f"segment, got {trials.shape}"
            )
        if not (math.isfinite(smoothing) and smoothing > 0):
            raise ValueError(f"smoothing must be a finite number > 0 (seconds), got {smoothing!r}")
        num_trials, length, _ = trials.shape
        simulated = self.simulate(params, np.tile(stimulus, (num_trials, 1)), rng_key=rng_key)
        observed = _psth(trials, self.dt, smoothing)
        model = _psth(simulated.reshape(num_trials, length, -1), self.dt, smoothing)
        centred = observed - observed.mean(0)
        correlation = np.array([np.corrcoef(o, m)[0, 1] for o, m in zip(observed.T, model.T, strict=True)])
        explained = 1 - np.sum((observed - model) ** 2, 0) / np.sum(centred**2, 0)
        return PSTHComparison(observed, model, correlation, explained)

    def __call__(self, stimulus, spikes):
        """As a NumPyro program (flat priors on every coefficient), conditioned on the
        recorded ``spikes`` as history: the likelihood :func:`fit_glm` maximises."""
        import numpyro
        import numpyro.distributions as dist

        spikes = _check_spikes(spikes)
        X = jnp.asarray(self.design(stimulus, spikes))
        T, n = spikes.shape
        k_s, k_h = self._num_basis
        flat = partial(dist.ImproperUniform, dist.constraints.real, ())
        parts = [numpyro.sample("intercept", flat((n,)))[:, None]]
        stim_dim = (X.shape[1] - n * k_h) // k_s
        parts.append(numpyro.sample("stimulus_weights", flat((n, stim_dim, k_s))).reshape(n, -1))
        if k_h:
            w = numpyro.sample("coupling_weights", flat((n, n, k_h)))
            if not self.coupling:
                w = w * jnp.eye(n)[:, :, None]
            parts.append(w.reshape(n, -1))
        beta = jnp.concatenate(parts, axis=1)
        rate = jnp.exp(X @ beta[:, 1:].T + beta[:, 0]) * self.dt
        with numpyro.plate("time", T, dim=-2), numpyro.plate("neurons", n, dim=-1):
            return numpyro.sample("spikes", dist.Poisson(rate), obs=jnp.asarray(spikes))


class PSTHComparison(NamedTuple):
    observed: np.ndarray  # (S, n) recorded PSTH, spikes/s
    simulated: np.ndarray  # (S, n) the model's
    correlation: np.ndarray  # (n,)
    explained_variance: np.ndarray  # (n,) 1 - SSE / SS of the recorded PSTH about its mean


def _psth(trials, dt: float, smoothing: float) -> np.ndarray:
    """Trial-averaged rate (S, n) in spikes/s, smoothed by a Gaussian of sd ``smoothing`` s."""
    rate = trials.mean(axis=0) / dt
    width = max(1, int(round(smoothing / dt)))
    kernel = np.exp(-0.5 * (np.arange(-4 * width, 4 * width + 1) / width) ** 2)
    kernel /= kernel.sum()
    return np.stack([np.convolve(column, kernel, mode="same") for column in rate.T], axis=1)


@jax.jit
def _simulate(drive, history, key):
    """Poisson counts bin by bin; ``history`` (n, n, L) acts on the last L bins, newest first."""
    T, n = drive.shape
    L = history.shape[-1]

    def step(carry, inputs):
        past, overflow = carry  # past: (L, n), row 0 the previous bin
        d, k = inputs
        log_rate = d + jnp.einsum("ijl,lj->i", history, past)
        rate = jnp.exp(log_rate)
        counts = jax.random.poisson(k, rate).astype(drive.dtype)
        past = jnp.concatenate([counts[None], past[:-1]], axis=0)
        return (past, overflow | ~jnp.all(jnp.isfinite(rate))), counts

    keys = jax.random.split(key, T)
    (_, overflow), spikes = jax.lax.scan(step, (jnp.zeros((L, n), drive.dtype), jnp.asarray(False)), (drive, keys))
    return spikes, overflow
