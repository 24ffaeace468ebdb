#!/usr/bin/env bash
# Incremental developer build: compile the extension with CMake in build/dev and
# put fastrnn/_core*.so next to the sources, so `python -c "import fastrnn"` from
# the repository root uses the compiled backend and fastrnn.capi finds its header
# (both git-ignored, as in an installed package).
#   tools/dev-build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ ! -f build/dev/CMakeCache.txt ]; then
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSKBUILD_PROJECT_VERSION="$("$PY" -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')" \
    -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" "$@" >/dev/null
fi
cmake --build build/dev -j"${JOBS:-2}"
cp build/dev/_core*.so fastrnn/
mkdir -p fastrnn/include && cp csrc/include/fastrnn/fastrnn.h fastrnn/include/  # what the wheel installs for fastrnn.capi
