"""The core record module and the one ground-truth box rule (objcrop/records.py, objcrop/datasets/boxes.py)."""
import json
import shutil

import numpy as np
import pytest

from objcrop.datasets.boxes import gt_boxes
from objcrop.records import (SCHEMA_VERSION, Provenance, RecordError, dataset_label, dataset_tag, read_results,
                             results, run_name, validate_results, write_results)

CROWDED = {"image_id": 1, "height": 40, "width": 40, "annotations": [
    {"bbox": [1, 2, 3, 4], "bbox_mode": 1, "category_id": 0, "iscrowd": 0,
     "segmentation": [[1, 2, 4, 2, 4, 6, 1, 6]]},
    {"bbox": [10, 10, 20, 20], "bbox_mode": 1, "category_id": 0, "iscrowd": 1,
     "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
    {"bbox": [5, 5, 9, 9], "bbox_mode": 0, "category_id": 1, "iscrowd": 0}]}


def test_gt_boxes_drop_crowd_regions_and_read_both_box_modes():
    assert gt_boxes(CROWDED).tolist() == [[1, 2, 4, 6], [5, 5, 9, 9]]
    assert gt_boxes({"annotations": []}).shape == (0, 4)


def test_pretraining_gt_and_proposals_gt_see_the_same_boxes_and_mask():
    from objcrop.pretrain.engine.data import BoxSource
    from objcrop.pretrain.proposals.methods import gt_proposals

    boxes, _, mask = gt_proposals(CROWDED)
    source = BoxSource("gt", with_masks=True)
    assert np.array_equal(source.boxes(CROWDED), boxes)
    assert np.array_equal(source.mask(CROWDED, 40, 40), mask)
    assert mask[20, 20] == 0  # the crowd region is not foreground


def test_run_name_encodes_the_setting_and_the_tag_joins_the_policy():
    prov = Provenance("moco_v2", "random", "none", 100, "resnet18", "synth:/x/study:train", 3, tag="no-colour")
    assert run_name(prov, 256) == "moco_v2_random-no-colour_none_r18_b256_e100_study-train_s3"
    # a record written before the tag had its own field reads as the same row
    old = Provenance.from_dict({"method": "moco_v2", "policy": "random-no-colour", "proposals": "none"})
    assert old.policy_label == prov.policy_label


def test_provenance_round_trip_keeps_old_records_shape():
    block = {"method": "moco_v2", "policy": "random", "proposals": "none", "epochs": 8, "arch": "resnet50",
             "dataset": "synth:d:train", "seed": 0}
    assert Provenance.from_dict(block).to_dict() == block
    assert Provenance.from_dict({"method": "byol", "tag": "x"}).to_dict()["tag"] == "x"
    assert Provenance.from_dict(None).method == "unknown"


def test_dataset_names():
    assert dataset_tag("synth:/data/synth_small:train") == "synth_small-train"
    assert dataset_label("synth:/abs/dir:test") == "synth:test"
    assert dataset_label("coco:/a/instances_val.json:/a/img") == "coco:instances_val"
    assert dataset_label("folder:/a/b/") == "folder:b"
    assert dataset_label("openimages:/oi:train") == "openimages:train"
    assert dataset_label("openimages:/oi:train:/lists/images_selected_new.npy") == "openimages:train:images_selected_new"
    assert dataset_label("coco_2017_val") == "coco_2017_val"


def test_results_schema_validates(tmp_path):
    prov = Provenance.random_init("resnet18", 0)
    rec = results("probe", "ok", prov, dataset="d", mAP=0.5)
    assert rec["schema"] == SCHEMA_VERSION
    path = write_results(str(tmp_path), rec)
    assert read_results(path) == json.loads(open(path).read())
    with pytest.raises(RecordError, match="lacks mAP"):
        results("probe", "ok", prov, dataset="d")
    results("probe", "failed", prov)  # a failed run need not have metrics
    with pytest.raises(RecordError, match="stage"):
        validate_results({"stage": "nope"})
    assert validate_results({"stage": "probe", "mAP": 1}) == 0  # pre-schema records still read
    (tmp_path / "bad" ).mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"schema": 99, "stage": "probe"}))
    with pytest.raises(RecordError, match="bad/results.json: schema version 99"):
        read_results(str(tmp_path / "bad" / "results.json"))


# ---------------------------------------------------------------- which code wrote a record
def _git(cwd, *args):
    import subprocess

    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def _repo_with(tmp_path, package_at):
    """A git repository with one commit holding `package_at`/__init__.py; returns (repo, package dir)."""
    repo = tmp_path / "repo"
    package = repo / package_at
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return repo, package


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_record_names_the_commit_of_the_checkout_it_came_from(tmp_path):
    """Guards against records that cannot say which code wrote their numbers, and against taking the commit
    of a repository that merely contains an installed copy of objcrop (a .venv inside some project)."""
    import objcrop
    from objcrop.records import code_identity

    repo, package = _repo_with(tmp_path, "objcrop")
    ident = code_identity(str(package))
    assert ident == {"objcrop": objcrop.__version__, "commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    (package / "__init__.py").write_text("x = 1\n")  # a tracked file edited: the numbers are not that commit's
    assert code_identity(str(package))["dirty"] is True

    other, vendored = _repo_with(tmp_path / "other", ".venv/lib/site-packages/objcrop")
    assert code_identity(str(vendored)) == {"objcrop": objcrop.__version__, "commit": None, "dirty": None}

    rec = results("probe", "ok", Provenance.random_init("resnet18", 0), dataset="d", mAP=0.5)
    assert rec["code"] == code_identity()  # every record, the writing process's code
    assert rec["code"]["objcrop"] == objcrop.__version__


def test_code_history_lists_each_session_that_trained_a_run_once():
    from objcrop.records import code_history

    a = {"objcrop": "0.1.0", "commit": "a" * 40, "dirty": False}
    b = {"objcrop": "0.1.0", "commit": "b" * 40, "dirty": False}
    assert code_history(None, a) == [a]
    assert code_history([a], a) == [a]  # resumed on the same code: one entry
    assert code_history([a], b) == [a, b]  # resumed across commits: both
    assert code_history([a, b], a) == [a, b, a]


@pytest.mark.parametrize("flags, kind", [("fpu avx2 avx512f avx512_bf16 amx_bf16", "AMD EPYC (AMX)"),
                                         ("fpu avx2 avx512f avx512_bf16", "AMD EPYC (AVX512-BF16)"),
                                         ("fpu avx2 avx512f", "AMD EPYC (AVX512)"), ("fpu avx2", "AMD EPYC (AVX2)"),
                                         ("fpu sse4_2", "AMD EPYC"), (None, "AMD EPYC")])
def test_a_cpu_is_named_by_its_model_and_widest_vector_extension(monkeypatch, flags, kind):
    """Two CPUs of one model name that differ in their vector extensions run other float kernels (the
    same seed trains other weights), so a run's device names the widest one its CPU has."""
    from objcrop import records

    monkeypatch.setattr(records, "cpuinfo_field", lambda name: {"model name": "AMD EPYC", "flags": flags}[name])
    assert records.cpu_kind() == kind
