"""``python -m benchmarks [NAME ...]``: run the side-by-side benchmarks and print their tables."""

import sys

from . import bnn, diffusion, gaussian_processes, generic_routines, glm, graphs, mixtures

BENCHMARKS = {
    "generic_routines": generic_routines.main,
    "mixtures": mixtures.main,
    "gaussian_processes": gaussian_processes.main,
    "glm": glm.main,
    "graphs": graphs.main,
    "bnn": bnn.main,
    "diffusion": diffusion.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
            return 2
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
