"""The study page's registered comparisons and the re-reading of the earlier ones (report/prereg.py),
and the exploratory reading's effect sizes (report/study_tables.py)."""
import copy
import os
import re

import pytest
import yaml
from _repo_files import load_repo_module

from objcrop.errors import ObjcropError
from objcrop.report import prereg, stats, study_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREREG = os.path.join(REPO, "docs", "preregistration.yaml")
P, K = study_tables.PROBE, study_tables.KNN


def _plan(n=3, epochs=100, tag="b256", ranked="bing-top10"):
    plan = prereg.load(PREREG)
    plan = copy.deepcopy(plan)
    plan["seeds_per_arm"] = n
    for study in ("study", "study_hard"):
        plan["amendment"][study] = {"tag": tag, "epochs": epochs}
    plan["amendment"]["ranked_proposals"] = ranked
    return plan


def _values(gt, ranked, base):
    return {("moco_v2", "obj-obj-dilate-b256", "gt", "100"): {P: gt},
            ("moco_v2", "obj-obj-dilate-b256", "bing-top10", "100"): {P: ranked},
            ("moco_v2", "random-b256", "none", "100"): {P: base}}


def test_the_repositorys_amendment_names_rows_that_its_presets_plan_with_every_seed():
    """The amendment (issue 20 §2's budgets, proposal_choice.py's stores) names, for every hypothesis, an
    arm and a random-crop baseline that its variant's preset runs with the registered seeds 0..n-1."""
    import objcrop.pipeline as pipeline

    plan = prereg.load(PREREG)
    assert [h["id"] for h in plan["hypotheses"]] == ["H1", "H2", "H3", "H4"]
    n = int(plan["seeds_per_arm"])
    for h in plan["hypotheses"]:
        (method, policy, proposals, epochs), against = prereg.hypothesis_row(plan, h)
        names = {t.name for t in pipeline.build_plan(pipeline.load_preset(h["study"]), "/OUT") if t.stage == "pretrain"}
        for label, source in ((policy, proposals), (against, "none")):
            for seed in range(n):
                run = f"pretrain.{method}_{label}_{source}_r18_b256_e{epochs}_data-train_s{seed}"
                assert run in names, (h["id"], run)
    # and no registered comparison is read before all of its seeds are in
    table = prereg.registered_table(plan, {}, P, True)
    assert table.count(f"of {n} seeds: not read") == 4 and "supported" not in table


def test_amended_hypotheses_name_their_rows_and_their_tagged_baseline():
    plan = _plan()
    h2 = plan["hypotheses"][1]
    assert prereg.hypothesis_row(plan, h2) == (("moco_v2", "obj-obj-dilate-b256", "bing-top10", "100"), "random-b256")
    assert prereg.registered_rows(plan, "study") == {("moco_v2", "obj-obj-dilate-b256", "gt", "100"),
                                                     ("moco_v2", "obj-obj-dilate-b256", "bing-top10", "100")}


def test_no_peeking_no_p_before_every_seed_is_in():
    plan = _plan(n=4)
    studies = {"study": (_values([50, 51, 52], [40, 41, 42], [40, 41, 42]), {})}
    table = prereg.registered_table(plan, studies, P, True)
    h1 = next(line for line in table.splitlines() if line.startswith("| H1 "))
    assert "3 and 3 of 4 seeds: not read" in h1 and "0.0" not in h1


def test_complete_family_is_holm_corrected_with_missing_hypotheses_counted():
    plan = _plan(n=3)
    gt, ranked, base = [50.0, 51.5, 52.0], [41.0, 42.5, 41.5], [40.0, 41.0, 42.5]
    studies = {"study": (_values(gt, ranked, base), {})}  # study_hard has no runs: H3, H4 count as p = 1
    table = prereg.registered_table(plan, studies, P, True)
    lines = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    p1, p2 = stats.welch(gt, base).p, stats.welch(ranked, base).p
    adjusted = stats.holm([p1, p2, 1.0, 1.0])
    assert f"| {prereg.fmt_p(adjusted[0])} |" in lines["H1"] and f"| {prereg.fmt_p(adjusted[1])} |" in lines["H2"]
    # H1's exact permutation p over C(6, 3) = 20 relabellings is 2/20 at best: × 4 = 0.4, so not supported
    assert stats.permutation_p(gt, base).p == pytest.approx(0.1)
    assert lines["H1"].endswith("| not shown |") and lines["H2"].endswith("| not shown |")
    assert "0 and 0 of 3 seeds: not read" in lines["H3"]  # amended, but no run yet


