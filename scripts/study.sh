#!/usr/bin/env bash
# The small-scale study of issue 8 (docs/results.md): the embedded dataset's `study` variant and
# its harder variant side by side on one machine, every stage through the pipeline.
#
#   bash scripts/study.sh [OUT]          # OUT defaults to output/; reruns continue where they stopped
#
# The default variant runs two tasks at a time (--jobs 2), the hard variant one, so the three
# share 2 CPU cores; each task gets one thread. Runs start in the presets' order of priority
# (eval_configs/pipeline/study.yaml, study_hard.yaml), each run's probe right after it. Then the
# background-free control (study_plain.yaml: does pretraining learn once views cannot be matched
# by their background?), two tasks at a time.
# Then the extras docs/results.md quotes (view statistics, proposal recall) are measured by
# scripts/study_extras.py, every result is added to the study's record in the repository
# (docs/results/study*/record.json, `objcrop report record`), the report is built from the record,
# and `objcrop report study` writes docs/results.md from it.
# The record is what makes the study resumable on another machine: the pipeline skips every task
# whose result the record holds (--records), so a rerun anywhere runs only what is missing.
# Wall time: OUT/study_wall_time.txt. `make study` runs this with the repository's .venv.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCS="$(dirname "$HERE")/docs"
RECORDS="$DOCS/results"
OUT="${1:-output}"
mkdir -p "$OUT" "$RECORDS/study" "$RECORDS/study_hard" "$RECORDS/study_plain"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
bash "$HERE/run_pipeline.sh" --preset study --out "$OUT/study" --records "$RECORDS/study" --jobs 2 > "$OUT/study.log" 2>&1 &
main=$!
bash "$HERE/run_pipeline.sh" --preset study_hard --out "$OUT/study_hard" --records "$RECORDS/study_hard" --jobs 1 > "$OUT/study_hard.log" 2>&1 &
hard=$!
wait $main; rc_main=$?
wait $hard; rc_hard=$?
bash "$HERE/run_pipeline.sh" --preset study_plain --out "$OUT/study_plain" --records "$RECORDS/study_plain" --jobs 2 > "$OUT/study_plain.log" 2>&1
rc_plain=$?
echo "$(( $(date +%s) - start )) s on $(nproc) cores (exit codes: study $rc_main, study_hard $rc_hard, study_plain $rc_plain)" | tee "$OUT/study_wall_time.txt"
PY="${PYTHON:-$(dirname "$HERE")/.venv/bin/python}"  # the Python run_pipeline.sh would pick in `make study`
for v in study study_hard study_plain; do
  "$PY" "$HERE/study_extras.py" "$OUT/$v" || exit 1
  "$PY" -m objcrop report record "$OUT/$v" "$RECORDS/$v" || exit 1
  # a registered arm's scores stay out of the report until its comparison is complete
  "$PY" -m objcrop report "$RECORDS/$v/runs" --out "$RECORDS/$v/report" \
    --registration "$DOCS/preregistration.yaml" --study "$v" || exit 1
done
"$PY" -m objcrop report study --study "$RECORDS/study" --hard "$RECORDS/study_hard" --plain "$RECORDS/study_plain" \
  --gpu "$RECORDS/study_gpu" --plain-gpu "$RECORDS/study_plain_gpu" --wall-time "$OUT/study_wall_time.txt" \
  --preamble "$DOCS/results_preamble.md" --discussion "$DOCS/results_discussion.md" \
  --detect-curve "$DOCS/results/detect_curve/curve.md" --out "$DOCS/results.md"
[ $rc_main -eq 0 ] && [ $rc_hard -eq 0 ] && [ $rc_plain -eq 0 ] || exit 1
