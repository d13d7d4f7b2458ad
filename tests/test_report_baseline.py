"""The one baseline rule (report/baseline.py): a tagged run's Δ is against the random crops with its
tag, in the report's table and on the study pages alike; a tag stored on its own or joined to the
policy gives the same row."""
import statistics

import pytest

from objcrop.records import Provenance, dataset_label, results
from objcrop.report.aggregate import Column, build_table
from objcrop.report.baseline import baseline_policy

PROBE = Column("probe", "", "mAP", "synth:test")
# policy label -> probe mAPs of its seeds
SCORES = {"random": [0.40, 0.42], "random-grey": [0.30, 0.34], "obj-obj-dilate": [0.45, 0.47],
          "obj-obj-dilate-grey": [0.36, 0.38]}


def _probe(policy: str, tag: str, seed: int, mAP: float, glued: bool) -> dict:
    if glued and tag:  # a record written before the tag had its own field
        policy, tag = f"{policy}-{tag}", ""
    prov = Provenance("moco_v2", policy, "none" if policy.startswith("random") else "gt", 3, "resnet18",
                      "synth:/d:train", seed, tag)
    return results("probe", "ok", prov, dataset="synth:/d:test", mAP=mAP)


def _runs(glued: bool):
    runs = []
    for label, values in SCORES.items():
        policy, _, tag = label.partition("-grey")
        tag = "grey" if label.endswith("-grey") else ""
        for seed, v in enumerate(values):
            runs.append((_probe(policy, tag, seed, v, glued), f"/runs/{label}_s{seed}"))
    return runs


def _delta(table, policy):
    row = next(r for r in table.rows if r.policy == policy)
    return table.cell(row, PROBE).delta


@pytest.mark.parametrize("glued", [False, True])
def test_a_tagged_run_is_read_against_the_random_crops_with_its_tag(glued):
    table = build_table(_runs(glued))
    mean = {k: 100 * statistics.fmean(v) for k, v in SCORES.items()}
    assert _delta(table, "obj-obj-dilate-grey") == pytest.approx(mean["obj-obj-dilate-grey"] - mean["random-grey"])
    assert _delta(table, "obj-obj-dilate") == pytest.approx(mean["obj-obj-dilate"] - mean["random"])
    # the tagged random crops: what the tag alone changes
    assert _delta(table, "random-grey") == pytest.approx(mean["random-grey"] - mean["random"])
    assert _delta(table, "random") is None


def test_tag_field_and_glued_policy_give_the_same_rows():
    assert build_table(_runs(False)).rows == build_table(_runs(True)).rows


def test_baseline_policy_rule():
    candidates = ["random", "random-grey", "random-lr-moco", "obj-obj-dilate"]
    assert baseline_policy("obj-obj-dilate-grey", candidates) == "random-grey"
    assert baseline_policy("obj-obj-dilate-lr-moco", candidates) == "random-lr-moco"
    assert baseline_policy("obj-obj-dilate-4x", candidates) == "random"  # no random-4x: plain random crops
    # a tag that ends in a recipe's tag is a variant of that recipe (the study's exploratory arms at the
    # registered budget): read against the recipe's random crops, not plain random crops
    recipe = ["random", "random-b256-200e-bf16"]
    assert baseline_policy("obj-scene-explore-b256-200e-bf16", recipe) == "random-b256-200e-bf16"
    assert baseline_policy("obj-obj-dilate+copy-paste-dilo-explore-b256-200e-bf16", recipe) == "random-b256-200e-bf16"
    assert baseline_policy("random-grey", candidates) == "random"
    assert baseline_policy("random", candidates) is None
    assert baseline_policy("obj-obj-dilate", ["obj-obj-dilate"]) is None


# Two architectures x two pretraining datasets, every setting with its own random-crop row; the
# numbers differ per setting so that reading a row against another setting's baseline changes Δ.
SETTINGS = {("resnet18", "synth:/d:train"): (0.30, 0.38), ("resnet50", "synth:/d:train"): (0.50, 0.61),
            ("resnet18", "coco:/c/instances_train.json:/c/img"): (0.20, 0.33),
            ("resnet50", "coco:/c/instances_train.json:/c/img"): (0.70, 0.74)}


def _settings_runs():
    runs = []
    for (arch, data), (random_map, obj_map) in SETTINGS.items():
        for policy, proposals, value in (("random", "none", random_map), ("obj-obj-dilate", "gt", obj_map)):
            prov = Provenance("moco_v2", policy, proposals, 3, arch, data, 0)
            runs.append((results("probe", "ok", prov, dataset="synth:/d:test", mAP=value), f"/runs/{arch}/{data}/{policy}"))
    return runs


@pytest.mark.parametrize("order", [1, -1])
def test_each_row_is_read_against_the_random_crops_of_its_own_architecture_and_dataset(order):
    """Guards against Δ computed against a random-crop row of another architecture or another
    pretraining dataset (a baseline lookup keyed without arch or dataset): with either field left
    out, one of the four settings below picks its neighbour's random crops, in either input order."""
    table = build_table(_settings_runs()[::order])
    deltas = {(r.arch, r.dataset): table.cell(r, PROBE).delta for r in table.rows if r.policy == "obj-obj-dilate"}
    assert len(deltas) == len(SETTINGS)
    for (arch, data), (random_map, obj_map) in SETTINGS.items():
        base = table.baselines[next(r for r in table.rows if r.policy == "obj-obj-dilate" and r.arch == arch
                                    and r.dataset == dataset_label(data))]
        assert (base.arch, base.dataset, base.policy) == (arch, dataset_label(data), "random")
        assert deltas[(arch, dataset_label(data))] == pytest.approx(100 * (obj_map - random_map))


def test_the_longest_matching_tag_wins_whatever_the_candidates_order():
    """Guards against the tie-break of baseline_policy: `-lr-moco` must find `random-lr-moco`, not
    `random-moco` (a shorter tag that also ends the label), whichever order the candidates come in."""
    candidates = ["random", "random-moco", "random-lr-moco"]
    for order in (candidates, candidates[::-1]):
        assert baseline_policy("obj-obj-dilate-lr-moco", order) == "random-lr-moco"
        assert baseline_policy("obj-obj-dilate-moco", order) == "random-moco"