def test_a_large_clear_gap_is_supported():
    plan = _plan(n=6)
    base = [40.0, 41.0, 42.0, 40.5, 41.5, 39.5]
    gt = [b + 10 for b in base]
    studies = {"study": (_values(gt, base, base), {}), "study_hard": (_values(gt, base, base), {})}
    table = prereg.registered_table(plan, studies, P, True)
    assert sum(line.endswith("| supported |") for line in table.splitlines()) == 2  # H1, H3
    assert "+10.0 [" in table


def test_each_registered_column_shows_its_reference_rows_per_variant():
    """docs/preregistration.md: detection AP50 "with scratch and supervised references": under every
    registered table, each variant's random-init (scratch, for detection) and supervised rows of that
    column, from the same values, none taken from another column or variant."""
    voc = "VOC AP50 (voc:test)"
    study = _values([50], [40], [40])
    study[prereg.RANDOM_INIT] = {P: [33.0, 35.0], voc: [4.0, 6.0]}
    study[prereg.SUPERVISED] = {P: [70.0], voc: [38.0]}
    hard = _values([50], [40], [40])
    hard[prereg.RANDOM_INIT] = {voc: [7.0]}
    section = prereg.registered_section(_plan(n=3), {"study": (study, {}), "study_hard": (hard, {})}, "p.yaml")
    lines = [line for line in section.splitlines() if line.startswith("References (not tested): ")]
    assert lines[0] == ("References (not tested): study: random init 34.0 ± 1.4 (n=2), supervised 70.0 (n=1); "
                        "study_hard: random init —, supervised —.")
    assert lines[-1] == ("References (not tested): study: random init 5.0 ± 1.4 (n=2), supervised 38.0 (n=1); "
                         "study_hard: random init 7.0 (n=1), supervised —.")
    assert len(lines) == 1 + len(_plan()["secondary_columns"])
    assert "Trained again" not in section  # and with a second training recorded, the section names it
    second = {"study": {"run_s0": {"same": False, "common": 9, "recorded": 9, "first_difference": 1}}}
    assert section.replace("\n", "") in prereg.registered_section(
        _plan(n=3), {"study": (study, {}), "study_hard": (hard, {})}, "p.yaml", second=second).replace("\n", "")
    assert "study `run_s0` (losses differ from iteration 1 on" in prereg.registered_section(
        _plan(n=3), {"study": (study, {})}, "p.yaml", second=second)


