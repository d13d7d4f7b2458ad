#!/usr/bin/env bash
# The `study` preset's supervised VOC reference trained again and fine-tuned with more seeds (issue 20:
# its two recorded fine-tunings of one backbone ended at very different VOC AP50, and the record kept no
# curve to tell a diverged run from seed noise). Every step is the preset's own command, as
# `scripts/run_pipeline.sh --preset study --dry-run` prints it: the synthetic data, the supervised
# bound (benchmarks/learnability.py), its conversion, and Faster R-CNN fine-tunings on the VOC copy.
# Then the compact record and its report (plots/detection_curves.png: one loss curve per fine-tuning).
#   scripts/study_supervised_again.sh [OUT] [SEEDS]   (default output/study_sup, "1 0 2 3"; ~35 min, 1 core)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-output/study_sup}")
SEEDS=${2:-1 0 2 3}
RECORD=docs/results/study_supervised_again
B=.venv/bin
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CFG=study/faster_rcnn_R_18_FPN_voc.yaml
[ -f "$OUT/data/meta.json" ] || $B/objcrop data synth --out "$OUT/data" --num-images 3000 --seed 0 --variant study --no-progress
[ -f "$OUT/supervised/learnability.json" ] || $B/python benchmarks/learnability.py --data "$OUT/data" \
  --save-backbone "$OUT/supervised/backbone.pth" --json "$OUT/supervised/learnability.json" \
  --samples 40000 --minutes 55 --size 64 --threads 1
[ -f "$OUT/weights/supervised.pkl" ] || $B/objcrop convert "$OUT/supervised/backbone.pth" "$OUT/weights/supervised.pkl" \
  --format torchvision --pretrain method=supervised --pretrain policy=none --pretrain proposals=none \
  --pretrain epochs=0 --pretrain dataset=backbone.pth --pretrain seed=0 --config-file $CFG
sha256sum "$OUT/supervised/backbone.pth" "$OUT/weights/supervised.pkl"
for s in $SEEDS; do
  $B/objcrop detect train --config-file $CFG --weights "$OUT/weights/supervised.pkl" --seeds "$s" \
    --output-dir "$OUT/runs/detect_voc/supervised" --resume \
    --dataset-train "voc:$OUT/data/voc:train" --dataset-test "voc:$OUT/data/voc:test"
done
$B/objcrop report record "$OUT" "$RECORD"
$B/objcrop report "$RECORD/runs" --out "$RECORD/report" \
  --title "study: the supervised VOC reference, trained again and fine-tuned with 4 seeds"
