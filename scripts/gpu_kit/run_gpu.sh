#!/usr/bin/env bash
# objcrop's detection on a lent GPU machine (issue 17 §5), in one call of under 10 minutes.
# That machine has Python 3.12 and torch but no detectron2 and no network: the kit made here by
# scripts/gpu_kit/prepare.sh (.gpu_kit/, carried with the working tree) is installed offline into a
# venv with --system-site-packages, then the product runs, every stage through its own CLI:
#   1. data       objcrop data synth: the study's embedded data (variant study, 3000 images)
#   2. pretrain   objcrop pretrain: MoCo-v2 ResNet-18, Obj-Obj+Dilate on ground-truth boxes, batch 256
#      beside     benchmarks/learnability.py: supervised ResNet-18 and ResNet-50 references (labels)
#   3. convert    objcrop convert: each backbone to a verified detectron2 .pkl
#   4. detect     objcrop detect train, side by side on the one GPU, evaluated every EVAL_PERIOD:
#                 the study's Faster R-CNN R18-FPN (VOC style) and Mask R-CNN R18-FPN (COCO style)
#                 from the MoCo backbone and the scratch / supervised references; and the VOC
#                 protocol's R50-C4 (Res5ROIHeadsExtraNorm, batch 16, lr 0.02, --no-scale) from scratch
#                 and from the supervised ResNet-50, on the embedded VOC copy at ITERS_C4 iterations
#                 (images upscaled to 192-288 px, 128 ROIs per image: 1-3 objects per image)
#   5. summary    $OUT/summary.md (every run's AP, AP50 and its curve), $OUT/runs.tar.gz (results.json,
#                 config.yaml, metrics.json, log.txt of every run), $OUT/run_gpu.log, $OUT/gpu_use.csv
# Every step gets what is left of BUDGET_S (default 540 s); a step cut by it is reported as such and
# the summary is still written.
#
#   bash scripts/gpu_kit/run_gpu.sh [OUT]          # in the repository root; OUT defaults to $OUT
# From this machine, through the device tool: run(command="bash scripts/gpu_kit/run_gpu.sh $OUT",
# carry=[".gpu_kit"], timeout_s=600), after `bash scripts/gpu_kit/prepare.sh` here.
# Knobs (environment): RUNS (a regex of the detection runs to do, e.g. r50c4; default all), BUDGET_S, IMAGES, PRETRAIN_EPOCHS, SUP_SAMPLES, ITERS_R18, ITERS_C4, EVAL_PERIOD,
# KIT (default .gpu_kit), WORK (default /tmp/objcrop_gpu), PYTHON (an interpreter that already has
# objcrop and detectron2: skips the install, e.g. for a CPU dry run with TINY=1).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$(mkdir -p "${1:-${OUT:-output/gpu_kit}}" && cd "${1:-${OUT:-output/gpu_kit}}" && pwd)"
KIT="${KIT:-$REPO/.gpu_kit}"
WORK="${WORK:-/tmp/objcrop_gpu}"
START=$(date +%s)
BUDGET_S="${BUDGET_S:-540}"
if [ -n "${TINY:-}" ]; then  # a CPU dry run of the whole flow: tiny data, few steps
  : "${IMAGES:=60}" "${PRETRAIN_EPOCHS:=1}" "${SUP_SAMPLES:=64}" "${ITERS_R18:=4}" "${ITERS_C4:=12}" "${EVAL_PERIOD:=2}"
  : "${PRETRAIN_OPTS:=PRETRAIN.BATCH_SIZE 16 PRETRAIN.MOCO.K 32 DATA.NUM_WORKERS 1 VIEWS.AUGMENT_ON worker}"
  : "${C4_EXTRA_OPTS:=SOLVER.IMS_PER_BATCH 2 TEST.PRECISE_BN.NUM_ITER 1}"