def test_a_run_recorded_as_missing_counts_as_in_and_the_test_runs_on_the_seeds_present(tmp_path):
    """docs/preregistration.md: a run that fails twice (or a fine-tuning that cannot be measured) is
    recorded as missing; the test runs on the seeds present and the report says so. Declared in the
    record's missing.yaml, per column; a declaration for another column does not complete this one."""
    import yaml

    plan = _plan(n=3)
    gt_row = ("moco_v2", "obj-obj-dilate-b256", "gt", "100")
    gt, base = [50.0, 52.0], [40.0, 41.0, 42.5]
    studies = {"study": (_values(gt, [40, 41, 42], base), {})}
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump([
        {"row": list(gt_row), "seed": 2, "columns": [P], "why": "diverged twice"},
        {"row": list(gt_row), "seed": 1, "columns": ["VOC AP50 (voc:test)"], "why": "checkpoint lost"}]))
    missing = {"study": prereg.load_missing(str(tmp_path))}
    h1 = next(line for line in prereg.registered_table(plan, studies, P, True, missing).splitlines()
              if line.startswith("| H1 "))
    assert f"| {prereg.fmt_p(stats.welch(gt, base).p)} |" in h1 and "| 2 (3) |" in h1
    assert h1.endswith("not shown; missing: arm seed 2 (diverged twice) |")
    without = prereg.registered_table(plan, studies, P, True)
    assert "2 and 3 of 3 seeds: not read" in without
    assert prereg.interim_rows(plan, "study", studies["study"][0], missing["study"]) == set()
    assert prereg.interim_rows(plan, "study", studies["study"][0]) == {gt_row}
    # another column's declaration leaves this one incomplete; one too many is refused
    knn = dict(studies["study"][0])
    knn[gt_row] = {P: gt, K: [30.0, 31.0]}
    knn[("moco_v2", "random-b256", "none", "100")] = {P: base, K: [29.0, 30.0, 31.0]}
    table = prereg.registered_table(plan, {"study": (knn, {})}, K, False, missing)
    assert "2 and 3 of 3 seeds: not read" in next(line for line in table.splitlines() if line.startswith("| H1 "))
    over = {"study": (_values([50.0, 51.0, 52.0], [40], base), {})}
    line = next(x for x in prereg.registered_table(plan, over, P, True, missing).splitlines() if x.startswith("| H1 "))
    assert "declared missing: more than 3" in line and "| — |" in line
    # a malformed entry names the file and the entry
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump([{"row": list(gt_row), "seed": "two", "columns": [P], "why": "x"}]))
    with pytest.raises(ObjcropError, match=r"missing.yaml: entry 0 needs row"):
        prereg.load_missing(str(tmp_path))


def test_registered_rows_leave_the_exploratory_table():
    values = _values([50, 51, 52], [40, 41, 43], [40, 41, 42])
    registered = prereg.registered_rows(_plan(), "study")
    assert "| bing-top10 |" not in study_tables.reading_table(values, P, registered)
    full = study_tables.reading_table(values, P)
    assert "| gt | 100 | random-b256 | +10.0 [" in full and "(exact, 20)" in full


def test_bad_registration_raises_naming_the_file(tmp_path):
    bad = tmp_path / "pre.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "hypotheses": []}))
    with pytest.raises(ObjcropError, match="pre.yaml.*lacks"):
        prereg.load(str(bad))
    assert prereg.load(str(tmp_path / "none.yaml")) is None


def _power():
    return load_repo_module("scripts/power.py")


def test_retrospective_family_on_the_records_matches_power_py():
    """The page's learning-budget rule (runs.csv) and scripts/power.py's (record.json) pick the same
    comparisons, and the page corrects over exactly them."""
    studies = {s: study_tables.study_values(os.path.join(REPO, "docs", "results", s))
               for s in ("study", "study_hard", "study_plain", "study_gpu", "study_plain_gpu")}
    registration = prereg.load(os.path.join(REPO, prereg.PREREG))
    page = {(s, r["policy"], r["proposals"], r["epochs"]) for s, (values, arches) in studies.items()
            for r in study_tables.reading_rows(values, P) if r["p"] is not None
            and prereg.at_learning_budget(values, arches, r, 0.05)
            and (r["method"], r["policy"], r["proposals"], r["epochs"]) not in prereg.registered_rows(registration, s)
            and not prereg.after_registration(registration, s, r["policy"])}
    power = _power()
    scores = {}
    for s in studies:
        scores.update(power.probe_scores(os.path.join(REPO, "docs", "results", s)))
    script = {(a[0], a[2], a[3], str(a[4])) for a, _ in power.learning_comparisons(scores, 0.05, registration)}
    assert page == script and page  # the records hold comparisons at learning budgets
    # with the registration, as the page calls it: its rows stay out of the family (without it, a
    # registered arm with two seeds would get a Welch p here before it holds all of them)
    text = prereg.retrospective_section(studies, registration, 0.05)
    family = [line for line in text.splitlines() if line.startswith("| study")][1:]
    assert len(family) == 2 * len(page)  # probe and kNN
    tests = prereg._reading_tests(studies, registration)
    assert f"all {len(tests)} exploratory reading tests" in text


