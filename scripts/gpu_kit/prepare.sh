#!/usr/bin/env bash
# Prepare the GPU kit (issue 17 §5), here, on a machine with network and the project's .venv:
# an ignored folder (default .gpu_kit/, at most 60 MiB) that travels with the working tree to a lent
# GPU machine (Python 3.12, torch, no detectron2, no network), where scripts/gpu_kit/run_gpu.sh
# installs it offline. It holds
#   src/detectron2/   detectron2's Python sources from the installed sal-detectron2 wheel, WITHOUT the
#                     compiled _C (built for this Python and torch; detectron2 needs it only for
#                     deformable convolution, rotated boxes and the fast COCOeval, and objcrop falls
#                     back to pycocotools' COCOeval: tests/test_detect_no_c.py)
#   wheels/           cp312 manylinux wheels of what that machine lacks (the versions of .venv where
#                     one exists for 3.12); fvcore and antlr4-python3-runtime publish only source
#                     archives, so their pure-Python wheels are built here
#   MANIFEST.txt      what is in it, with versions and sizes
#
#   bash scripts/gpu_kit/prepare.sh [KIT_DIR]        # PYTHON=... to use another interpreter than .venv's
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KIT="${1:-$REPO/.gpu_kit}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
LIMIT_MIB=60
# What the GPU machine lacks (device KINDS.md's package list: it has numpy, pyyaml, pillow, tqdm,
# tabulate, portalocker, cloudpickle, matplotlib, tensorboard, scipy, scikit-image, scikit-learn,
# opencv-python-headless, packaging). Wheels published for cp312:
BINARY=(pycocotools iopath yacs omegaconf termcolor hydra-core)
# Source archives only on the registry (pure Python): built into wheels here.
SOURCE_ONLY=(fvcore antlr4-python3-runtime)

version_of() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || true; }
pin() { local v; v="$(version_of "$1")"; [ -n "$v" ] && echo "$1==$v" || echo "$1"; }

tmp="$KIT.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/src" "$tmp/wheels"
trap 'rm -rf "$tmp"' EXIT

# 1. detectron2's Python sources, without _C and without caches
D2="$("$PY" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("detectron2").origin))')"
(cd "$(dirname "$D2")" && tar --exclude='__pycache__' --exclude='_C*.so' --exclude='*.pyc' -cf - detectron2) \
  | (cd "$tmp/src" && tar -xf -)
if find "$tmp/src/detectron2" -name '_C*' -name '*.so' | grep -q .; then echo "prepare.sh: _C was copied" >&2; exit 1; fi

# 2. cp312 wheels (binary where the registry has them)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
for name in "${BINARY[@]}"; do
  spec="$(pin "$name")"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$tmp/wheels" "$spec" 2>/dev/null \
  || "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$tmp/wheels" "$name" \
  || { echo "prepare.sh: no cp312 wheel of $name" >&2; exit 1; }
done
# 3. pure-Python wheels built from the source archives (no compiler involved)
for name in "${SOURCE_ONLY[@]}"; do
  "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$tmp/wheels" "$(pin "$name")"
done
for w in "$tmp"/wheels/*.whl; do
  case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl|*cp312*|*abi3*) ;;
    *) echo "prepare.sh: $(basename "$w") does not install on CPython 3.12" >&2; exit 1;; esac
done

{
  echo "objcrop GPU kit, prepared $(date -u '+%Y-%m-%d %H:%M UTC') by scripts/gpu_kit/prepare.sh"
  echo "detectron2 sources: sal-detectron2 $(version_of sal-detectron2) from $D2 (no _C)"
  (cd "$tmp/wheels" && ls -1 *.whl | sed 's/^/wheel: /')
} > "$tmp/MANIFEST.txt"
size_mib=$(( $(du -sk "$tmp" | cut -f1) / 1024 ))
if [ "$size_mib" -gt "$LIMIT_MIB" ]; then echo "prepare.sh: the kit is $size_mib MiB > $LIMIT_MIB MiB" >&2; exit 1; fi
echo "size: $size_mib MiB" >> "$tmp/MANIFEST.txt"
rm -rf "$KIT"
mv "$tmp" "$KIT"
trap - EXIT
cat "$KIT/MANIFEST.txt"
