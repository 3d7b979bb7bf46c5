"""Temporal bases for stimulus and spike-history filters, and the convolutions that
turn a signal into design-matrix columns.

A filter of ``length`` bins is written as ``basis.matrix @ weights``: a few smooth
functions instead of one coefficient per lag, so a filter over 100 ms at 1 ms
resolution costs 5 to 10 coefficients. Row ``l`` of ``matrix`` is the filter at the
``first_lag + l``-th bin back, where ``first_lag`` is chosen by the model (0 for a
stimulus filter, 1 for a spike-history filter, which may only see the past).
"""

import math
from dataclasses import dataclass

import numpy as np
import scipy.interpolate
import scipy.signal

from ._numerics import as_real_array, is_integer, is_positive_number


@dataclass(frozen=True)
class _Basis:
    """What every basis shares: ``n_basis`` functions on the ``round(window / dt)`` bins of a window."""

    n_basis: int
    window: float
    dt: float

    def __post_init__(self):
        if not is_integer(self.n_basis) or self.n_basis < 1:
            raise ValueError(f"n_basis must be an int >= 1, got {self.n_basis!r}")
        for name in ("window", "dt"):
            value = getattr(self, name)
            if not is_positive_number(value):
                raise ValueError(f"{name} must be a finite number > 0 (seconds), got {value!r}")
        if self.length < self.n_basis:
            raise ValueError(
                f"window / dt = {self.window} / {self.dt} gives {self.length} bins, fewer than n_basis = "
                f"{self.n_basis}: lengthen the window or use fewer basis functions"
            )

    @property
    def length(self) -> int:
        return int(round(self.window / self.dt))


@dataclass(frozen=True)
class RaisedCosine(_Basis):
    r"""Raised-cosine bumps equally spaced in log-stretched time (Pillow et al. 2008).

    :math:`\phi_k(t) = \tfrac12\big(1 + \cos(\mathrm{clip}(\pi (\log(t + c) - y_k) / (2\Delta), -\pi, \pi))\big)`
    with centres :math:`y_k` equally spaced by :math:`\Delta`, the first at :math:`t = 0`,
    the last placed so its bump ends exactly at ``window``. Each bump spans four
    spacings, so away from the first and last centres the bumps sum to a constant; the log stretch
    gives fine resolution at short lags and coarse at long ones, where filters are smooth.

    Parameters
    ----------
    n_basis : int
        Number of bumps.
    window : float
        Length of the filter in seconds.
    dt : float
        Bin width in seconds; the filter has ``round(window / dt)`` bins.
    stretch : float, optional
        :math:`c` in seconds: smaller is more stretched. Default ``window / 10``.

    Examples
    --------
    >>> basis = RaisedCosine(n_basis=5, window=0.05, dt=0.001)
    >>> basis.matrix.shape
    (50, 5)
    """

    stretch: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.stretch is not None and not (math.isfinite(self.stretch) and self.stretch > 0):
            raise ValueError(f"stretch must be None or a finite number > 0 (seconds), got {self.stretch!r}")

    @property
    def matrix(self) -> np.ndarray:
        """``(length, n_basis)``: column ``k`` is bump ``k`` on the bins of the window."""
        c = self.window / 10 if self.stretch is None else self.stretch
        first, end = math.log(c), math.log(self.window + c)
        k = self.n_basis
        # the last bump reaches zero at the window's end: y_K + 2 Delta = log(window + c)
        spacing = (end - first) / (k + 1) if k > 1 else (end - first) / 2
        centres = first + spacing * np.arange(k)
        x = np.log(np.arange(self.length) * self.dt + c)
        phase = np.clip(np.pi * (x[:, None] - centres[None]) / (2 * spacing), -np.pi, np.pi)
        return 0.5 * (1 + np.cos(phase))


@dataclass(frozen=True)
class BSpline(_Basis):
    """Clamped B-splines of ``degree`` on knots equally spaced over the window.

    Parameters
    ----------
    n_basis : int
        Number of splines, at least ``degree + 1``.
    window, dt : float
        Filter length and bin width in seconds.
    degree : int
        3 (cubic) by default.

    Examples
    --------
    >>> BSpline(n_basis=6, window=0.1, dt=0.001).matrix.sum(axis=1).round(12).min()
    1.0
    """

    degree: int = 3

    def __post_init__(self):
        super().__post_init__()
        if not is_integer(self.degree) or self.degree < 0:
            raise ValueError(f"degree must be an int >= 0, got {self.degree!r}")
        if self.n_basis < self.degree + 1:
            raise ValueError(f"n_basis must be >= degree + 1 = {self.degree + 1}, got {self.n_basis}")

    @property
    def matrix(self) -> np.ndarray:
        """``(length, n_basis)``; the splines sum to one at every bin."""
        inner = np.linspace(0.0, self.window, self.n_basis - self.degree + 1)
        knots = np.concatenate([np.zeros(self.degree), inner, np.full(self.degree, self.window)])
        t = np.arange(self.length) * self.dt
        return scipy.interpolate.BSpline.design_matrix(t, knots, self.degree).toarray()


def convolve(signal, basis, *, first_lag: int = 0) -> np.ndarray:
    r"""Causal convolution of every column of ``signal`` with every basis function.

    ``out[t, j, k] = sum_l basis[l, k] * signal[t - first_lag - l, j]``, the signal
    taken as zero before its first bin. Computed by FFT over the whole recording,
    so there is no loop over time.

    Parameters
    ----------
    signal : array (T,) or (T, d)
    basis : RaisedCosine, BSpline or array (L, K)
    first_lag : int
        The lag of the basis's first row: 0 lets bin ``t`` see ``signal[t]`` (a
        stimulus filter), 1 only the past (a spike-history filter).

    Returns
    -------
    array (T, d, K)
    """
    matrix = as_real_array("basis", basis.matrix if hasattr(basis, "matrix") else basis)
    signal = as_real_array("signal", signal)
    signal = signal[:, None] if signal.ndim == 1 else signal
    if signal.ndim != 2 or matrix.ndim != 2:
        raise ValueError(f"signal must be (T,) or (T, d) and the basis (L, K); got {signal.shape} and {matrix.shape}")
    if not is_integer(first_lag) or first_lag < 0:
        raise ValueError(f"first_lag must be an int >= 0, got {first_lag!r}")
    if not (np.all(np.isfinite(signal)) and np.all(np.isfinite(matrix))):
        raise ValueError("signal and basis must be finite (no NaN or inf)")
    T = signal.shape[0]
    if matrix.shape[0] + first_lag > T:
        raise ValueError(f"the basis spans {matrix.shape[0] + first_lag} bins, longer than the recording of {T} bins")
    full = scipy.signal.fftconvolve(signal[:, :, None], matrix[:, None, :], axes=0)[: T - first_lag]
    return np.concatenate([np.zeros((first_lag,) + full.shape[1:]), full], axis=0)
