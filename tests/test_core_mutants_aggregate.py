"""report/aggregate.py: how results.json contents become cells, flags, row order, best marks and gaps, pinned
where mutation testing (benchmarks/mutation.md) found a changed line that no test noticed. Pure and fast:
dicts in, a Table out, no files and no plots."""
import math

import pytest

from objcrop.report.aggregate import (Column, Flag, Measurement, RowKey, _merge_reasons, _row_sort_key,
                                      build_table, find_baselines, gap_closed, measurements_of,
                                      pretrain_flag, probe_over_epochs)

MOCO = {"method": "moco_v2", "policy": "obj-obj", "proposals": "gt", "epochs": 8, "arch": "resnet18",
        "dataset": "synth:/d:train"}
ROW = RowKey("moco_v2", "obj-obj", "gt", 8, "resnet18", "synth:train")


def _probe(pretrain, value, **extra):
    return {"stage": "probe", "status": "ok", "pretrain": pretrain, "dataset": "synth:/d:test", "mAP": value, **extra}


def _det(pretrain, ap50, **extra):
    return {"stage": "detection", "status": "ok", "task": "voc_det", "pretrain": pretrain,
            "dataset": "voc:/d:test", "box": {"AP50": ap50, "AP": ap50 / 2, "AP75": ap50 / 4}, **extra}


def test_merge_reasons_joins_the_same_value_and_keeps_status_lines_apart():
    """Guards against the flag footnote merging a failure status or a pretraining line into the
    'is null' list, splitting on the first ' is ' of a label, or losing the order (other lines first)."""
    reasons = ["COCO box AP is null", "status failed: this is bad", "COCO box AP50 is null",
               "pretraining final loss is nan", "unreadable x is y", "probe mAP is inf", "what is this is nan"]
    assert _merge_reasons(reasons) == [
        "status failed: this is bad", "pretraining final loss is nan", "unreadable x is y",
        "COCO box AP, COCO box AP50 are null", "probe mAP is inf", "what is this is nan"]
    assert _merge_reasons([]) == []
    # the value is after the last " is ": a label holding " is " still merges with the others of its value
    assert _merge_reasons(["kNN is 0 is null", "probe mAP is null"]) == ["kNN is 0, probe mAP are null"]


def test_probe_measurement_is_scaled_to_percent_in_the_default_protocol_column():
    """Guards against a probe's fraction shown unscaled, its column keyed by the default protocol's name
    (a second column for the same numbers) or under another dataset label."""
    (m,) = measurements_of(_probe(MOCO, 0.25), "run")
    assert m == Measurement(ROW, Column("probe", "", "mAP", "synth:test", ""), 25.0, "run")
    (m,) = measurements_of(_probe(MOCO, 0.25, protocol="main_lincls"), "run")
    assert m.column.protocol == "main_lincls"
    assert measurements_of({"stage": "pretrain", "pretrain": MOCO}, "run") == []
    assert measurements_of({"stage": "other"}, "run") == []


def test_detection_measurements_of_a_known_and_an_unknown_task():
    """Guards against AP being rescaled (detectron2 writes percent), the metrics of an unknown task being
    dropped or unsorted, and a task-less record being given another name than unknown_det."""
    got = [(m.column.section, m.column.metric, m.value) for m in measurements_of(_det(MOCO, 40.0), "r")]
    assert got == [("box", "AP50", 40.0), ("box", "AP", 20.0), ("box", "AP75", 10.0)]
    odd = {"stage": "detection", "pretrain": MOCO, "box": {"b": 2.0, "a": 1.0}, "mask": {"c": 3.0}}
    assert [(m.column.task, m.column.section, m.column.metric, m.value) for m in measurements_of(odd, "r")] == [
        ("unknown_det", "box", "a", 1.0), ("unknown_det", "box", "b", 2.0), ("unknown_det", "mask", "c", 3.0)]


