#!/usr/bin/env bash
# One command for a briefly lent GPU machine (H100/H200, no network): set up from the working tree,
# run the GPU tests and the GPU benchmarks, write ONE JSON ($OUT/gpu_check.json, else
# benchmarks/results/gpu_check.json). Under 8 minutes; each section has its own time limit and one
# failing section loses nothing of the others (benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (docs/gpu.md: the exact device call)
#   bash benchmarks/gpu_check.sh --dry        # CPU, tiny sizes, same code paths and JSON structure (CI)
#   bash benchmarks/gpu_check.sh --only tests,loader --reference DIR --out FILE
#
# Setup: wheels carried in .whl/ (benchmarks/gpu_wheels.sh downloads them) are installed with
# pip --no-index into a scratch directory put first on PYTHONPATH, with the package (workflow/).
# hdf5plugin is not carried (46 MiB): where it is missing, a stand-in module that refuses Blosc
# (only blosc-lz4 stores need it; the check writes uncompressed ones) is put on the path instead.
# Python: $PYTHON, else .venv/bin/python for --dry when present, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
for a in "$@"; do [ "$a" = "--dry" ] && dry=1; done

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ "$dry" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

site=${AFFECTUBE_GPU_SITE:-${TMPDIR:-/tmp}/affectube-gpu-site}
paths="$PWD/workflow"
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" > /dev/null; then  # --dry uses the local environment as it is
  echo "gpu_check.sh: installing $(ls .whl/*.whl | wc -l) carried wheels into $site" >&2
  rm -rf "$site"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl; then
    echo "gpu_check.sh: installing .whl/ failed; carrying on with what $PY has (the JSON's env section says what is missing)" >&2
  fi
  paths="$paths:$site"
fi
if ! PYTHONPATH="$paths${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import hdf5plugin" 2> /dev/null; then
  shim=${TMPDIR:-/tmp}/affectube-gpu-shim
  mkdir -p "$shim/hdf5plugin"
  cat > "$shim/hdf5plugin/__init__.py" << 'EOF'
"""Stand-in written by benchmarks/gpu_check.sh where hdf5plugin is not installed: importing works,
Blosc (blosc-lz4 clip stores) is refused. Uncompressed, lzf and gzip stores need no plugin."""
__version__ = "absent (gpu_check.sh stand-in)"


class Blosc:
    SHUFFLE = 1

    def __init__(self, *args, **kwargs):
        raise RuntimeError("hdf5plugin is not installed on this machine (gpu_check.sh stand-in): "
                           "blosc-lz4 clip stores cannot be read or written here")
EOF
  paths="$paths:$shim"
  echo "gpu_check.sh: hdf5plugin missing: stand-in at $shim (Blosc refused)" >&2
fi
export PYTHONPATH="$paths${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
