#!/usr/bin/env bash
# Later seeds of the registered comparison (docs/preregistration.md, issue 20 §3) on a lent GPU machine,
# in one call of under 10 minutes. The registration lets seeds >= 3 train on a GPU as long as seed k of
# every arm of a variant trains on the same kind of device with the same config. So the unit here is a
# *group*: one seed of all three registered arms of one variant (random crops, gt boxes, ranked
# proposals; --tags b256-200e-bf16). Groups run one after another (seed-major: seed k of study, of
# study_hard, then seed k + 1), each as the pipeline runs it on the CPU: `--gpus 1`, the three arms side
# by side, each arm's probe and VOC fine-tuning right after it (the registration's secondary detection
# metric: docs/preregistration.md, clarifications, detection). Only --loader-workers differs from the CPU runs: the
# 2-core recipe loads with one worker, which cannot feed a GPU, and DATA.NUM_WORKERS is an execution
# setting (the same weights, the same run name; tests/test_pretrain_execution_keys.py).
#
# The inputs are the CPU runs' own bytes, never regenerated unchecked: the proposal stores travel
# (the machine's OpenCV lacks the contrib modules that made them), `study`'s data travels (what fits
# the 64-MiB working tree; its VOC copy's images are rebuilt there from the images, whose bytes they
# are), and any variant whose data does not travel is generated there and compared file by file with
# the sha256 manifest of the data here; a variant whose data differs is not run. `stage` refuses a
# variant whose record lacks the detection reference rows (scratch, supervised): they run on the CPU,
# once, and a GPU call would otherwise spend its minutes on them.
#
# A group is complete when all nine of its results (three pretraining runs, three probes, three VOC
# fine-tunings) say ok. Only complete groups come back (OUT/<variant>_s<seed>.tar.gz: every run's
# results.json, config, metrics and logs, no checkpoints), so a variant's seed is recorded from one
# device or not at all; a group cut by the deadline is listed in OUT/summary.md and left to the CPU.
# The backbones stay on the machine (three fp16 ResNet-18 backbones exceed the 64 MiB that come
# back), which is why their fine-tuning runs in the call that trains them.
#
#   bash scripts/gpu_kit/registered_seeds.sh stage                 # here: .gpu_kit/ and .gpu_carry/
#   run(command="LINK_ROOT=/work/main bash scripts/gpu_kit/registered_seeds.sh run '3 4'",
#       carry=[".gpu_kit", ".gpu_carry"], timeout_s=600)            # there: the groups of seeds 3 and 4
#   bash scripts/gpu_kit/registered_seeds.sh record FILES_DIR       # here: record what came back
#
# AGAIN=1 (run): seeds whose three arms are recorded, pretraining and probe, but whose backbones stayed
# on an earlier machine (study_hard's seeds 3 and 4): each arm is trained again on this kind of device
# and fine-tuned, without a probe; `record` compares the second training's losses with the first's
# (scripts/same_training.py) and records the fine-tunings alone (docs/preregistration.md, detection).
#
# LINK_ROOT (run): the absolute path the CPU runs' outputs live under (their configs name
# LINK_ROOT/output/<variant>/...); it is linked to this checkout there, so the GPU runs' configs name
# the same files. Knobs: BUDGET_S (default 560: the call's 600 s less the transfers), VARIANTS
# (default "study study_hard"), WORKERS (DataLoader workers per run, default 4), GROUP_S (the
# seconds a group is assumed to need before one has been timed, default 240), PYTHON (skip the kit's
# install: an interpreter with objcrop, e.g. for `DRY=1`, which plans every group and runs nothing).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TAG=b256-200e-bf16
CARRY="$REPO/.gpu_carry"
VARIANTS="${VARIANTS:-study study_hard}"
# the data a registered run reads; the VOC copy feeds its fine-tuning
DATA_PARTS=(images annotations labels meta.json voc)
# what of the first variant's data travels: voc/JPEGImages are the images' own bytes (objcrop.datasets.synth
# writes each image twice), rebuilt there by voc_images
CARRIED_PARTS=(images annotations labels meta.json voc/Annotations voc/ImageSets)
GROUP_RESULTS=9  # per arm: pretraining, probe, VOC fine-tuning
AGAIN_RESULTS=6  # AGAIN=1: per arm, pretraining trained again and VOC fine-tuning (the probe is the first training's)

