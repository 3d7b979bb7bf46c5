"""Small datasets shipped with bayeskit; sources and licences in this folder's README.md."""

import gzip
import json
from importlib import resources

import numpy as np

NAMES = ("diabetes", "digits", "eight_schools", "iris", "kidiq", "mauna_loa_co2", "old_faithful")
_COMPRESSED = ("diabetes", "digits")


def load(name: str) -> dict[str, np.ndarray]:
    """The dataset ``name`` as a dict of NumPy arrays (scalars as 0-d arrays)."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    folder = resources.files(__name__)
    if name in _COMPRESSED:
        text = gzip.decompress(folder.joinpath(f"{name}.json.gz").read_bytes()).decode()
    else:
        text = folder.joinpath(f"{name}.json").read_text()
    return {key: np.asarray(value) for key, value in json.loads(text).items()}
