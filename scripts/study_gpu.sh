#!/usr/bin/env bash
# The study's pretraining and probe at GPU scale (issue 8; docs/results.md). Two presets:
# * study_gpu (the default): ResNet-50 for 100 epochs at batch 256 on the default variant, random
#   crops against obj-obj-dilate on ground-truth boxes at 3 seeds, head BN, BYOL, MoCo-v2's lr, and
#   the recipe under which the ResNet-50 with head BN began to learn on the CPU (issue 20 §4, 3 seeds);
# * study_plain_gpu: the background-free control's ResNet-18 for 300 epochs at batch 256, the
#   augmentations batched on the GPU (VIEWS.AUGMENT_ON device).
# Both beside random-init and supervised references of the same network. Needs one CUDA GPU and
# PyTorch; not detectron2 (detection stays in the CPU study).
#
#   [PRESET=study_plain_gpu] [JOBS=2] bash scripts/study_gpu.sh [OUT] [MINUTES]   # OUT: output/PRESET
#
# MINUTES (default: none) stops the pipeline after that long, as a lent machine's lease requires;
# what finished is recorded, and a rerun, on this or another machine, runs only what is missing
# (--records). Checkpoints stay in OUT, not in the record: a run cut by the deadline resumes from
# its last checkpoint only on the same machine with the same OUT, and starts over anywhere else.
# Two runs share the GPU and the cores (JOBS=2, the default; study_plain_gpu's ResNet-18 leaves the
# GPU idle often enough for JOBS=3, which its record's later leases used); a failed task does not
# stop the others (--keep-going). The results go to the record docs/results/PRESET/record.json
# (`objcrop report record`), its report to docs/results/PRESET/report/, and `objcrop report study`
# puts the tables beside the CPU study's in docs/results.md. GPU use is
# sampled every 5 s into OUT/gpu_use.csv.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESET="${PRESET:-study_gpu}"
RECORD="$(dirname "$HERE")/docs/results/$PRESET"
OUT="${1:-output/$PRESET}"
MINUTES="${2:-}"
PY="${PYTHON:-python3}"  # the Python that has objcrop (README: requirements/gpu_study.txt)
mkdir -p "$OUT" "$RECORD"
"$PY" -c "import objcrop.pretrain" 2>/dev/null || { echo "study_gpu.sh: $PY cannot import objcrop; set PYTHON" >&2; exit 2; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'study_gpu.sh: torch sees no CUDA GPU')" || exit 2
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu_use.csv" 2>/dev/null &
  smi=$!
fi
start=$(date +%s)
limit=()
[ -n "$MINUTES" ] && limit=(timeout --signal=TERM --kill-after=60 "${MINUTES}m")
"${limit[@]}" bash "$HERE/run_pipeline.sh" --preset "$PRESET" --out "$OUT" --records "$RECORD" \
  --gpus 1 --jobs "${JOBS:-2}" --keep-going
rc=$?
[ -n "${smi:-}" ] && kill "$smi" 2>/dev/null
echo "$(( $(date +%s) - start )) s on $(nproc) cores and $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))') (pipeline exit code $rc)" \
  | tee "$OUT/study_wall_time.txt"
"$PY" "$HERE/study_extras.py" --plan-only --preset "$PRESET" "$OUT" > /dev/null || exit 1  # what is still to run
"$PY" -m objcrop report record "$OUT" "$RECORD" || exit 1
cp "$OUT/study_wall_time.txt" "$RECORD/wall_time.txt"
# every call's line, dated: the GPU time the record cost over all leases (wall_time.txt: the last)
echo "$(date -u '+%Y-%m-%d %H:%M UTC') $(cat "$OUT/study_wall_time.txt")" >> "$RECORD/wall_times.txt"
[ -s "$OUT/gpu_use.csv" ] && cp "$OUT/gpu_use.csv" "$RECORD/gpu_use.csv"
"$PY" -m objcrop report "$RECORD/runs" --out "$RECORD/report" || exit 1
exit $rc