voc_images() {  # DATA: voc/JPEGImages from images/<split>/<stem>.jpg (one stem per image across the splits)
  mkdir -p "$1/voc/JPEGImages" && find "$1/images" -name '*.jpg' -exec cp -t "$1/voc/JPEGImages" {} +
}

references_recorded() {  # VARIANT: does its record hold the VOC reference fine-tunings (planned by the pipeline)?
  local missing
  missing=$("$REPO/scripts/run_pipeline.sh" --preset "$1" --out "$REPO/output/$1" --records "$REPO/docs/results/$1" \
    --tags "$TAG" --seeds 0 --stages pretrain,convert,detect --det-tasks voc --dry-run 2>&1 \
    | grep -oE "would run (detect\.voc\.[a-z_]+\.seed[0-9]+|convert\.supervised|pretrain\.supervised)" \
    | sed 's/would run //' | tr '\n' ' ')
  [ -z "$missing" ] || { echo "stage: $1's record lacks the detection references ($missing): run them on the CPU first" >&2; return 1; }
}

stage() {  # here: the kit and what the runs need that the working tree lacks
  bash "$HERE/prepare.sh" "$REPO/.gpu_kit" || exit 1
  rm -rf "$CARRY.tmp" && mkdir -p "$CARRY.tmp"
  for v in $VARIANTS; do
    local out="$REPO/output/$v"
    [ -f "$out/data/meta.json" ] || { echo "stage: $out/data is missing (run the $v preset's data stage)" >&2; exit 1; }
    references_recorded "$v" || exit 1
    (cd "$out/data" && find "${DATA_PARTS[@]}" -type f | LC_ALL=C sort | xargs sha256sum) > "$CARRY.tmp/$v.data.sha256"
    tar -C "$out" -czf "$CARRY.tmp/$v.proposals.tar.gz" proposals
  done
  # the first variant's data itself: the rest would not fit the 64 MiB that travel
  local first="${VARIANTS%% *}"
  tar -C "$REPO/output/$first" -czf "$CARRY.tmp/$first.data.tar.gz" "${CARRIED_PARTS[@]/#/data/}"
  rm -rf "$CARRY" && mv "$CARRY.tmp" "$CARRY"
  du -sh "$CARRY" "$REPO/.gpu_kit"
}

