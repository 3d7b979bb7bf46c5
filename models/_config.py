"""Process-wide numerical settings applied when any bayeskit package is imported.

JAX defaults to float32; inference (Cholesky factors, log densities summed over
thousands of points, Hessians) needs float64, so bayeskit turns on x64 as GPJax
does. Set the environment variable ``BAYESKIT_X64=0`` before importing to keep
JAX's float32 default.
"""

import os

import jax

X64 = os.environ.get("BAYESKIT_X64", "1") != "0"
if X64:
    jax.config.update("jax_enable_x64", True)
