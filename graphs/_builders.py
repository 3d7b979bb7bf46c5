"""Ready-made factor graphs: Ising and Potts grids, and the hidden Markov chain."""

import jax
import numpy as np

from bayeskit.models._keys import as_key
from bayeskit.models._numerics import as_real_array, is_integer

from ._factor_graph import FactorGraph


def grid_name(i: int, j: int) -> str:
    """The name of the variable at row ``i``, column ``j`` of a grid."""
    return f"x_{i}_{j}"


def ising_grid(n: int, m: int, coupling=1.0, field=0.0, rng_key=None) -> FactorGraph:
    """An ``n x m`` Ising model with spins ``s = -1, +1`` (states 0 and 1) and 4-neighbour couplings.

    .. math:: \\log p(s) = \\sum_{i \\sim j} J_{ij} s_i s_j + \\sum_i h_i s_i - \\log Z.

    Parameters
    ----------
    n, m : int
        Rows and columns; the variable at ``(i, j)`` is named ``f"x_{i}_{j}"``.
    coupling : float
        ``J``: uniform, or with ``rng_key`` the half-width of ``J_ij ~ U(-J, J)``.
    field : float or array of shape (n, m)
        ``h``: uniform or per site, or with ``rng_key`` the scale of ``h_i ~ N(0, h^2)``
        (a spin glass). A per-site field (e.g. ``beta * noisy_image``) is how image
        denoising enters.
    rng_key : int or PRNG key, optional
    """
    signs = np.array([-1.0, 1.0])
    return _grid(
        n,
        m,
        2,
        (-1, 1),
        coupling,
        field,
        rng_key,
        pair=lambda J: J * np.outer(signs, signs),
        unary=lambda h: h[..., None] * signs,
    )


def potts_grid(n: int, m: int, num_states: int, coupling=1.0, field=0.0, rng_key=None) -> FactorGraph:
    """An ``n x m`` Potts model: ``log psi(x_i, x_j) = J_ij [x_i = x_j]`` and ``log psi(x_i) = h_i[x_i]``.

    ``coupling`` and ``rng_key`` as in :func:`ising_grid`; ``field`` is a scalar
    (uniform, or with ``rng_key`` the scale of ``h_ik ~ N(0, h^2)``) or an array of
    shape ``(n, m, num_states)`` of per-site, per-state log potentials.
    """
    if not is_integer(num_states) or num_states < 2:
        raise ValueError(f"num_states must be an int >= 2, got {num_states!r}")
    eye = np.eye(num_states)
    return _grid(n, m, num_states, None, coupling, field, rng_key, pair=lambda J: J * eye, unary=lambda h: h)


def _grid(n, m, k, states, coupling, field, rng_key, pair, unary) -> FactorGraph:
    for name, value in (("n", n), ("m", m)):
        if not is_integer(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    coupling = float(coupling)
    if not np.isfinite(coupling):
        raise ValueError(f"coupling must be finite, got {coupling}")
    field_shape = (n, m) if states is not None else (n, m, k)
    field = as_real_array("field", field)
    if field.shape not in ((), field_shape) or not np.isfinite(field).all():
        raise ValueError(f"field must be a finite scalar or an array of shape {field_shape}, got shape {field.shape}")
    edges = [((i, j), (i, j + 1)) for i in range(n) for j in range(m - 1)]
    edges += [((i, j), (i + 1, j)) for i in range(n - 1) for j in range(m)]
    if rng_key is None:
        couplings = np.full(len(edges), coupling)
        fields = np.broadcast_to(field, field_shape)
    else:
        if field.ndim:
            raise ValueError("with rng_key, field must be a scalar (the scale of the random fields)")
        key_j, key_h = jax.random.split(as_key(rng_key))
        couplings = coupling * np.asarray(jax.random.uniform(key_j, (len(edges),), minval=-1.0, maxval=1.0))
        fields = float(field) * np.asarray(jax.random.normal(key_h, field_shape))

    fg = FactorGraph()
    for i in range(n):
        for j in range(m):
            fg.add_variable(grid_name(i, j), k, states=states)
    for i in range(n):
        for j in range(m):
            fg.add_factor([grid_name(i, j)], log_table=unary(fields[i, j]))
    for (a, b), J in zip(edges, couplings, strict=True):
        fg.add_factor([grid_name(*a), grid_name(*b)], log_table=pair(J))
    return fg


def chain(initial, transition, emission=None, observations=None) -> FactorGraph:
    """A Markov chain, or a hidden Markov model, as a factor graph (BP on it is forward–backward).

    Parameters
    ----------
    initial : array (K,)
        ``p(z_0)``.
    transition : array (K, K)
        ``transition[a, b] = p(z_{t+1} = b | z_t = a)``.
    emission : array (K, M), optional
        ``emission[a, y] = p(y_t = y | z_t = a)``; with ``observations``.
    observations : int array (T,)
        The observed symbols; each adds the likelihood factor ``emission[:, y_t]``
        to ``z_t``. Without emissions, pass ``observations`` as ``T`` (an int) for a
        plain chain of length ``T``.

    The hidden variables are named ``"z_0"``, ..., ``"z_{T-1}"``; the marginals of
    belief propagation on the result are the smoothing posteriors ``p(z_t | y)``.
    """
    initial = _stochastic("initial", initial, 1)
    transition = _stochastic("transition", transition, 2)
    k = initial.shape[0]
    if transition.shape != (k, k):
        raise ValueError(f"transition must have shape ({k}, {k}) to match initial, got {transition.shape}")
    if emission is None:
        if not is_integer(observations) or observations < 1:
            raise ValueError(
                f"without emission, observations must be the chain length (int >= 1), got {observations!r}"
            )
        length, likelihoods = observations, None
    else:
        emission = _stochastic("emission", emission, 2)
        if emission.shape[0] != k:
            raise ValueError(f"emission must have {k} rows (one per hidden state), got {emission.shape[0]}")
        y = np.asarray(observations)
        if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"observations must be a non-empty 1-D int array, got {y!r}")
        if y.min() < 0 or y.max() >= emission.shape[1]:
            raise ValueError(f"observations must lie in 0..{emission.shape[1] - 1}, got range {y.min()}..{y.max()}")
        length, likelihoods = y.size, emission[:, y].T

    fg = FactorGraph()
    names = [f"z_{t}" for t in range(length)]
    for name in names:
        fg.add_variable(name, k)
    fg.add_factor([names[0]], initial)
    for a, b in zip(names[:-1], names[1:], strict=True):
        fg.add_factor([a, b], transition)
    if likelihoods is not None:
        for name, likelihood in zip(names, likelihoods, strict=True):
            if not likelihood.any():
                raise ValueError(f"observation at {name} has probability zero under every hidden state")
            fg.add_factor([name], likelihood)
    return fg


def _stochastic(name, value, ndim) -> np.ndarray:
    array = as_real_array(name, value)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not np.allclose(array.sum(-1), 1.0, atol=1e-6):
        raise ValueError(f"{name} rows must sum to 1, got sums {array.sum(-1)}")
    return array