def test_runs_after_the_registration_stay_out_of_the_retrospective_family():
    """The budget curve's and the exploratory arms' comparisons (the amended recipe at another budget, or
    a tag that ends in it) were run after the registration: the page's "before the registration" family
    leaves them out, and power.py's plan too; an earlier comparison at a learning budget stays in."""
    plan = _plan(tag="b256-200e-bf16", epochs=200)
    after = prereg.after_registration
    assert after(plan, "study", "obj-obj-dilate-b256-100e-bf16")
    assert after(plan, "study", "obj-scene-explore-b256-200e-bf16")
    assert after(plan, "study", "obj-obj-dilate+copy-paste-dilo-explore-b256-200e-bf16")
    assert not after(plan, "study", "obj-obj-dilate-b256-100e")  # another recipe (the control's pair)
    assert not after(plan, "study", "obj-obj-dilate-r50-b256-100e-bf16-headbn")  # the tag does not end in it
    assert not after(plan, "study_plain", "obj-obj-dilate-b256-100e-bf16")  # no amendment for that study
    assert not after(None, "study", "obj-obj-dilate-b256-100e-bf16")
    ref = [34.0, 35.0, 36.0]
    up = lambda d: [x + d for x in ref]  # noqa: E731
    values = {study_tables.RANDOM_INIT: {P: ref, K: ref},
              ("moco_v2", "random-b256-100e", "none", "100"): {P: up(6), K: up(6)},
              ("moco_v2", "obj-obj-dilate-b256-100e", "gt", "100"): {P: up(9), K: up(9)},            # before: in
              ("moco_v2", "random-b256-100e-bf16", "none", "100"): {P: up(6), K: up(6)},
              ("moco_v2", "obj-obj-dilate-b256-100e-bf16", "gt", "100"): {P: up(9), K: up(9)},       # the curve
              ("moco_v2", "random-b256-200e-bf16", "none", "200"): {P: up(8), K: up(8)},
              ("moco_v2", "obj-scene-explore-b256-200e-bf16", "gt", "200"): {P: up(12), K: up(12)}}  # an arm
    arches = {k: "resnet18" for k in values}
    text = prereg.retrospective_section({"study": (values, arches)}, plan, 0.05)
    family = [line for line in text.splitlines() if line.startswith("| study")][1:]
    assert len(family) == 2 and all("obj-obj-dilate-b256-100e gt" in line for line in family), family
    power = _power()
    scores = {("study", m, p, s, int(e or 0), "resnet18"): v[P] for (m, p, s, e), v in values.items()}
    pairs = power.learning_comparisons(scores, 0.05, plan)
    assert [a[2] for a, _ in pairs] == ["obj-obj-dilate-b256-100e"]


def test_power_is_exact_against_the_normal_approximation():
    power = _power()
    # large n: Welch's t is nearly normal, power ≈ Φ(δ/se − z_{1−α/2})
    from scipy.stats import norm

    se = (2 * 2.0 ** 2 / 200) ** 0.5
    assert power.welch_power(1.0, 2.0, 2.0, 200, 0.05) == pytest.approx(norm.cdf(1.0 / se - norm.ppf(0.975)), abs=2e-3)
    n = power.seeds_needed(4.4, 2.88, 2.88, 0.0125, 0.8)
    assert power.welch_power(4.4, 2.88, 2.88, n, 0.0125) >= 0.8 > power.welch_power(4.4, 2.88, 2.88, n - 1, 0.0125)


