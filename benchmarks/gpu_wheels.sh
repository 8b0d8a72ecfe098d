#!/usr/bin/env bash
# Download, HERE (a machine with network), the Python wheels that benchmarks/gpu_check.sh installs on a
# GPU machine that has no network. They land in .whl/ at the repo root, which this script also adds
# to .git/info/exclude (never commit them); a `device` run carries them with carry: [".whl", ...].
#
# The GPU image (python3 3.12 at /opt/torch/.venv, torch 2.11, torchvision 0.26) already holds numpy,
# pandas, pyyaml, scipy, scikit-learn, opencv-python-headless, safetensors, huggingface-hub, attrs,
# pytest (see /work/.library/device/KINDS.md). What it lacks or holds in another version than
# envs/requirements.lock, and what affectube imports on the paths the GPU check runs:
#   timm (models; pure Python), jsonschema + its pure-Python deps + rpds-py (config validation),
#   h5py (clip stores), at the versions pinned in envs/requirements.lock: about 9 MiB.
# NOT hdf5plugin: its wheel is 46 MiB (the working tree that travels is capped at 64 MiB). Only
# blosc-lz4 stores need it; the check writes uncompressed ones, and gpu_check.sh puts a module in
# its place that refuses Blosc with a clear error (and reports "hdf5plugin": "absent" in the JSON).
# Usage: bash benchmarks/gpu_wheels.sh   (re-running replaces .whl/; prints the total size)
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PKGS=(timm jsonschema jsonschema-specifications referencing rpds-py h5py)
LIMIT_MB=24   # the whole working tree that travels is capped at 64 MiB

pin() {  # NAME -> NAME==VERSION from the lock (names compared case- and -/_-insensitively)
  local want; want=$(echo "$1" | tr 'A-Z_' 'a-z-')
  local line; line=$(grep -iE '^[A-Za-z0-9_.-]+==' envs/requirements.lock | awk -F'==' -v w="$want" \
      '{n=tolower($1); gsub("_","-",n); if (n==w) {print $1"=="$2; exit}}')
  [ -n "$line" ] || { echo "gpu_wheels.sh: $1 is not pinned in envs/requirements.lock" >&2; exit 2; }
  echo "$line"
}

specs=(); for p in "${PKGS[@]}"; do specs+=("$(pin "$p")"); done
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for pat in /.whl/ /.ref/; do grep -qxF "$pat" "$exclude" 2>/dev/null || echo "$pat" >> "$exclude"; done

rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${specs[@]}"
ls -1 .whl
size_kb=$(du -sk .whl | cut -f1)
echo "gpu_wheels.sh: ${#specs[@]} wheels, $((size_kb / 1024)) MiB in .whl/ (${specs[*]})"
if [ "$size_kb" -gt $((LIMIT_MB * 1024)) ]; then
  echo "gpu_wheels.sh: .whl/ is over ${LIMIT_MB} MiB: the device call's working tree is capped at 64 MiB" >&2
  exit 1
fi
