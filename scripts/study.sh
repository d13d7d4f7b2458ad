#!/usr/bin/env bash
# The small-scale study of issue 8 (docs/results.md): the embedded dataset's `study` variant and
# its harder variant side by side on one machine, every stage through the pipeline.
#
#   bash scripts/study.sh [OUT]          # OUT defaults to output/; reruns continue where they stopped
#
# The default variant runs two tasks at a time (--jobs 2), the hard variant one, so the three
# share 2 CPU cores; each task gets one thread. Runs start in the presets' order of priority
# (eval_configs/pipeline/study.yaml, study_hard.yaml), each run's probe right after it.
# Then the extras docs/results.md quotes (view statistics, proposal recall) are measured by
# scripts/study_extras.py and scripts/study_report.py writes docs/results.md from all of it.
# Wall time: OUT/study_wall_time.txt. `make study` runs this with the repository's .venv.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-output}"
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
bash "$HERE/run_pipeline.sh" --preset study --out "$OUT/study" --jobs 2 > "$OUT/study.log" 2>&1 &
main=$!
bash "$HERE/run_pipeline.sh" --preset study_hard --out "$OUT/study_hard" --jobs 1 > "$OUT/study_hard.log" 2>&1 &
hard=$!
wait $main; rc_main=$?
wait $hard; rc_hard=$?
echo "$(( $(date +%s) - start )) s on $(nproc) cores (exit codes: study $rc_main, study_hard $rc_hard)" | tee "$OUT/study_wall_time.txt"
PY="${PYTHON:-$(dirname "$HERE")/.venv/bin/python}"  # the Python run_pipeline.sh would pick in `make study`
for d in "$OUT/study" "$OUT/study_hard"; do
  "$PY" "$HERE/study_extras.py" "$d" || exit 1
done
"$PY" "$HERE/study_report.py" --study "$OUT/study" --hard "$OUT/study_hard" --wall-time "$OUT/study_wall_time.txt"
[ $rc_main -eq 0 ] && [ $rc_hard -eq 0 ] || exit 1
