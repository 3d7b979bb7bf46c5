"""NUTS, delegated to NumPyro's ``MCMC``: it already runs the loop well."""

import jax
import numpy as np
from numpyro.diagnostics import split_gelman_rubin
from numpyro.infer import MCMC, NUTS
from numpyro.infer.initialization import init_to_uniform, init_to_value

from bayeskit.models._keys import as_key

from ._checks import R_HAT_MAX
from ._program import BAD_INIT_VALUES, as_seed, bind, check_init_values, detect_backend, merge_chains, posterior_groups
from ._result import Result
from ._validation import check_choice, check_positive_int, check_probability

_STATS = {
    "diverging": "diverging",
    "accept_prob": "acceptance_rate",
    "num_steps": "n_steps",
    "potential_energy": "lp",
    "energy": "energy",
    "adapt_state.step_size": "step_size",
}


def nuts(
    model,
    *args,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 4,
    rng_key=0,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    max_tree_depth: int = 10,
    chain_method: str = "sequential",
    init_values: dict | None = None,
    backend=None,
    progress: bool = True,
    **kwargs,
) -> Result:
    """The No-U-Turn Sampler (Hoffman & Gelman 2014) through NumPyro's ``MCMC``.

    Step size and (diagonal or ``dense_mass``) mass matrix are adapted during
    ``num_warmup`` (Stan's windowed scheme). ``chain_method`` is NumPyro's:
    ``"sequential"``, ``"parallel"`` (one device per chain) or ``"vectorized"``.

    Every chain starts from ``init_values`` (a dict of constrained values of latent
    sites, e.g. a mode found by ``map_estimate`` or EM) where given, and elsewhere from
    a uniform draw in (-2, 2) on the unconstrained scale (NumPyro's and Pyro's
    ``init_to_uniform``). A start inside the main mode keeps warm-up out of minor modes
    (a mixture's empty components); the chains then separate during warm-up, but
    R-hat no longer tests for other modes that overdispersed starts might have found.

    Returns a Result with ``draws`` ``(num_chains, num_samples, ...)`` of every latent
    and deterministic site, ``log_likelihood``, and ``sample_stats`` in ArviZ's names
    (``diverging``, ``acceptance_rate``, ``n_steps``, ``lp``, ``energy``,
    ``step_size``); ``info`` has ``num_divergences``, ``max_split_r_hat`` and
    ``converged_per_chain`` (no divergent transition in that chain). ``converged``
    is all of those flags and, with two or more chains, split R-hat below 1.01.

    A Pyro program (detected, or ``backend="pyro"``) is sampled by Pyro's ``NUTS``
    kernel and ``MCMC``, chains one after another (``chain_method="sequential"``
    only); ``rng_key`` is then an ``int`` seed, and ``sample_stats`` has
    ``diverging``, ``acceptance_rate``, ``step_size`` and ``lp`` (:mod:`._pyro_door`).
    """
    num_warmup = check_positive_int("num_warmup", num_warmup, allow_zero=True)
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    max_tree_depth = check_positive_int("max_tree_depth", max_tree_depth)
    target_accept = check_probability("target_accept", target_accept)
    chain_method = check_choice("chain_method", chain_method, ("sequential", "parallel", "vectorized"))
    if not isinstance(dense_mass, bool):
        raise TypeError(f"dense_mass must be a bool, got {type(dense_mass).__name__} {dense_mass!r}")
    if detect_backend(model, backend) == "pyro":
        if chain_method != "sequential":
            raise ValueError(
                "a Pyro program's chains run one after another: chain_method must be 'sequential', "
                f"got {chain_method!r}"
            )
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        return _pyro_door.nuts(
            model,
            args,
            kwargs,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            seed=as_seed(rng_key),
            target_accept=target_accept,
            dense_mass=dense_mass,
            max_tree_depth=max_tree_depth,
            init_values=init_values,
            progress=progress,
        )
    init_key, run_key = jax.random.split(as_key(rng_key))
    program = bind(model, args, kwargs, rng_key=init_key, routine="nuts")
    start = init_to_uniform
    if init_values is not None:
        start = init_to_value(values=check_init_values(init_values, program.latent_shapes))

    kernel = NUTS(
        model, target_accept_prob=target_accept, dense_mass=dense_mass, max_tree_depth=max_tree_depth,
        init_strategy=start,
    )  # fmt: skip
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    try:
        mcmc.run(run_key, *args, extra_fields=tuple(_STATS), **kwargs)
    except (RuntimeError, ValueError) as exc:
        if init_values is None:
            raise
        raise ValueError(BAD_INIT_VALUES.format(exc)) from exc

    grouped = mcmc.get_samples(group_by_chain=True)
    names = list(program.latent_shapes) + list(program.deterministic_names)
    flat = merge_chains({k: grouped[k] for k in names})
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {ours: np.asarray(extra[theirs]) for theirs, ours in _STATS.items()}
    stats["lp"] = -stats["lp"]
    return nuts_result(
        model,
        stats,
        posterior_groups(program, flat, num_chains=num_chains),
        names=names,
        num_warmup=num_warmup,
        latent_sites=list(program.latent_shapes),
    )


def nuts_result(model, stats: dict, groups: dict, *, names: list, num_warmup: int, latent_sites: list) -> Result:
    """The Result of NUTS chains, shared by both backends: ``stats`` and ``groups["draws"]``
    are ``(chain, draw, ...)``; ``names`` are the sites whose R-hat decides ``converged``."""
    num_chains, num_samples = stats["diverging"].shape
    per_chain = [bool(flag) for flag in ~stats["diverging"].any(axis=1)]
    r_hat = _max_split_r_hat(groups["draws"], names) if num_chains > 1 else float("nan")
    return Result(
        method="nuts",
        model=model,
        converged=all(per_chain) and not r_hat >= R_HAT_MAX,
        info={
            "n_iter": num_warmup + num_samples,
            "converged_per_chain": per_chain,
            "max_split_r_hat": r_hat,
            "num_divergences": int(stats["diverging"].sum()),
            "num_warmup": num_warmup,
            "num_chains": num_chains,
            "mean_acceptance_rate": float(stats["acceptance_rate"].mean()),
            "latent_sites": latent_sites,
        },
        sample_stats=stats,
        **groups,
    )


def _max_split_r_hat(grouped: dict, names) -> float:
    """Largest split R-hat over every component (the diagnostics layer reports the
    rank-normalised version; this one only decides ``converged``)."""
    worst = 0.0
    for name in names:
        values = np.asarray(grouped[name], float)
        values = values.reshape(values.shape[:2] + (-1,))
        if values.shape[-1] and np.all(values.std(axis=(0, 1)) > 0):
            worst = max(worst, float(np.max(split_gelman_rubin(values))))
    return worst
