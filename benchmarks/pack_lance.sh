#!/usr/bin/env bash
# Pack what `import artstore` needs and a GPU machine lacks into .lance-pack/lance.tar.xz, for
# benchmarks/gpu_check.sh (the device tool carries it: carry [".lance-pack"], 64 MiB at most).
#
#   bash benchmarks/pack_lance.sh [PYTHON]     # PYTHON: the venv's python (default /work/main/.venv)
#
# Copies from this venv's site-packages the packages that are the same on any CPython 3 (lance's
# extension is abi3; openai, pydantic, annotated_types, typing_inspection, httpx2 (openai imports it)
# and sniffio are pure Python, and so are fastapi, starlette, uvicorn, h11, anyio, click and
# annotated_doc for trainer.serve; the machine's image has the rest: see KINDS.md's list), and
# fetches pydantic-core, whose extension is per Python version, as a wheel for the machine's
# Python (TARGET_PY, default 3.12) with pip (one download). lance's 214 MB extension is most of
# the size: about 52 MiB compressed, which is why nothing else rides along.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/work/main/.venv/bin/python}
TARGET_PY=${TARGET_PY:-3.12}
SP=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
STAGE=.lance-pack/stage
rm -rf "$STAGE" && mkdir -p "$STAGE/site"
for pkg in lance openai pydantic annotated_types typing_inspection httpx2 sniffio; do
  cp -r "$SP/$pkg" "$STAGE/site/"
done
# The trainer's endpoint (trainer.serve): FastAPI + uvicorn and what they import, all pure Python.
for pkg in fastapi starlette uvicorn h11 anyio click annotated_doc; do
  [ -e "$SP/$pkg" ] && cp -r "$SP/$pkg" "$STAGE/site/"
  cp -r "$SP"/"$pkg"-*.dist-info "$STAGE/site/" 2>/dev/null || true
done
cp -r "$SP"/pylance-*.dist-info "$SP"/openai-*.dist-info "$SP"/pydantic-*.dist-info \
  "$SP"/annotated_types-*.dist-info "$SP"/typing_inspection-*.dist-info "$SP"/httpx2-*.dist-info \
  "$SP"/sniffio-*.dist-info "$STAGE/site/" 2>/dev/null || true
find "$STAGE/site" -name __pycache__ -prune -exec rm -rf {} +
CORE=$("$PY" -c "import pydantic_core; print(pydantic_core.__version__)")
mkdir -p "$STAGE/wheels"
if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$STAGE/wheels" \
    "pydantic-core==$CORE"; then
  "$PY" -m zipfile -e "$STAGE"/wheels/pydantic_core-*.whl "$STAGE/site/"
else
  echo "warning: could not download pydantic-core $CORE for Python $TARGET_PY; the machine needs its own" >&2
fi
rm -rf "$STAGE/wheels"
XZ_OPT=${XZ_OPT:--6 -T0} tar -cJf .lance-pack/lance.tar.xz -C "$STAGE" site
rm -rf "$STAGE"
ls -la .lance-pack/lance.tar.xz
size=$(stat -c %s .lance-pack/lance.tar.xz)
[ "$size" -lt $((60 * 1024 * 1024)) ] || echo "warning: $size bytes: over 60 MiB, the device tool carries 64 MiB with the tree" >&2
