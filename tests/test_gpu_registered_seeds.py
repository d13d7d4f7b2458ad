"""scripts/gpu_kit/registered_seeds.sh: what a GPU lease brings back of the registered comparison.

The script runs on a lent GPU machine, which the tests never have; its rules do not need one. It runs
here against a stand-in for scripts/run_pipeline.sh that writes the files a pipeline group writes
(or fails part-way, as a deadline would), in a copy of the repository's layout under tmp_path. Checked:
only complete groups come back, without checkpoints; a variant's later seeds wait for an incomplete
one (seed order across the arms); a variant whose data is not the CPU runs' byte for byte is not run;
`record` refuses a group that lacks one of its nine results (per arm: pretraining, probe, VOC fine-tuning);
a seed trained again for its fine-tuning only (AGAIN=1) is not probed and comes back with six."""
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_kit" / "registered_seeds.sh"
ARMS = ("random-b256-200e-bf16_none", "obj-obj-dilate-b256-200e-bf16_gt",
        "obj-obj-dilate-b256-200e-bf16_ranked-top10")

# The stand-in pipeline: `--stages data` writes the variant's data from $SYNTH_<variant> (the bytes a
# machine's generator produces) and its VOC copy; `--stages pretrain,probe,convert,detect` writes the group's
# runs, all three arms, or only the first when $FAIL names this variant:seed (the group cut by the deadline,
# exit 124).
FAKE_PIPELINE = textwrap.dedent("""\
    #!/usr/bin/env bash
    set -eu
    args="$*"
    while [ $# -gt 0 ]; do
      case "$1" in --preset) v="$2"; shift;; --out) out="$2"; shift;; --seeds) seed="$2"; shift;;
                   --stages) stages="$2"; shift;; esac; shift
    done
    mkdir -p "$out/logs"
    echo "[pipeline] $args" | tee -a "$out/logs/pipeline.log"
    if [ "$stages" = data ]; then
      mkdir -p "$out/data/images" "$out/data/annotations" "$out/data/labels" "$out/data/voc/JPEGImages" \
               "$out/data/voc/Annotations" "$out/data/voc/ImageSets/Main"
      var="SYNTH_$v"; printf '%s' "${!var}" > "$out/data/images/0.jpg"
      cp "$out/data/images/0.jpg" "$out/data/voc/JPEGImages/0.jpg"
      echo '<annotation/>' > "$out/data/voc/Annotations/0.xml"; echo 0 > "$out/data/voc/ImageSets/Main/train.txt"
      echo '{}' > "$out/data/meta.json"
      exit 0
    fi
    case "$stages" in *detect*) ;; *) echo "the registered arms are fine-tuned in the call that trains them" >&2; exit 2;; esac
    n=0
    for arm in ARMS; do
      name="moco_v2_${arm}_r18_b256_e200_data-train_s$seed"
      for stage in pretrain $(case "$stages" in *probe*) echo probe;; esac); do
        mkdir -p "$out/runs/$stage/$name/checkpoints"
        echo '{"status": "ok"}' > "$out/runs/$stage/$name/results.json"
        echo "config" > "$out/runs/$stage/$name/config.yaml"
        echo "$stage of $name" > "$out/logs/$stage.$name.log"
      done
      echo weights > "$out/runs/pretrain/$name/model_final.pth"
      echo weights > "$out/runs/pretrain/$name/checkpoints/model_epoch_0005.pth"
      det="$out/runs/detect_voc/$name/seed$seed"
      mkdir -p "$det"
      echo '{"status": "ok"}' > "$det/results.json"
      echo weights > "$det/model_final.pth"
      echo "$det/model_final.pth" > "$det/last_checkpoint"
      echo "detection of $name" > "$out/logs/detect.voc.$name.seed$seed.log"
      n=$((n + 1))
      if [ "${FAIL:-}" = "$v:$seed" ]; then exit 124; fi
    done
    """).replace("ARMS", " ".join(ARMS))


