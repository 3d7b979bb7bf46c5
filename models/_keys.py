import jax
import numpy as np


def as_key(rng_key) -> jax.Array:
    """Accept an ``int`` seed or a JAX PRNG key (raw ``uint32[2]`` or typed)."""
    if isinstance(rng_key, bool):
        raise TypeError("rng_key must be an int seed or a JAX PRNG key, got a bool")
    if isinstance(rng_key, int | np.integer):
        return jax.random.PRNGKey(int(rng_key))
    if isinstance(rng_key, jax.Array):
        if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(rng_key)
        if rng_key.shape == (2,) and rng_key.dtype == np.uint32:
            return rng_key
    raise TypeError(f"rng_key must be an int seed or a JAX PRNG key, got {rng_key!r}")