def test_a_failed_run_flags_its_main_columns_once_with_its_error():
    """Guards against a failed run's flag being lost, repeated in every column or missing its error text
    (the message when there is no error), and a missing metric being flagged as a failure."""
    failed = {**_det(MOCO, 1.0), "status": "failed", "error": "CUDA out of memory"}
    del failed["box"]
    ms = measurements_of(failed, "r")
    assert [(m.column.metric, m.value, m.flag) for m in ms] == [
        ("AP50", None, Flag("r", "status failed: CUDA out of memory")),
        ("AP", None, Flag("r", "status failed: CUDA out of memory")),
        ("AP75", None, Flag("r", "status failed: CUDA out of memory"))]
    probe = {**_probe(MOCO, 0.5), "status": "failed", "message": "diverged"}
    assert [m.flag.reason for m in measurements_of(probe, "r")] == ["status failed: diverged"] * 3  # mAP, kNN, batch
    bare = {**_probe(MOCO, 0.5), "status": "failed"}
    assert {m.flag.reason for m in measurements_of(bare, "r")} == {"status failed"}
    assert [m.column.metric for m in measurements_of(_probe(MOCO, 0.5), "r")] == ["mAP"]  # no knn_mAP: no cell


@pytest.mark.parametrize("value, shown", [(None, "null (no valid score, e.g. no detections)"),
                                          (float("nan"), "nan"), (float("inf"), "inf"), (True, "True")])
def test_a_non_finite_metric_is_flagged_with_its_column_and_value(value, shown):
    """Guards against a NaN, null or boolean entering a mean, or its flag not naming the column and value."""
    (m,) = measurements_of(_probe(MOCO, value), "r")
    assert m.value is None and m.flag == Flag("r", f"probe mAP is {shown}")


def test_pretrain_flag_names_a_failure_or_a_non_finite_loss():
    """Guards against a diverged or failed pretraining run not flagging its row, or a finite loss doing so."""
    assert pretrain_flag({"status": "failed", "error": "killed"}, "p") == Flag("p", "pretraining status failed: killed")
    nan_loss = pretrain_flag({"status": "ok", "final_loss": float("nan")}, "p")
    assert nan_loss == Flag("p", "pretraining final loss is nan")
    assert pretrain_flag({"status": "ok", "final_loss": 1.5}, "p") is None
    assert pretrain_flag({"status": "ok"}, "p") is None


def test_rows_sort_references_first_then_methods_epochs_and_random_crop_first():
    """Guards against the row order: random_init, supervised, then moco_v2 and byol, unknown methods last;
    within a method the row without epochs first, then by epochs, the random-crop row before other policies."""
    rows = [RowKey("zeta", "random", "none", 1), RowKey("byol", "random", "none", 4),
            RowKey("moco_v2", "obj-obj", "gt", 4), RowKey("moco_v2", "random", "none", 4),
            RowKey("moco_v2", "random", "none", 2), RowKey("moco_v2", "random", "none", None),
            RowKey("supervised", "—", "—", None), RowKey("random_init", "—", "—", None)]
    assert sorted(rows, key=_row_sort_key) == [
        RowKey("random_init", "—", "—", None), RowKey("supervised", "—", "—", None),
        RowKey("moco_v2", "random", "none", None), RowKey("moco_v2", "random", "none", 2),
        RowKey("moco_v2", "random", "none", 4), RowKey("moco_v2", "obj-obj", "gt", 4),
        RowKey("byol", "random", "none", 4), RowKey("zeta", "random", "none", 1)]


def test_the_baseline_is_the_random_crop_row_without_proposals_of_the_same_setting():
    """Guards against a method row read against a random-crop row with proposals (listed first here), another
    epoch count, or itself; a random-crop row has no baseline."""
    base = RowKey("moco_v2", "random", "none", 8)
    with_props = RowKey("moco_v2", "random", "gt", 8)
    obj = RowKey("moco_v2", "obj-obj", "gt", 8)
    other_epochs = RowKey("moco_v2", "obj-obj", "gt", 4)
    assert find_baselines([with_props, obj, base, other_epochs]) == {obj: base}


def test_gap_closed_needs_a_span_above_a_point_and_the_noise():
    assert gap_closed(15.0, 10.0, 20.0) == 50.0
    assert gap_closed(10.5, 10.0, 11.0) is None  # a span of exactly one point: no scale
    assert gap_closed(10.5, 10.0, 11.5) == pytest.approx(100 / 3)
    assert gap_closed(15.0, 10.0, 20.0, noise=10.0) is None and gap_closed(15.0, 10.0, 20.0, noise=9.0) == 50.0