def _repo(tmp_path, variants=("study", "study_hard")):
    """A checkout with the script, the stand-in pipeline and a staged .gpu_carry: the first variant's
    data travels, the others' are generated (by the stand-in) and checked against the manifest."""
    root = tmp_path / "repo"
    (root / "scripts" / "gpu_kit").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "gpu_kit")
    (root / "scripts" / "run_pipeline.sh").write_text(FAKE_PIPELINE)
    carry = root / ".gpu_carry"
    carry.mkdir()
    for i, v in enumerate(variants):
        data = tmp_path / "cpu" / v / "data"
        (data / "images").mkdir(parents=True)
        (data / "annotations").mkdir()
        (data / "labels").mkdir()
        (data / "images" / "0.jpg").write_text(f"pixels of {v}")
        (data / "meta.json").write_text("{}\n")
        (data / "voc" / "ImageSets" / "Main").mkdir(parents=True)
        (data / "voc" / "Annotations").mkdir()
        (data / "voc" / "JPEGImages").mkdir()
        (data / "voc" / "JPEGImages" / "0.jpg").write_text(f"pixels of {v}")  # synth writes each image twice
        (data / "voc" / "Annotations" / "0.xml").write_text("<annotation/>\n")
        (data / "voc" / "ImageSets" / "Main" / "train.txt").write_text("0\n")
        manifest = subprocess.run("find images annotations labels meta.json voc -type f | LC_ALL=C sort | xargs sha256sum",
                                  shell=True, cwd=data, check=True, capture_output=True, text=True).stdout
        (carry / f"{v}.data.sha256").write_text(manifest)
        (tmp_path / "cpu" / v / "proposals").mkdir()
        (tmp_path / "cpu" / v / "proposals" / "gt.store").write_text("boxes")
        with tarfile.open(carry / f"{v}.proposals.tar.gz", "w:gz") as t:
            t.add(tmp_path / "cpu" / v / "proposals", arcname="proposals")
        if i == 0:
            with tarfile.open(carry / f"{v}.data.tar.gz", "w:gz") as t:
                for part in ("images", "annotations", "labels", "meta.json", "voc/Annotations", "voc/ImageSets"):
                    t.add(data / part, arcname=f"data/{part}")
    return root


