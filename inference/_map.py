"""MAP estimate of a NumPyro program: L-BFGS on the constrained log density."""

import numpy as np

from bayeskit.models._keys import as_key

from ._optimize import lbfgs
from ._program import as_seed, bind, detect_backend
from ._result import Result
from ._validation import check_positive_int


def map_estimate(
    model, *args, rng_key=0, max_iter: int = 1000, backend=None, progress: bool = True, **kwargs
) -> Result:
    """Maximum a posteriori estimate of the latent sites of ``model(*args, **kwargs)``.

    Maximises the posterior density of the constrained parameters,
    :math:`\\hat\\theta = \\arg\\max_\\theta \\log p(\\theta, y)`, with L-BFGS run in
    NumPyro's unconstrained space. No Jacobian is added, so this is the mode of the
    density users write down (it is not invariant to reparameterisation, and differs
    from :func:`laplace`'s mode for constrained sites).

    Returns a Result with ``params`` (latent and deterministic sites at the mode),
    ``trace["loss"]`` (negative log joint per iteration) and ``info`` with
    ``n_iter`` and ``log_joint``.

    A Pyro program (detected, or ``backend="pyro"``) is optimised the same way with
    torch's L-BFGS; ``rng_key`` is then an ``int`` seed (:mod:`._pyro_door`).

    Example
    -------
    >>> res = map_estimate(model, X, y=y)            # doctest: +SKIP
    >>> res.params["w"]                              # doctest: +SKIP
    """
    max_iter = check_positive_int("max_iter", max_iter)
    if detect_backend(model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        return _pyro_door.map_estimate(model, args, kwargs, seed=as_seed(rng_key), max_iter=max_iter, progress=progress)
    program = bind(model, args, kwargs, rng_key=as_key(rng_key), routine="map_estimate")
    found = lbfgs(
        program.neg_log_joint, program.init_position, max_iter=max_iter, progress=progress, desc="map_estimate"
    )
    params = {k: np.asarray(v) for k, v in program.constrain(found.x).items()}
    return map_result(model, params, found, list(program.latent_shapes), dict(program.observed))


def map_result(model, params: dict, found, latent_sites: list, observed: dict) -> Result:
    """The Result of an L-BFGS search for the mode, shared by both backends."""
    info = {
        "n_iter": found.n_iter,
        "log_joint": -found.value,
        "grad_norm": found.grad_norm,
        "latent_sites": latent_sites,
        "warnings": [],
    }
    if not found.converged:
        info["warnings"].append(
            f"L-BFGS stopped with gradient norm {found.grad_norm:.3g}; the density may be unbounded "
            "(a funnel) or the mode on the boundary"
        )
    return Result(
        method="map",
        model=model,
        params=params,
        trace={"loss": found.trace},
        converged=found.converged,
        info=info,
        observed_data=observed,
    )
