#!/usr/bin/env bash
# The full objcrop pipeline: data → proposals → pretraining (policy × method × seed) → probe
# → convert → detection (VOC- and COCO-format, n seeds) → report.
#
#   bash scripts/run_pipeline.sh --preset demo                      # `make demo`: embedded data, CPU
#   bash scripts/run_pipeline.sh --preset paper --gpus 8 --seeds "0 1 2" --launcher slurm
#   bash scripts/run_pipeline.sh --help                             # every option (each also an env var)
#
# A rerun skips every stage whose outputs are complete and continues where the last run stopped;
# a failing stage stops the pipeline and names its log (OUT/logs/<stage>.log). The last line
# printed is the path of the report (OUT/report/results.md). This wrapper only finds the Python
# that has objcrop and runs `python -m objcrop.pipeline` (the same as `objcrop pipeline`) with the
# same flags and OBJCROP_* environment variables; the stage graph, presets and launchers live in
# objcrop/pipeline/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

# The Python to use: $PYTHON, else `python` on PATH (make demo puts .venv/bin first), else the
# repository's .venv — whichever can import objcrop.
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
command -v python >/dev/null 2>&1 && candidates+=("$(command -v python)")
command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
[ -x "$REPO/.venv/bin/python" ] && candidates+=("$REPO/.venv/bin/python")
PY=""
for c in "${candidates[@]}"; do
  if "$c" -c "import objcrop.pretrain" >/dev/null 2>&1; then PY="$c"; break; fi
done
if [ -z "$PY" ]; then
  echo "run_pipeline.sh: no Python with objcrop installed found (tried: ${candidates[*]:-none})." >&2
  echo "Run 'make setup' in $REPO (or 'pip install -e .' in your environment), or set PYTHON=/path/to/python." >&2
  exit 2
fi
# Stages must be able to find each other's commands (`objcrop`, torchrun) next to that Python.
export PATH="$(dirname "$PY"):$PATH"
exec "$PY" -m objcrop.pipeline "$@"