def test_the_unit_is_the_pretraining_run(tmp_path):
    """Two fine-tuning seeds of one checkpoint are one replicate (their mean), not two."""
    import csv

    (tmp_path / "report").mkdir()
    header = ["run_dir", "stage", "status", "method", "policy", "proposals", "epochs", "arch", "pretrain_data",
              "pretrain_seed", "seed", "column", "value", "flag"]
    rows = [[f"R/runs/detect_voc/moco_v2_random_s{ps}/seed{s}", "detection", "ok", "moco_v2", "random", "none", "3", "resnet18", "synth:train", ps, s,
             "VOC AP50 (voc:test)", v, ""] for ps, s, v in [(0, 0, 4.0), (0, 1, 6.0), (1, 0, 7.0), (1, 1, 9.0)]]
    rows.append(["R/runs/probe/moco_v2_random_s0", "probe", "ok", "moco_v2", "random", "none", "3", "resnet18", "synth:train", 0, 0, P, 40.0, ""])
    with open(tmp_path / "report" / "runs.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    values, arches = study_tables.study_values(str(tmp_path))
    key = ("moco_v2", "random", "none", "3")
    assert values[key]["VOC AP50 (voc:test)"] == [5.0, 8.0] and values[key][P] == [40.0]
    assert arches[key] == "resnet18"


def test_the_unit_of_a_row_is_its_pretraining_run_not_its_seed():
    """Two trainings of the supervised bound probed with the same seed are two values; one checkpoint
    fine-tuned with two seeds is one (their mean); a from-scratch fine-tuning, with no pretraining, is
    one value per fine-tuning."""
    head = "run_dir,stage,status,method,policy,proposals,epochs,arch,pretrain_data,pretrain_seed,seed,column,value,flag,protocol"
    lines = [head,
             "R/runs/probe/supervised_s0,probe,ok,supervised,none,none,,resnet18,backbone.pth,0,0,probe mAP,64.0,,c",
             "R/runs/probe/supervised_seed0_s0,probe,ok,supervised,none,none,,resnet18,backbone.pth,0,0,probe mAP,60.0,,c",
             "R/runs/detect_voc/supervised/seed0,detection,ok,supervised,none,none,,resnet18,backbone.pth,0,0,AP50,50.0,,",
             "R/runs/detect_voc/supervised/seed1,detection,ok,supervised,none,none,,resnet18,backbone.pth,0,1,AP50,40.0,,",
             "R/runs/detect_voc/scratch/seed0,detection,ok,random_init,none,none,,resnet18,none,,0,AP50,10.0,,",
             "R/runs/detect_voc/scratch/seed1,detection,ok,random_init,none,none,,resnet18,none,,1,AP50,14.0,,"]
    values, _ = study_tables.runs_csv_values(lines)
    assert sorted(values[("supervised", "none", "none", "")]["probe mAP"]) == [60.0, 64.0]
    assert values[("supervised", "none", "none", "")]["AP50"] == [45.0]
    assert sorted(values[("random_init", "none", "none", "")]["AP50"]) == [10.0, 14.0]


def test_power_leaves_out_the_records_of_retrained_backbones(tmp_path, monkeypatch):
    """Guards against the pooled std counting a retrained record's pretraining seeds a second time beside
    the record they repeat (docs/results/study_plain_detect repeats study_plain's b256-100e runs)."""
    power = _power()
    for name in ("study_plain", "study_plain_detect"):
        (tmp_path / "docs" / "results" / name).mkdir(parents=True)
        (tmp_path / "docs" / "results" / name / "record.json").write_text("{}")
    monkeypatch.setattr(power, "REPO", str(tmp_path))
    assert [os.path.basename(d) for d in power.default_records()] == ["study_plain"]


def test_the_budget_sweep_names_the_smallest_budget_that_meets_the_amendment_rule():
    """Guards the amendment's input (issue 20 §2): a budget is taken only with >= 3 seeds, a Δ over random
    init of at least the smallest effect and Welch p < alpha, random crops of MoCo-v2 on the reference's
    architecture only, the smallest epochs first. Each decoy below would be chosen if its rule were dropped."""
    plan = _plan()
    ref = [34.0, 35.0, 36.0]
    up = lambda d: [x + d for x in ref]  # noqa: E731
    values = {study_tables.RANDOM_INIT: {P: ref},
              ("moco_v2", "random", "none", "3"): {P: up(0.5)},
              ("moco_v2", "random-twoseeds", "none", "10"): {P: up(10)[:2]},     # too few seeds
              ("moco_v2", "random-small", "none", "20"): {P: up(3)},             # p < 0.05, Δ below 4.4
              ("moco_v2", "random-r50", "none", "30"): {P: up(10)},              # another architecture
              ("byol", "random", "none", "40"): {P: up(10)},                     # another method
              ("moco_v2", "obj-obj-dilate", "gt", "50"): {P: up(10)},            # not random crops
              ("moco_v2", "random-b256-100e", "none", "100"): {P: up(6)},        # the one
              ("moco_v2", "random-b256-200e", "none", "200"): {P: up(9)}}
    arches = {k: "resnet18" for k in values}
    arches[("moco_v2", "random-r50", "none", "30")] = "resnet50"
    rows = prereg.sweep_rows(values, arches, plan["smallest_effect"], plan["alpha"])
    assert [r["epochs"] for r in rows] == ["3", "10", "20", "100", "200"]
    assert [r["policy"] for r in rows if r["meets"]] == ["random-b256-100e", "random-b256-200e"]
    page = prereg.sweep_section({"study": (values, arches), "study_hard": ({}, {})}, plan)
    assert "* `study`: `random-b256-100e` at 100 epochs" in page
    assert "* `study_hard`: no budget run so far meets it" in page
    assert "| study | random-b256-100e | 100 | 41.0 ± 1.0 (n=3) | +6.0 [" in page


def test_the_ranked_store_may_differ_between_variants():
    """scripts/proposal_choice.py's rule, applied to each variant's training split, chose
    selective-search on one and saliency-gs on the other: each hypothesis reads its own variant's."""
    plan = _plan(ranked={"study": "selective-search-top10", "study_hard": "saliency-gs-top10"})
    rows = {h["id"]: prereg.hypothesis_row(plan, h)[0] for h in plan["hypotheses"]}
    assert rows["H2"] == ("moco_v2", "obj-obj-dilate-b256", "selective-search-top10", "100")
    assert rows["H4"] == ("moco_v2", "obj-obj-dilate-b256", "saliency-gs-top10", "100")
    assert rows["H1"][2] == rows["H3"][2] == "gt"
    # a variant the mapping leaves out stays pending
    plan["amendment"]["ranked_proposals"] = {"study": "selective-search-top10"}
    assert prereg.hypothesis_row(plan, plan["hypotheses"][3]) == (None, None)


def test_a_registered_arm_is_interim_while_either_arm_lacks_a_seed_in_any_registered_column():
    plan = _plan(n=3)
    gt, ranked = ("moco_v2", "obj-obj-dilate-b256", "gt", "100"), ("moco_v2", "obj-obj-dilate-b256", "bing-top10", "100")
    assert prereg.interim_rows(plan, "study", _values([50, 51], [], [40, 41, 42])) == {gt}  # the arm lacks one
    assert prereg.interim_rows(plan, "study", _values([50, 51, 52], [], [40, 41])) == {gt}  # its baseline does
    assert prereg.interim_rows(plan, "study", _values([50, 51, 52], [40], [40, 41, 42])) == {ranked}
    assert prereg.interim_rows(plan, "study", _values([50, 51, 52], [], [40, 41, 42])) == set()  # complete
    values = _values([50, 51, 52], [], [40, 41, 42])
    values[gt]["VOC AP50 (voc:test)"] = [30.0]  # a secondary score of one seed: not shown either
    assert prereg.interim_rows(plan, "study", values) == {gt}
    assert prereg.interim_rows(plan, "study_plain", values) == set() and prereg.interim_rows(None, "study", values) == set()


def _probe_run(root, policy, proposals, seed, mAP, tag="b256"):
    from objcrop.records import Provenance, results, write_results

    prov = Provenance("moco_v2", policy, proposals, 100, "resnet18", "synth:/d:train", seed, tag=tag)
    name = f"moco_v2_{policy}-{tag}_{proposals}_s{seed}"
    write_results(os.path.join(root, "runs", "pretrain", name),
                  results("pretrain", "ok", prov, iterations=4, final_loss=2.0, code="test"))
    write_results(os.path.join(root, "runs", "probe", name),
                  results("probe", "ok", prov, dataset="synth:/d:test", mAP=mAP, code="test"))


def test_report_withholds_a_registered_arms_scores_until_both_arms_hold_every_seed(tmp_path):
    """`objcrop report --registration`: a registered arm's probe score is in no table or plot before its
    comparison is complete (runs.csv keeps it); then it is shown like any other."""
    from objcrop.report.cli import main as report_main

    registration = tmp_path / "prereg.yaml"
    registration.write_text(yaml.safe_dump(_plan(n=2)))
    runs = str(tmp_path / "runs")
    for seed, mAP in ((0, 0.401), (1, 0.412)):
        _probe_run(runs, "random", "none", seed, mAP)
    _probe_run(runs, "obj-obj-dilate", "gt", 0, 0.573)
    argv = [runs, "--out", str(tmp_path / "rep"), "--registration", str(registration), "--study", "study",
            "--no-plots"]
    assert report_main(argv) == 0
    read = lambda name: (tmp_path / "rep" / name).read_text()  # noqa: E731
    for name in ("results.md", "results.csv", "results.tex"):
        assert "57.3" not in read(name) and "0.573" not in read(name), name
    assert "40.6" in read("results.md")  # the baseline's mean is shown
    assert "withheld" in read("results.md") and ",57.3," in read("runs.csv")
    _probe_run(runs, "obj-obj-dilate", "gt", 1, 0.583)
    assert report_main(argv) == 0
    assert "57.8" in read("results.md") and "withheld" not in read("results.md")
    with pytest.raises(ObjcropError, match="go together"):
        report_main([runs, "--out", str(tmp_path / "rep"), "--registration", str(registration)])


def test_page_tables_withhold_the_scores_of_an_interim_registered_arm(tmp_path):
    from objcrop.report.record import StudyRecord
    from objcrop.report.study_runs import pretext_table
    from objcrop.io import append_jsonl

    values = {row: cols for row, cols in _values([57.3], [], [40.1, 41.2]).items() if cols[P]}
    values[study_tables.RANDOM_INIT] = {P: [30.0, 31.0]}
    withheld = prereg.interim_rows(_plan(n=2), "study", values)
    gate = study_tables.gate_table(values, P, withheld=withheld)
    gt_line = next(line for line in gate.splitlines() if "| moco_v2 obj-obj-dilate-b256 gt |" in line)
    assert "57.3" not in gt_line and f"{study_tables.WITHHELD} (n=1)" in gt_line
    assert "57.3" in study_tables.gate_table(values, P)

    root = str(tmp_path / "out")
    _probe_run(root, "obj-obj-dilate", "gt", 0, 0.573)
    name = "moco_v2_obj-obj-dilate-b256_gt_s0"
    for i in range(4):
        append_jsonl(os.path.join(root, "runs", "pretrain", name, "metrics.jsonl"), {"iteration": i, "loss": 5.0 - i})
    record = StudyRecord.open(root)
    assert "57.3" in pretext_table(record)
    line = next(x for x in pretext_table(record, withheld).splitlines() if x.startswith(f"| {name} "))
    assert "57.3" not in line and study_tables.WITHHELD in line


def _lines_by_variant(page: str):
    """(variant, line) for each line of the study page: the variant of its `## ... (`name`)` section, or
    of its registered table row (`| H1 | study | ...`); None for a line of no one variant."""
    out, section = [], None
    for line in page.splitlines():
        if line.startswith("## "):
            named = re.search(r"\(`([\w-]+)`", line)
            section = named.group(1).replace("-", "_") if named else None
        row = re.match(r"\| H\d+ \| (\w+) \|", line)
        out.append((row.group(1) if row else section, line))
    return out


def test_the_study_page_is_split_by_the_variant_each_line_belongs_to():
    page = ("## The answer\nwords\n| H1 | study | a |\n| H3 | study_hard | a |\n## Default variant (`study`)\n"
            "x\n## Hard variant (`study-hard`)\ny\n## GPU scale (`study_gpu`): ResNet-50\nz\n")
    assert [v for v, _ in _lines_by_variant(page)] == [None, None, "study", "study_hard", "study", "study",
                                                      "study_hard", "study_hard", "study_gpu", "study_gpu"]


def test_the_repositorys_page_shows_no_score_of_a_registered_arm_before_its_comparison_is_complete(tmp_path):
    """Every line of the page built from the repository's records that names a registered arm whose
    comparison is not complete carries none of its recorded scores (per seed or mean): the registered
    table is where they will be read, once."""
    from objcrop.report.cli import main as report_main

    out = tmp_path / "results.md"
    argv = ["study", "--out", str(out), "--wall-time", str(tmp_path / "none.txt")]
    for option, study in (("--study", "study"), ("--hard", "study_hard"), ("--plain", "study_plain")):
        argv += [option, os.path.join(REPO, "docs", "results", study)]
    assert report_main(argv) == 0
    page = out.read_text()
    lines_by_variant = _lines_by_variant(page)
    plan = prereg.load(PREREG)
    n, checked = int(plan["seeds_per_arm"]), 0
    columns = [plan["primary_column"], *plan["secondary_columns"]]
    for h in plan["hypotheses"]:
        study_dir = os.path.join(REPO, "docs", "results", h["study"])
        values, _ = study_tables.study_values(study_dir)
        missing = prereg.load_missing(study_dir)
        row, against = prereg.hypothesis_row(plan, h)
        base_row = (row[0], against, "none", row[3])

        def holds_all(r, column):
            # a run missing.yaml records as missing counts as in, as the registered table counts it
            return len(values.get(r, {}).get(column, [])) + len(prereg.missing_seeds(missing, r, column)) >= n

        # complete = every registered column (primary and secondary) holds all seeds in both arms; until
        # then the arm's scores are withheld everywhere but the registered table's rows that are complete
        if not values.get(row, {}).get(P) or all(holds_all(r, c) for c in columns for r in (row, base_row)):
            continue
        scores = [s for column in columns for s in values[row].get(column, [])]
        shown = {f"{s:.1f}" for s in scores} | {f"{sum(values[row][c]) / len(values[row][c]):.1f}"
                                                 for c in columns if values[row].get(c)}
        # study and study_hard name their arms alike: a line of the other variant's section (or of its
        # registered table row) carries that variant's scores, shown once its own comparison is complete
        lines = [line for variant, line in lines_by_variant if variant in (None, h["study"])
                 and (f"{row[1]} {row[2]}" in line or f"{row[1]}_{row[2]}" in line or f"| {row[1]} | {row[2]} |" in line)]
        assert lines, row
        for line in lines:
            assert not any(f" {s} " in line or f" {s}" + " (" in line for s in shown), (row, line)
        checked += 1
    # the repository holds interim registered arms until the last registered seed of every registered
    # column is recorded
    assert checked or "not read before all are in" not in page


def test_device_rule_flags_a_seed_whose_arms_trained_on_different_devices_and_early_seeds_off_the_cpu():
    from objcrop.report.study_runs import device_kind

    assert device_kind({"device": "cpu: AMD EPYC, 1 thread(s)"}) == device_kind({}) == "cpu"  # before the field
    assert device_kind({"device": "cuda: NVIDIA H200"}) == "cuda: NVIDIA H200"
    plan = _plan(n=12)
    gt, base = ("moco_v2", "obj-obj-dilate-b256", "gt", "100"), ("moco_v2", "random-b256", "none", "100")
    runs = {(arm, s): "cpu" for arm in (gt, base) for s in range(3)}
    runs[(gt, 3)] = runs[(base, 3)] = "cuda: NVIDIA H200"
    assert prereg.device_deviations(plan, {"study": runs}) == (8, [])
    assert prereg.device_line(plan, {"study": runs}).endswith("8 registered runs, no deviation.")
    runs[(base, 4)], runs[(gt, 4)], runs[(gt, 1)] = "cpu", "cuda: NVIDIA H200", "cuda: NVIDIA H200"
    n, deviations = prereg.device_deviations(plan, {"study": runs})
    assert n == 10 and deviations == [
        "H1 seed 1: the arms trained on different devices (obj-obj-dilate-b256 gt on cuda: NVIDIA H200, "
        "random-b256 none on cpu)",
        "H1 seed 4: the arms trained on different devices (obj-obj-dilate-b256 gt on cuda: NVIDIA H200, "
        "random-b256 none on cpu)"]
    runs[(base, 1)] = "cuda: NVIDIA H200"
    assert prereg.device_deviations(plan, {"study": runs})[1][0] == (
        "H1 seed 1: not on the CPU (obj-obj-dilate-b256 gt on cuda: NVIDIA H200, random-b256 none on cuda: NVIDIA H200)")