def test_best_marks_every_tied_top_value_and_nothing_in_an_all_equal_or_lone_column():
    """Guards against a best mark on a lone value or on a column where everybody scores the same, and
    against only one of two tied best rows being marked."""
    def pre(method, policy, seed=0):
        return {**MOCO, "method": method, "policy": policy, "proposals": "none", "seed": seed}
    results = [(_probe(pre("moco_v2", "random"), 0.5), "a"), (_probe(pre("moco_v2", "obj-obj"), 0.5), "b"),
               (_probe(pre("byol", "random"), 0.2), "c"),
               (_det(pre("moco_v2", "random"), 10.0), "d"), (_det(pre("byol", "random"), 10.0), "e"),
               ({**_det(pre("byol", "random"), 10.0), "task": "coco_det"}, "f")]
    table = build_table(results)
    best = {(r.method, r.policy, c.task, c.metric) for (r, c), cell in table.cells.items() if cell.best}
    assert best == {("moco_v2", "random", "probe", "mAP"), ("moco_v2", "obj-obj", "probe", "mAP")}


def test_probe_over_epochs_keeps_settings_with_two_epoch_counts_sorted():
    """Guards against the epochs series of the probe plot: only settings pretrained for two or more epoch
    counts, points sorted by epochs with mean, std and n, detection columns left out."""
    results = [(_probe({**MOCO, "epochs": e}, v), f"r{e}{i}") for e, vals in ((16, (0.6, 0.8)), (4, (0.2,)))
               for i, v in enumerate(vals)]
    results += [(_probe({"method": "random_init", "arch": "resnet18"}, 0.1), "ri"),  # a row without epochs, first
                (_probe({**MOCO, "policy": "obj-scene", "epochs": 4}, 0.3), "s"),
                (_det({**MOCO, "epochs": 4}, 5.0), "d"), (_det({**MOCO, "epochs": 16}, 6.0), "e")]
    series = probe_over_epochs(build_table(results))
    assert list(series) == [("moco_v2", "obj-obj", "gt", "resnet18", "synth:train")]
    ((col, points),) = series[("moco_v2", "obj-obj", "gt", "resnet18", "synth:train")].items()
    assert col.task == "probe"
    (e4, m4, s4, n4), (e16, m16, s16, n16) = points
    assert (e4, m4, s4, n4) == (4, 20.0, None, 1)
    assert (e16, n16) == (16, 2) and m16 == pytest.approx(70.0) and s16 == pytest.approx(math.sqrt(200))


@pytest.mark.parametrize("column, with_dataset, header", [
    (Column("probe", "", "knn_mAP", "synth:test"), False, "probe kNN mAP"),
    (Column("probe", "", "mAP", "synth:test", "main_lincls"), False, "probe mAP [main_lincls]"),
    (Column("probe", "", "mAP", "synth:test"), True, "probe mAP (synth:test)"),
    (Column("coco_instseg", "box", "AP"), False, "COCO box AP"),
    (Column("odd_det", "box", "AP"), False, "odd_det AP"),
])
def test_column_headers(column, with_dataset, header):
    """Guards against a header with the metric's raw name, without its protocol or dataset when asked for,
    or failing on a task the report does not know."""
    assert column.header(with_dataset=with_dataset) == header


def test_a_failed_pretraining_run_is_listed_among_the_flags():
    """Guards against the row flags (a failed or diverged pretraining run) missing from the flag list."""
    table = build_table([({"stage": "pretrain", "status": "failed", "error": "killed", "pretrain": MOCO}, "p"),
                         (_probe(MOCO, 0.5), "q")])
    assert table.all_flags() == [Flag("p", "pretraining status failed: killed")]


def test_row_key_fills_what_a_block_leaves_out():
    """Guards against the row of a sparse "pretrain" block: a method row without policy or proposals is the
    random-crop row ('random', 'none'), a reference row shows '—'; a reference's 0 epochs is no epochs but a
    method row's 0 epochs stays 0; no arch is '' and no method is 'unknown'."""
    from objcrop.report.aggregate import row_key

    assert row_key({"method": "moco_v2", "epochs": 0}) == RowKey("moco_v2", "random", "none", 0, "", "")
    assert row_key({"method": "supervised", "epochs": 0, "arch": "resnet18"}) == RowKey(
        "supervised", "—", "—", None, "resnet18", "")
    assert row_key({"method": "supervised", "epochs": 1}).epochs == 1
    assert row_key(None) == RowKey("unknown", "random", "none", None, "", "")