def _run(root, seeds, **env):
    out = root.parent / "out"
    full = dict(os.environ, PYTHON=sys.executable, OUT=str(out), VARIANTS="study study_hard",
                SYNTH_study_hard="pixels of study_hard")
    full.update(env)
    full.pop("LINK_ROOT", None)
    proc = subprocess.run(["bash", str(root / "scripts" / "gpu_kit" / "registered_seeds.sh"), "run", seeds],
                          env=full, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, (out / "summary.md").read_text()


def _members(tarball):
    with tarfile.open(tarball) as t:
        return t.getnames()


def test_complete_groups_come_back_without_checkpoints(tmp_path):
    root = _repo(tmp_path)
    out, summary = _run(root, "3 4")
    assert sorted(p.name for p in out.glob("*.tar.gz")) == ["study_hard_s3.tar.gz", "study_hard_s4.tar.gz",
                                                              "study_s3.tar.gz", "study_s4.tar.gz"]
    assert summary.count("complete: 9 of 9 results") == 4
    names = _members(out / "study_hard_s4.tar.gz")
    assert sum(n.endswith("/results.json") for n in names) == 9
    assert sum("runs/detect_voc/" in n and n.endswith("/seed4/results.json") for n in names) == 3
    assert not [n for n in names if n.endswith(".pth") or "/checkpoints/" in n or n.endswith("last_checkpoint")]
    assert "logs/pretrain.moco_v2_obj-obj-dilate-b256-200e-bf16_gt_r18_b256_e200_data-train_s4.log" in names
    assert "logs/detect.voc.moco_v2_obj-obj-dilate-b256-200e-bf16_gt_r18_b256_e200_data-train_s4.seed4.log" in names
    assert not [n for n in names if "_s3" in n]  # the group is one seed
    with tarfile.open(out / "study_hard_s4.tar.gz") as t:  # and its pipeline log the group's own lines
        log = t.extractfile("logs/pipeline.log").read().decode()
    assert "--seeds 4" in log and "--seeds 3" not in log
    # the carried data and proposals are where the runs read them
    assert (root / "output" / "study" / "data" / "images" / "0.jpg").read_text() == "pixels of study"
    # the VOC copy's images, rebuilt from the carried images (not carried: the 64 MiB), pass the manifest
    assert (root / "output" / "study" / "data" / "voc" / "JPEGImages" / "0.jpg").read_text() == "pixels of study"
    assert (root / "output" / "study_hard" / "proposals" / "gt.store").read_text() == "boxes"


def test_an_incomplete_group_stays_behind_and_holds_back_its_variants_later_seeds(tmp_path):
    out, summary = _run(_repo(tmp_path), "3 4", FAIL="study:3")
    assert sorted(p.name for p in out.glob("*.tar.gz")) == ["study_hard_s3.tar.gz", "study_hard_s4.tar.gz"]
    assert "| study | 3 | incomplete (pipeline exit 124, 3 of 9 results): not brought back |" in summary
    assert "| study | 4 | not started: seed 3 is incomplete | 0 |" in summary


def test_a_variant_whose_generated_data_differs_from_the_cpu_runs_is_not_run(tmp_path):
    out, summary = _run(_repo(tmp_path), "3", SYNTH_study_hard="other pixels")
    assert sorted(p.name for p in out.glob("*.tar.gz")) == ["study_s3.tar.gz"]
    assert "| study_hard | 3 | data differs: not run | 0 |" in summary
    assert "images/0.jpg: FAILED" in (out / "check_study_hard.log").read_text()


def _record_without_one_fine_tuning(root, tarball, part):
    """`record` of a copy of `tarball` (in the folder `part`) without the random arm's VOC fine-tuning result."""
    part.mkdir()
    with tarfile.open(tarball) as src, tarfile.open(part / tarball.name, "w:gz") as dst:
        for m in src.getmembers():
            if not (m.name.endswith("results.json") and "random" in m.name and "/detect_voc/" in m.name):
                dst.addfile(m, src.extractfile(m))
    return subprocess.run(["bash", str(root / "scripts" / "gpu_kit" / "registered_seeds.sh"), "record", str(part)],
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=60)


def test_record_refuses_a_group_without_its_nine_results(tmp_path):
    root = _repo(tmp_path)
    out, _ = _run(root, "3")
    proc = _record_without_one_fine_tuning(root, out / "study_s3.tar.gz", tmp_path / "part")
    assert proc.returncode == 1 and "does not hold the 9 results of a complete group" in proc.stderr
    assert not (root / "docs" / "results" / "study" / "record.json").exists()


@pytest.mark.parametrize("mode", ["", "bogus"])
def test_usage_names_the_three_modes(mode):
    proc = subprocess.run(["bash", str(SCRIPT)] + ([mode] if mode else []), capture_output=True, text=True)
    assert proc.returncode == 2 and "stage" in proc.stdout and "record FILES_DIR" in proc.stdout


def test_seeds_trained_again_bring_back_their_fine_tunings_and_second_training_without_a_probe(tmp_path):
    """AGAIN=1 (docs/preregistration.md, detection): a recorded seed whose backbones stayed on an earlier
    machine is trained again and fine-tuned, not probed; `record` wants its six results."""
    root = _repo(tmp_path)
    out, summary = _run(root, "3", AGAIN="1")
    assert sorted(p.name for p in out.glob("*.tar.gz")) == ["study_hard_s3_again.tar.gz", "study_s3_again.tar.gz"]
    assert summary.count("complete (trained again): 6 of 6 results") == 2
    names = _members(out / "study_s3_again.tar.gz")
    assert sum(n.endswith("/results.json") for n in names) == 6 and not [n for n in names if "/probe/" in n]
    assert sum(n.startswith("runs/pretrain/") and n.endswith("/results.json") for n in names) == 3
    with tarfile.open(out / "study_s3_again.tar.gz") as t:  # not probed again: its probe is the first training's
        assert "--stages pretrain,convert,detect " in t.extractfile("logs/pipeline.log").read().decode()
    proc = _record_without_one_fine_tuning(root, out / "study_s3_again.tar.gz", tmp_path / "part")
    assert proc.returncode == 1 and "does not hold the 6 results of a complete group" in proc.stderr
