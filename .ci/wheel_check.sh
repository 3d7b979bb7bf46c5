#!/usr/bin/env bash
# Build a wheel, install it into a clean virtual environment and import every
# subpackage from outside the repository: editable installs of package-dir
# mappings have had setuptools bugs that only a real wheel shows.
set -euo pipefail
python=${1:-python3}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# a stale build/ folder would ship modules deleted from the tree; build in the
# project's own environment (setuptools comes with it), not an isolated download
rm -rf "$root/build"
"$python" -m build --wheel --no-isolation --outdir "$work/dist" "$root" >/dev/null
"$python" -m venv "$work/venv"
# The clean venv sees the dependencies already installed in the project's venv
# through a .pth line (which adds the folder but runs none of its .pth hooks, so
# the editable install stays invisible); bayeskit itself comes from the wheel.
deps=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
clean=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$clean/project_dependencies.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps --disable-pip-version-check "$work"/dist/*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import importlib, importlib.metadata, pathlib
for name in ("bayeskit.inference", "bayeskit.models", "bayeskit.models.data", "bayeskit.models.examples", "bayeskit.graphs"):
    module = importlib.import_module(name)
    assert str(pathlib.Path(module.__file__)).startswith(str(pathlib.Path(__import__("sys").prefix))), (name, module.__file__)
from bayeskit.models import data
assert data.load("kidiq")["kid_score"].shape == (434,)
print("wheel", importlib.metadata.version("bayeskit"), "imports cleanly from", pathlib.Path.cwd())
PY