def test_shared_copy_paste_is_named_as_such_and_keeps_the_policy_and_tag():
    """Guards against the shared copy-paste label replacing the policy instead of extending it."""
    from objcrop.records import Provenance
    from objcrop.report.aggregate import policy_shown

    shared = Provenance(policy="obj-obj-dilate+copy-paste", tag="t")
    assert policy_shown(shared) == "obj-obj-dilate+copy-paste-shared-t"
    assert policy_shown(Provenance(policy="obj-obj-dilate+copy-paste-dilo")) == "obj-obj-dilate+copy-paste-dilo"


def test_columns_sort_by_task_then_the_papers_metric_order_unknown_last():
    """Guards against the column order: tasks in TASK_ORDER, unknown tasks after them; within a task the
    metrics in the paper's order (VOC: AP50, AP, AP75, not alphabetical), unknown metrics after them."""
    cols = [Column("odd_det", "box", "AP"), Column("voc_det", "box", "zz"), Column("voc_det", "box", "AP75"),
            Column("voc_det", "box", "AP"), Column("voc_det", "box", "AP50"), Column("probe", "", "mAP")]
    assert [(c.task, c.metric) for c in sorted(cols, key=Column.sort_key)] == [
        ("probe", "mAP"), ("voc_det", "AP50"), ("voc_det", "AP"), ("voc_det", "AP75"), ("voc_det", "zz"),
        ("odd_det", "AP")]


def test_measurements_keep_their_run_dir_and_the_metrics_after_a_non_finite_one():
    """Guards against a flagged measurement losing its run directory (runs.csv lists it), the metrics after a
    NaN being dropped, and a detection column taking a probe protocol from its record."""
    record = {**_det(MOCO, 40.0), "protocol": "main_lincls"}
    record["box"]["AP50"] = float("nan")
    ms = measurements_of(record, "r")
    assert [(m.column.metric, m.value, m.run_dir, m.column.protocol) for m in ms] == [
        ("AP50", None, "r", ""), ("AP", 20.0, "r", ""), ("AP75", 10.0, "r", "")]
    failed = measurements_of({**_det(MOCO, 1.0), "status": "failed"}, "f")
    assert {m.run_dir for m in failed} == {"f"}


def test_a_row_without_epochs_sorts_before_one_with_zero_epochs():
    assert sorted([RowKey("moco_v2", "random", "none", 0), RowKey("moco_v2", "random", "none", None)],
                  key=_row_sort_key)[0].epochs is None


def _pre(method, policy="random", arch="resnet18"):
    return {**MOCO, "method": method, "policy": policy, "proposals": "none", "arch": arch}


def _best(results):
    return {(r.method, c.task, c.metric) for (r, c), cell in build_table(results).cells.items() if cell.best}


def test_best_marks_go_on_after_a_lone_or_an_all_equal_column_and_need_two_values():
    """Guards against marking stopping at the first column without a best (a lone value, or all equal), and
    against a column of two values being left unmarked."""
    lone_probe = [(_probe(_pre("moco_v2"), 0.5), "a"), (_det(_pre("moco_v2"), 10.0), "b"),
                  (_det(_pre("byol"), 20.0), "c")]
    assert ("byol", "voc_det", "AP50") in _best(lone_probe)
    equal_probe = [(_probe(_pre("moco_v2"), 0.5), "a"), (_probe(_pre("byol"), 0.5), "d")] + lone_probe[1:]
    assert ("byol", "voc_det", "AP50") in _best(equal_probe) and ("byol", "probe", "mAP") not in _best(equal_probe)


def test_best_ties_within_float_noise_only():
    """Guards against the tie tolerance: means a float rounding apart (1e-12) are tied, 1e-8 or half a point
    apart are not (a relative or a one-point tolerance would tie them)."""
    for worse, tied in ((20.0 - 1e-12, True), (20.0 - 1e-8, False), (19.5, False)):
        results = [(_det(_pre("moco_v2"), 20.0), "a"), (_det(_pre("byol"), worse), "b"),
                   (_det(_pre("zeta"), 5.0), "c")]
        assert (("byol", "voc_det", "AP50") in _best(results)) == tied, worse


def _gap_table(random_init_det, supervised_det=(40.0,)):
    ri, sup = {"method": "random_init", "arch": "resnet18"}, {"method": "supervised", "arch": "resnet18"}
    results = [(_probe(ri, 0.1), "ri"), (_probe(sup, 0.5), "s"), (_probe(_pre("moco_v2"), 0.3), "m"),
               (_probe(_pre("byol"), 0.3), "b"), (_det(_pre("moco_v2"), 25.0), "md")]
    results += [(_det(ri, v), f"rd{i}") for i, v in enumerate(random_init_det)]
    results += [(_det(sup, v), f"sd{i}") for i, v in enumerate(supervised_det)]
    table = build_table(results)
    return {(r.method, c.task, c.metric): cell.gap for (r, c), cell in table.cells.items()
            if c.metric in ("mAP", "AP50")}


