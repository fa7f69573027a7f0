#!/usr/bin/env bash
# Sets up distill on a fresh machine: bubblewrap (the code sandbox) and chromium (headless, for
# the leaderboard page's test) from the system's packages, and a virtual environment in .venv
# with the pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap (sandbox for untrusted code)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (a test renders the HTML leaderboard in headless Chromium)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: pip takes the CPU build on CPU machines and the CUDA build on GPU ones.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
fi
# ray: the slow tier shards generation across two local Ray workers; quantize: torchao and
# llama.cpp (pip builds llama-cpp-python from source the first time: about 5 minutes on 2 cores).
# llama.cpp is built for this CPU (its default, GGML_NATIVE) without its AMX kernels: on Xeons
# with AMX (Sapphire Rapids and later) llama-cpp-python 0.3.36's AMX matrix multiply faults at
# its first tile load for every quantized type, at any width; no edge CPU has AMX anyway.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
.venv/bin/pip install -q -e ".[test,ray,quantize]"
# A llama.cpp built before (or a wheel pip cached) with the AMX kernels is built again.
if .venv/bin/python -c "import llama_cpp, sys; sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())" 2>/dev/null; then
  echo "setup: building llama.cpp again, without its AMX kernels"
  .venv/bin/pip cache remove "llama_cpp_python*" >/dev/null 2>&1 || true
  .venv/bin/pip install -q --force-reinstall --no-deps \
    "llama-cpp-python==$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi
# llama.cpp's GGUF converter, from the source package that built llama-cpp-python (same revision),
# into .venv/llama.cpp/ (distill/quantize/convert.py).
LLAMA=$(.venv/bin/python -c "import llama_cpp; print(llama_cpp.__version__)")
if [ "$(cat .venv/llama.cpp/VERSION 2>/dev/null)" != "$LLAMA" ]; then
  echo "setup: unpacking llama.cpp's converter (llama-cpp-python $LLAMA)"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA" -d "$tmp"
  rm -rf .venv/llama.cpp && mkdir -p .venv/llama.cpp
  src="llama_cpp_python-$LLAMA/vendor/llama.cpp"
  tar xzf "$tmp/llama_cpp_python-$LLAMA.tar.gz" -C .venv/llama.cpp --strip-components=3 \
    "$src/convert_hf_to_gguf.py" "$src/conversion" "$src/gguf-py" "$src/LICENSE"
  echo "$LLAMA" > .venv/llama.cpp/VERSION
  rm -rf "$tmp"
fi
echo "setup: ready (.venv/bin/distill)"