run() {
  local seeds="$1" out_dir="${OUT:-$REPO/output/registered_gpu}"
  mkdir -p "$out_dir"
  exec > >(tee -a "$out_dir/run.log") 2>&1
  local start budget=${BUDGET_S:-560} group_s=${GROUP_S:-240} root="$REPO"
  start=$(date +%s)
  left() { echo $(( budget - ($(date +%s) - start) )); }
  if [ -z "${PYTHON:-}" ]; then
    source "$HERE/install.sh"
    install_kit "$REPO/.gpu_kit" /tmp/objcrop_registered/venv "$REPO" || exit 2
  fi
  "$PYTHON" -c "import torch, objcrop.pretrain; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || exit 2
  if [ -n "${LINK_ROOT:-}" ] && [ "$(cd "$LINK_ROOT" 2>/dev/null && pwd -P)" != "$(cd "$REPO" && pwd -P)" ]; then
    if [ -e "$LINK_ROOT" ]; then
      echo "run: $LINK_ROOT exists and is not this checkout: the runs' configs name $REPO instead" >&2
      LINK_ROOT=""
    else
      mkdir -p "$(dirname "$LINK_ROOT")" && ln -s "$REPO" "$LINK_ROOT" || exit 2
    fi
  fi
  [ -n "${LINK_ROOT:-}" ] && root="$LINK_ROOT"
  echo "kit ready after $(( $(date +%s) - start )) s; outputs under $root/output"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$out_dir/gpu_use.csv" 2>/dev/null &
  fi

  # the inputs: carried proposals and data, or data generated here and checked against the manifest
  declare -A ready cut
  local v synths=()
  for v in $VARIANTS; do
    local o="$root/output/$v"
    mkdir -p "$o"
    tar -C "$o" -xzf "$CARRY/$v.proposals.tar.gz" || exit 2
    if [ -f "$CARRY/$v.data.tar.gz" ]; then
      tar -C "$o" -xzf "$CARRY/$v.data.tar.gz" && voc_images "$o/data" || exit 2
    else
      ( PYTHON="$PYTHON" bash "$HERE/../run_pipeline.sh" --preset "$v" --out "$o" --tags "$TAG" --seeds 0 \
          --stages data > "$out_dir/data_$v.log" 2>&1 ) &
      synths+=($!)
    fi
  done
  [ ${#synths[@]} -eq 0 ] || wait "${synths[@]}"  # not a bare wait: it would wait for the log's tee
  for v in $VARIANTS; do
    if (cd "$root/output/$v/data" && sha256sum --quiet -c "$CARRY/$v.data.sha256") > "$out_dir/check_$v.log" 2>&1; then
      ready[$v]=1; echo "$v: data identical to the CPU runs' ($(wc -l < "$CARRY/$v.data.sha256") files)"
    else
      echo "$v: data differs from the CPU runs' ($(grep -c FAILED "$out_dir/check_$v.log") files): not run"
    fi
    [ -s "$out_dir/check_$v.log" ] || rm -f "$out_dir/check_$v.log"  # at most 8 files come back
  done

  # AGAIN=1: seeds whose pretraining and probe are recorded but whose backbones stayed on an earlier
  # machine (docs/preregistration.md, detection): trained again for their fine-tuning only, no probe
  local stages=pretrain,probe,convert,detect want=$GROUP_RESULTS parts="runs/pretrain runs/probe runs/detect_voc" suffix=""
  [ -n "${AGAIN:-}" ] && { stages=pretrain,convert,detect; want=$AGAIN_RESULTS; parts="runs/pretrain runs/detect_voc"; suffix=_again; }
  local seed summary="$out_dir/summary.md"
  printf '| variant | seed | result | seconds |\n|---|---:|---|---:|\n' > "$summary"
  for seed in $seeds; do
    for v in $VARIANTS; do
      if [ -z "${ready[$v]:-}" ]; then echo "| $v | $seed | data differs: not run | 0 |" >> "$summary"; continue; fi
      # seed k of every arm before seed k + 1 of any: after an incomplete group (left to the CPU) its
      # variant's later seeds wait for it
      if [ -n "${cut[$v]:-}" ]; then echo "| $v | $seed | not started: seed ${cut[$v]} is incomplete | 0 |" >> "$summary"; continue; fi
      if [ "$(left)" -lt "$group_s" ]; then
        echo "| $v | $seed | not started: $(left) s left, a group takes about $group_s s | 0 |" >> "$summary"; continue
      fi
      local t0 rc o="$root/output/$v"
      t0=$(date +%s)
      echo "$v seed $seed: starting with $(left) s left"
      OMP_NUM_THREADS=1 PYTHON="$PYTHON" timeout --signal=TERM --kill-after=20 "$(( $(left) - 10 ))" \
        bash "$HERE/../run_pipeline.sh" --preset "$v" --out "$o" --records "$REPO/docs/results/$v" \
        --tags "$TAG" --seeds "$seed" --stages "$stages" --det-tasks voc --gpus 1 --jobs 3 \
        --loader-workers "${WORKERS:-4}" --keep-going ${DRY:+--dry-run} > "$out_dir/${v}_s$seed.log" 2>&1
      rc=$?
      local took=$(( $(date +%s) - t0 )) ok
      ok=$(ls "$o"/runs/pretrain/*-"$TAG"_*_s"$seed"/results.json "$o"/runs/detect_voc/*-"$TAG"_*_s"$seed"/seed"$seed"/results.json \
              $([ -z "$suffix" ] && echo "$o"/runs/probe/*-"$TAG"_*_s"$seed"/results.json) 2>/dev/null \
           | xargs -r grep -l '"status": "ok"' | wc -l)
      if [ "$rc" -eq 0 ] && [ "$ok" -eq "$want" ]; then
        group_s=$(( took + 20 ))  # the next group needs about as long as this one did
        # the group's own pipeline log (what it printed), not OUT/logs/pipeline.log: on a machine kept
        # warm between calls that one also holds the earlier groups, which the record would count twice
        local own
        own="$(mktemp -d)" && mkdir "$own/logs" && cp "$out_dir/${v}_s$seed.log" "$own/logs/pipeline.log"
        (cd "$o" && find $parts -path "*-${TAG}_*_s$seed/*" -type f ! -path '*/checkpoints/*' \
           ! -name '*.pth' ! -name '*.tmp' ! -name last_checkpoint \
           | tar -czf "$out_dir/${v}_s$seed$suffix.tar.gz" -T - $(ls logs/*-"$TAG"_*_s"$seed".log logs/*-"$TAG"_*_s"$seed".seed"$seed".log 2>/dev/null) \
             -C "$own" logs/pipeline.log)
        rm -rf "$own"
        echo "| $v | $seed | complete${suffix:+ (trained again)}: $ok of $want results | $took |" >> "$summary"
      else
        cut[$v]=$seed
        echo "| $v | $seed | incomplete (pipeline exit $rc, $ok of $want results): not brought back | $took |" >> "$summary"
      fi
      echo "$v seed $seed: exit $rc, $ok of $want results, $took s"
    done
  done
  echo "$(( $(date +%s) - start )) s on $(nproc) cores; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" >> "$summary"
  cat "$summary"
}

record() {  # here: each complete group that came back, into its own output folder and the record
  local files="$1" tarball v seed out py="${PYTHON:-$REPO/.venv/bin/python}"
  declare -A recorded
  for tarball in "$files"/*_s*.tar.gz; do
    [ -e "$tarball" ] || { echo "record: no group came back in $files" >&2; exit 1; }
    local name again="" want=$GROUP_RESULTS only=()
    name="$(basename "$tarball" .tar.gz)"
    # <variant>_s<seed>_again: trained again for the fine-tuning only (AGAIN=1): the record keeps the
    # first training's pretraining entry and probe, and takes the fine-tunings alone
    [ "${name%_again}" != "$name" ] && { again=1; want=$AGAIN_RESULTS; only=(--runs 'runs/detect_voc/*/*'); name="${name%_again}"; }
    seed="${name##*_s}"; v="${name%_s*}"
    [ "$(tar -tzf "$tarball" | grep -c '/results.json$')" -eq "$want" ] \
      || { echo "record: $tarball does not hold the $want results of a complete group" >&2; exit 1; }
    # its own folder, not output/<variant>: the record keeps one pipeline log per output folder, so
    # the GPU machine's log (which device, how long) is kept beside the CPU's
    out="$REPO/output/${v}_gpu_s$seed${again:+_again}"
    mkdir -p "$out" && tar -C "$out" -xzf "$tarball" || exit 1
    echo "record: $v seed $seed${again:+ (trained again: fine-tunings only)} from $out"
    if [ -n "$again" ]; then  # how the second training compares with the first (a GPU need not repeat it)
      "$py" "$REPO/scripts/same_training.py" "$REPO/docs/results/$v" "$out"/runs/pretrain/* \
        --json "$out/extras/second_trainings_$(basename "$out").json"; [ $? -le 1 ] || exit 1
    fi
    "$py" -m objcrop report record "$out" "$REPO/docs/results/$v" "${only[@]}" || exit 1
    recorded[$v]=1
  done
  # each variant's report once, after all its groups are in; from the repository root, so that
  # runs.csv names the runs by their paths in the repository
  for v in "${!recorded[@]}"; do
    (cd "$REPO" && "$py" -m objcrop report "docs/results/$v/runs" --out "docs/results/$v/report" \
      --registration docs/preregistration.yaml --study "$v") || exit 1
  done
}

case "${1:-}" in
  stage) stage ;;
  run) [ -n "${2:-}" ] || { echo "usage: $0 run 'SEEDS'" >&2; exit 2; }; run "$2" ;;
  record) [ -n "${2:-}" ] || { echo "usage: $0 record FILES_DIR" >&2; exit 2; }; record "$2" ;;
  *) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 2 ;;
esac
