#!/usr/bin/env bash
# On the lent GPU machine: build llama-cpp-python with CUDA (and llama.cpp's llama-bench from the
# same build tree) out of .gpu-carry/ (see ../shared/gpu/prepare-carry.sh), write the
# Llama-3-8B-Instruct-Gradient-1048k Q4_K_M stand-in, and run `repoctx bench engine`.
# usage: benchmarks/gpu-engine.sh [bench engine options...]   (results also under $OUT)
#   NO_LLAMA_BENCH=1   leave out llama-bench's reference prefill (long at 256K tokens), and do
#                      not build llama.cpp's tools on a fresh machine (a shorter build)
set -euo pipefail
out=${OUT:-/tmp/repoctx-bench-out}
mkdir -p "$out"
if [ ! -f /tmp/site/llama_cpp/__init__.py ]; then
  start=$(date +%s)
  rm -rf /tmp/site /tmp/llbuild
  tools=ON  # llama-bench; the other tools (and tools/mtmd) come with it
  if [ -n "${NO_LLAMA_BENCH:-}" ]; then tools=OFF; fi  # llama-cpp-python's own default
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=$tools \
-DLLAMA_BUILD_COMMON=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_C_FLAGS=-mno-amx-int8 \
-DCMAKE_CXX_FLAGS=-mno-amx-int8" CMAKE_BUILD_PARALLEL_LEVEL=16 \
    python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/site \
    -C build-dir=/tmp/llbuild .gpu-carry/llama_cpp_python-*.tar.gz .gpu-carry/whl/*.whl \
    > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
  echo "built in $(( $(date +%s) - start )) s"
  mkdir -p /tmp/llbench
  found=$(find /tmp/llbuild -name llama-bench -type f -perm -u+x | head -1)
  if [ -n "$found" ]; then cp "$found" /tmp/llbench/; fi
fi
export PYTHONPATH=/tmp/site:$PWD REPOCTX_HOME=/tmp/repoctx-home REPOCTX_BENCH_DIR=/tmp
export LD_LIBRARY_PATH=/tmp/site/llama_cpp/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv | tee "$out/gpu.txt"
extra=()
if [ -z "${NO_LLAMA_BENCH:-}" ] && [ -x /tmp/llbench/llama-bench ]; then
  extra=(--llama-bench /tmp/llbench/llama-bench)
fi
COLUMNS=250 python3 -m repoctx bench engine --synth-dir /tmp \
  --vocab-from .gpu-carry/vocab/ggml-vocab-llama-bpe.gguf "${extra[@]}" "$@" 2>&1 | tee -a "$out/bench.txt"
