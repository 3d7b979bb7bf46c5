"""Frozen dataclasses as JAX pytrees whose ``__post_init__`` checks run for users only.

``jax.tree_util.register_dataclass`` rebuilds a node through ``__init__``, so a
gradient (a tree of the same type holding negative numbers) would fail a model's
own validation. Here the node is rebuilt without ``__init__``: values a
transformation produces are taken as they are.
"""

import dataclasses

import jax
import numpy as np


def register_dataclass(cls, data_fields, meta_fields=()):
    data_fields, meta_fields = tuple(data_fields), tuple(meta_fields)
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data_fields)

    def flatten_with_keys(node):
        children = [(key, getattr(node, name)) for key, name in zip(keys, data_fields, strict=True)]
        return children, tuple(getattr(node, name) for name in meta_fields)

    def flatten(node):
        return [getattr(node, name) for name in data_fields], tuple(getattr(node, name) for name in meta_fields)

    def unflatten(meta, children):
        node = object.__new__(cls)
        for name, value in zip(data_fields + meta_fields, (*children, *meta), strict=True):
            object.__setattr__(node, name, value)
        return node

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    assert {f.name for f in dataclasses.fields(cls)} == set(data_fields + meta_fields)
    return cls


def is_concrete(value) -> bool:
    """A number or array a user passed, as opposed to a tracer inside a JAX transformation."""
    return isinstance(value, int | float | np.ndarray | np.number | jax.Array) and not isinstance(
        value, jax.core.Tracer
    )