fi
IMAGES="${IMAGES:-3000}" PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-100}" SUP_SAMPLES="${SUP_SAMPLES:-40000}"
ITERS_R18="${ITERS_R18:-2000}" ITERS_C4="${ITERS_C4:-2000}" EVAL_PERIOD="${EVAL_PERIOD:-500}"
mkdir -p "$WORK/logs"
exec > >(tee -a "$OUT/run_gpu.log") 2>&1
cd "$REPO"
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# ---- 0. the kit, installed offline
if [ -z "${PYTHON:-}" ]; then
  source "$HERE/install.sh"
  install_kit "$KIT" "$WORK/venv" "$REPO" || exit 2
fi
PY="$PYTHON"
"$PY" - <<'EOF' || exit 2
import sys, torch, detectron2, objcrop.detection.train_net  # noqa: F401
from objcrop.detection.trainer import compiled_coco_eval_available
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
      f"detectron2 {detectron2.__version__} from {detectron2.__file__}, compiled COCOeval {compiled_coco_eval_available()}")
EOF
echo "kit ready after $(( $(date +%s) - START )) s"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu_use.csv" 2>/dev/null &
  SMI=$!
fi

# step NAME CMD...: run with what is left of the budget (less 25 s for the summary); log in WORK/logs
step() {
  local name="$1"; shift
  local t0 budget=$(( $(left) - 25 )) rc
  if [ "$budget" -lt 10 ]; then echo "$name: skipped (budget spent)"; echo "$name	skipped	0" >> "$WORK/steps.tsv"; return 1; fi
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$budget" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  [ "$rc" -eq 124 ] && rc="cut by the budget"
  echo "$name: exit $rc after $(( $(date +%s) - t0 )) s"
  echo "$name	$rc	$(( $(date +%s) - t0 ))" >> "$WORK/steps.tsv"
  [ "$rc" = 0 ]
}

DATA="$WORK/data"
: > "$WORK/steps.tsv"
# ---- 1. data
[ -f "$DATA/meta.json" ] || step data "$PY" -m objcrop data synth --out "$DATA" --num-images "$IMAGES" \
  --variant study --seed 0 --no-progress || exit 1

# ---- 2. pretraining and the supervised references, side by side
step pretrain "$PY" -m objcrop pretrain --config-file pretrain/study_plain_gpu.yaml --opts OUTPUT_DIR "$WORK/pretrain" \
  DATA.DATASET "synth:$DATA:train" VIEWS.POLICY obj-obj-dilate DATA.PROPOSALS gt PRETRAIN.EPOCHS "$PRETRAIN_EPOCHS" \
  PRETRAIN.WARMUP_EPOCHS "$(( PRETRAIN_EPOCHS / 30 )).0" DATA.NUM_WORKERS 6 CHECKPOINT.EPOCH_PERIOD 100000 ${PRETRAIN_OPTS:-} &
jobs_=($!)
for arch in resnet18 resnet50; do
  [ -f "$WORK/supervised_$arch.pth" ] && continue
  step "supervised_$arch" "$PY" benchmarks/learnability.py --data "$DATA" --arch "$arch" --samples "$SUP_SAMPLES" \
    --minutes 3 --device auto --json "$WORK/supervised_$arch.json" --save-backbone "$WORK/supervised_$arch.pth" &
  jobs_+=($!)