def test_gaps_are_filled_per_column_only_where_all_three_cells_exist_and_the_span_beats_the_noise():
    """Guards against the gap filling: every method row gets one (not only up to the first reference row),
    a missing reference cell or method cell leaves no gap (rather than a crash), and the references' std is
    the noise their span must beat."""
    gaps = _gap_table(random_init_det=())
    assert gaps[("moco_v2", "probe", "mAP")] == pytest.approx(50.0)
    assert gaps[("byol", "probe", "mAP")] == pytest.approx(50.0)
    assert gaps[("moco_v2", "voc_det", "AP50")] is None  # no from-scratch cell: no scale
    assert ("byol", "voc_det", "AP50") not in gaps
    assert _gap_table(random_init_det=(10.0,))[("moco_v2", "voc_det", "AP50")] == pytest.approx(50.0)
    # scratch runs of mean 10 against supervised 40: a span of 30 beats their std 14.1 (0, 20), not 42.4 (-20, 40)
    assert _gap_table(random_init_det=(0.0, 20.0))[("moco_v2", "voc_det", "AP50")] == pytest.approx(50.0)
    assert _gap_table(random_init_det=(-20.0, 40.0))[("moco_v2", "voc_det", "AP50")] is None


def test_table_knows_whether_it_has_a_probe_and_which_protocols_each_row_used():
    """Guards against has_probe and the protocol list of a row: probe columns only, a flagged cell counts,
    several protocols joined with ', '."""
    failed = {**_probe(_pre("byol"), 0.5, protocol="main_lincls"), "status": "failed"}
    table = build_table([(_probe(_pre("moco_v2"), 0.5), "a"), (failed, "c"), (_det(_pre("zeta"), 5.0), "d"),
                         (_probe(_pre("moco_v2"), 0.4, protocol="main_lincls"), "b")])
    rows = {r.method: r for r in table.rows}
    assert table.probe_protocols(rows["moco_v2"]) == "cached_features, main_lincls"
    assert table.probe_protocols(rows["byol"]) == "main_lincls" and table.probe_protocols(rows["zeta"]) == ""
    assert table.has_probe() and not build_table([(_det(_pre("zeta"), 5.0), "d")]).has_probe()


def test_one_runs_reasons_are_joined_with_semicolons():
    record = _det(MOCO, 40.0)
    record["box"].update({"AP50": float("nan"), "AP": float("inf")})
    assert build_table([(record, "d")]).all_flags() == [Flag("d", "VOC AP50 is nan; VOC AP is inf")]


def test_a_row_without_references_of_its_arch_does_not_stop_the_gaps_of_the_next_rows():
    """Guards against gap filling giving up at the first row that has no references (a ResNet-101 row
    sorted before the ResNet-18 rows that have them)."""
    ri, sup = {"method": "random_init", "arch": "resnet18"}, {"method": "supervised", "arch": "resnet18"}
    table = build_table([(_probe(ri, 0.1), "ri"), (_probe(sup, 0.5), "s"), (_probe(_pre("moco_v2"), 0.3), "m"),
                         (_probe(_pre("moco_v2", arch="resnet101"), 0.3), "x")])
    gaps = {r.arch: cell.gap for (r, c), cell in table.cells.items() if r.method == "moco_v2"}
    assert gaps == {"resnet101": None, "resnet18": pytest.approx(50.0)}


@pytest.mark.parametrize("second, best", [(20.0 - 1e-12, set()), (20.0 - 1e-8, {"moco_v2"}), (19.5, {"moco_v2"})])
def test_two_values_are_all_equal_only_within_float_noise(second, best):
    """Guards against the all-equal test's tolerance: 1e-12 apart is equal (no best), 1e-8 or half a point
    apart is not (the higher one is best)."""
    table = build_table([(_det(_pre("moco_v2"), 20.0), "a"), (_det(_pre("byol"), second), "b")])
    assert {r.method for (r, c), cell in table.cells.items() if cell.best and c.metric == "AP50"} == best


def test_an_empty_method_reads_as_unknown():
    from objcrop.report.aggregate import row_key

    assert row_key({"method": ""}).method == "unknown"
