"""Issue 20 §3's budget curve (report/budget_curve.py): the two policies of the amendment's recipe by
epochs, each against random init and against each other, on the study page."""
import copy
import os

from objcrop.report import budget_curve, prereg, study_tables
from objcrop.report.plots import plot_budget_curve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = study_tables.PROBE
REF = [34.0, 35.0, 36.0]


def _up(d):
    return [x + d for x in REF]


def _plan():
    plan = copy.deepcopy(prereg.load(os.path.join(REPO, "docs", "preregistration.yaml")))
    plan["amendment"]["study"] = {"tag": "b256-200e-bf16", "epochs": 200}
    return plan


def _values():
    return {study_tables.RANDOM_INIT: {P: REF},
            ("moco_v2", "random-b256-50e-bf16", "none", "50"): {P: _up(0.5)},
            ("moco_v2", "obj-obj-dilate-b256-50e-bf16", "gt", "50"): {P: _up(8)},
            ("moco_v2", "random-b256-100e-bf16", "none", "100"): {P: _up(6)},  # the other arm not run yet
            ("moco_v2", "random-b256-200e-bf16", "none", "200"): {P: _up(9)},
            ("moco_v2", "obj-obj-dilate-b256-200e-bf16", "gt", "200"): {P: _up(12)},
            # decoys, each of which a looser rule would take as a point of the curve:
            ("moco_v2", "obj-obj-dilate-b256-200e-bf16", "selective-search-top10", "200"): {P: _up(1)},  # proposals
            ("byol", "random-b256-100e-bf16", "none", "100"): {P: _up(20)},           # another method
            ("moco_v2", "random-b256-100e", "none", "100"): {P: _up(20)},             # another recipe (fp32)
            ("moco_v2", "random-b32-100e-bf16", "none", "100"): {P: _up(20)},         # another batch
            ("moco_v2", "random-b256-300e-bf16", "none", "30"): {P: _up(20)}}         # a tag naming other epochs


def test_the_curve_takes_the_amendments_recipe_at_each_budget_and_nothing_else():
    values = _values()
    arches = {k: "resnet18" for k in values}
    rows = budget_curve.curve_rows(values, arches, _plan()["amendment"]["study"], 0.05)
    assert [(r["epochs"], r["tag"]) for r in rows] == [("50", "b256-50e-bf16"), ("100", "b256-100e-bf16"),
                                                      ("200", "b256-200e-bf16")]
    first, second, third = rows
    # at 50 epochs only the object-aware arm learned: the reading "learns sooner" rests on these cells
    assert (first["base_learned"], first["obj_learned"]) == (False, True)
    assert first["delta"] == 7.5 and first["p"] < 0.05
    assert second["obj"] == [] and "delta" not in second
    assert third["delta"] == 3.0


def test_the_section_counts_the_budgets_with_both_policies_and_withholds_registered_arms():
    values = _values()
    arches = {k: "resnet18" for k in values}
    studies = {"study": (values, arches), "study_hard": ({}, {})}
    page = budget_curve.section(studies, _plan(), {})
    assert "| study | 50 | b256-50e-bf16 | 35.5 ± 1.0 (n=3) | 43.0 ± 1.0 (n=3) | no | **yes** | +7.5 [" in page
    assert "| study | 100 | b256-100e-bf16 | 41.0 ± 1.0 (n=3) | not run | **yes** | — | — |" in page
    assert "* `study`: 2 budgets with both policies (of the 3 the curve needs)" in page
    # a registered arm still short of seeds is not shown here either (fixed n, no peeking)
    held = {"study": {("moco_v2", "obj-obj-dilate-b256-200e-bf16", "gt", "200")}}
    page = budget_curve.section(studies, _plan(), held)
    assert "| study | 200 | b256-200e-bf16 | 44.0 ± 1.0 (n=3) | withheld | **yes** | — | — |" in page
    assert "* `study`: 1 budget with both policies (of the 3 the curve needs)" in page
    assert budget_curve.section(studies, None, {}) == ""


def test_a_tag_that_does_not_name_its_epochs_has_no_curve():
    assert budget_curve.tag_pattern({"tag": "b256", "epochs": 200}) is None
    assert budget_curve.tag_pattern({"tag": None, "epochs": 200}) is None
    assert budget_curve.tag_pattern({"tag": "b256-200e-bf16", "epochs": 200}).fullmatch("b256-50e-bf16")


def test_the_curve_is_drawn(tmp_path):
    values = _values()
    arches = {k: "resnet18" for k in values}
    panels = budget_curve.panels({"study": (values, arches)}, _plan(), {})
    assert [p[0] for p in panels] == ["study"] and len(panels[0][1]) == 3
    path = plot_budget_curve(panels, str(tmp_path / "budget_curve.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