done
[ ${#jobs_[@]} -eq 0 ] || wait "${jobs_[@]}"  # by pid: a bare `wait` would also wait for the log's tee, which never ends

# ---- 3. convert (each verified by loading it into a real detectron2 backbone), side by side
jobs_=()
[ -f "$WORK/pretrain/model_final.pth" ] && [ ! -f "$WORK/moco.pkl" ] && { step convert_moco "$PY" -m objcrop convert "$WORK/pretrain/model_final.pth" \
  "$WORK/moco.pkl" & jobs_+=($!); }
for arch in resnet18 resnet50; do
  [ -f "$WORK/supervised_$arch.pth" ] && [ ! -f "$WORK/supervised_$arch.pkl" ] && { step "convert_supervised_$arch" "$PY" -m objcrop convert \
    "$WORK/supervised_$arch.pth" "$WORK/supervised_$arch.pkl" --format torchvision \
    --pretrain method=supervised --pretrain "dataset=synth:$DATA:train" --pretrain "arch=$arch" & jobs_+=($!); }
done
[ ${#jobs_[@]} -eq 0 ] || wait "${jobs_[@]}"

# ---- 4. detection fine-tuning, every run its own process on the one GPU
detect() {  # detect NAME CONFIG WEIGHTS TRAIN TEST ITERS [extra args...]; skipped when its weights are missing
  local name="$1" config="$2" weights="$3" train="$4" test="$5" iters="$6"; shift 6
  if [ -n "${RUNS:-}" ] && ! [[ "$name" =~ $RUNS ]]; then return 0; fi
  [ "$weights" = none ] || [ -f "$weights" ] || { echo "det_$name: skipped (no $weights)"; return 1; }
  OMP_NUM_THREADS=2 step "det_$name" "$PY" -m objcrop detect train --config-file "$config" --weights "$weights" \
    --seeds 0 --output-dir "$WORK/det/$name" --dataset-train "$train" --dataset-test "$test" --resume "$@" \
    --opts SOLVER.MAX_ITER "$iters" TEST.EVAL_PERIOD "$EVAL_PERIOD" SOLVER.CHECKPOINT_PERIOD 1000000 \
    DATALOADER.NUM_WORKERS 2 ${DET_OPTS:-}
}
VOC=("voc:$DATA/voc:train" "voc:$DATA/voc:test")
jobs_=()
COCO=("synth:$DATA:train" "synth:$DATA:test")
R18_STEPS="SOLVER.STEPS ($(( ITERS_R18 * 8 / 10 )),)"
for init in moco:"$WORK/moco.pkl" scratch:none supervised:"$WORK/supervised_resnet18.pkl"; do
  DET_OPTS="$R18_STEPS" detect "r18_voc_${init%%:*}" study/faster_rcnn_R_18_FPN_voc.yaml "${init#*:}" "${VOC[@]}" "$ITERS_R18" &
  jobs_+=($!)
  DET_OPTS="$R18_STEPS" detect "r18_coco_${init%%:*}" study/mask_rcnn_R_18_FPN_coco.yaml "${init#*:}" "${COCO[@]}" "$ITERS_R18" &
  jobs_+=($!)
done
# The VOC protocol's R50-C4 (MoCo's setup: batch 16, lr 0.02, steps at 3/4 and 11/12 of the schedule),
# its input sized for 96-px images and its ROI batch for their 1-3 objects.
C4_OPTS="SOLVER.STEPS ($(( ITERS_C4 * 3 / 4 )),$(( ITERS_C4 * 11 / 12 ))) SOLVER.WARMUP_ITERS $(( ITERS_C4 < 1000 ? 1 : 100 ))
  INPUT.MIN_SIZE_TRAIN (192,224,256,288) INPUT.MAX_SIZE_TRAIN 512 INPUT.MIN_SIZE_TEST 256 INPUT.MAX_SIZE_TEST 512
  MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 128 TEST.PRECISE_BN.NUM_ITER 50 ${C4_EXTRA_OPTS:-}"
for init in scratch:none supervised:"$WORK/supervised_resnet50.pkl"; do
  DET_OPTS="$C4_OPTS" detect "r50c4_voc_${init%%:*}" voc/faster_rcnn_R_50_C4_24k.yaml "${init#*:}" "${VOC[@]}" "$ITERS_C4" --no-scale &
  jobs_+=($!)
done
[ ${#jobs_[@]} -eq 0 ] || wait "${jobs_[@]}"

# ---- 5. summary and the files that come back
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
"$PY" "$HERE/summarise.py" "$WORK" "$OUT/summary.md" "$(( $(date +%s) - START ))"
tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='*.pth' --exclude='*.pkl' --exclude='./data' --exclude='./venv' \
  --exclude='events.out.*' --exclude='inference' --exclude='checkpoints' --exclude='last_checkpoint' .
echo "run_gpu.sh: $(( $(date +%s) - START )) s in all; $OUT: $(ls "$OUT" | tr '\n' ' ')"
