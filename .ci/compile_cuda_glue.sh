#!/usr/bin/env bash
# Compile the extension's CUDA glue (csrc/cuda/*.cu, which includes kernels/*.cuh) with nvcc
# against the headers of the CUDA build of torch 2.13.0, on a machine whose own torch is the CPU
# build. Nothing is linked or imported: this is the check that the glue still compiles when no CI
# machine has a GPU. Warnings in our own code are errors; torch's and Python's headers are system
# headers. The wheel (about 527 MB) is kept under ~/.cache/trilevelnas so that reruns skip the
# download; only its include/ folder is unpacked.
#
# Usage: .ci/compile_cuda_glue.sh [file.cu ...]   (default: every csrc/cuda/*.cu)
# Env: TORCH_CUDA_WHEEL=path to use a wheel already on disk; CUDA_GLUE_ARCH (default sm_90).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version=2.13.0
cache=${XDG_CACHE_HOME:-$HOME/.cache}/trilevelnas
include=$cache/torch-$version-cuda/torch/include
export PATH="$PATH:/usr/local/cuda/bin"
command -v nvcc >/dev/null || { echo "compile_cuda_glue: nvcc not found" >&2; exit 1; }

if [ ! -f "$include/torch/extension.h" ]; then
  wheel=${TORCH_CUDA_WHEEL:-}
  if [ -z "$wheel" ]; then
    mkdir -p "$cache/wheels"
    wheel=$(ls "$cache"/wheels/torch-$version-cp*-manylinux*.whl 2>/dev/null | head -n 1 || true)
  fi
  if [ -z "$wheel" ]; then
    # PyPI's Linux wheel of torch is the CUDA build; --isolated keeps this machine's pip config
    # (local find-links holding the CPU build, constraints) out of the choice.
    PIP_CONFIG_FILE=/dev/null $PY -m pip download --isolated --no-deps -q "torch==$version" \
      --index-url https://pypi.org/simple -d "$cache/wheels"
    wheel=$(ls "$cache"/wheels/torch-$version-cp*-manylinux*.whl | head -n 1)
  fi
  rm -rf "$cache/torch-$version-cuda"
  mkdir -p "$cache/torch-$version-cuda"
  $PY -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    whl.extractall(sys.argv[2], [n for n in whl.namelist()
                                 if n.startswith("torch/include/") or n == "torch/version.py"])
' "$wheel" "$cache/torch-$version-cuda"
fi
grep -q "^cuda: Optional\[str\] = '" "$cache/torch-$version-cuda/torch/version.py" || {
  echo "compile_cuda_glue: $cache/torch-$version-cuda is not from a CUDA build of torch" >&2; exit 1; }

pyinc=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
arch=${CUDA_GLUE_ARCH:-sm_90}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(csrc/cuda/*.cu)
for f in "${files[@]}"; do
  echo "nvcc $f"
  nvcc -c -std=c++17 -O1 -arch="$arch" \
    -DTRILEVELNAS_WITH_CUDA=1 -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H \
    -D_GLIBCXX_USE_CXX11_ABI=1 \
    -isystem "$include" -isystem "$include/torch/csrc/api/include" -isystem "$pyinc" \
    -Ikernels -Icsrc -Xcompiler -fPIC,-Wall,-Werror -Werror all-warnings \
    -o "$out/$(basename "$f").o" "$f"
done
echo "compiled ${#files[@]} CUDA glue file(s) against torch $version (CUDA build) headers"
