"""Every report row says which probe protocol produced its numbers (issue 18 §4): the cached-feature probe and
the paper's main_lincls never share a cell, main_lincls's released per-batch mAP sits beside its mAP, and the
Markdown, CSV, LaTeX and long runs.csv all name the protocol."""
import csv
import io
import json
import os

import pytest

from objcrop.report.aggregate import DEFAULT_PROBE_PROTOCOL, build_table
from objcrop.report.cli import runs_csv, write_report
from objcrop.report.collect import collect
from objcrop.report.tables import to_csv, to_latex, to_markdown


def _pre(policy, seed):
    return {"method": "moco_v2", "policy": policy, "proposals": "none" if policy == "random" else "gt",
            "epochs": 200, "arch": "resnet50", "dataset": "coco_2017_train", "seed": seed}


def _probe(policy, seed, m_ap, protocol=None, batch_mean=None):
    result = {"stage": "probe", "status": "ok", "pretrain": _pre(policy, seed), "seed": 0,
              "dataset": "voc_2007_test", "mAP": m_ap}
    if protocol:
        result["protocol"] = protocol
    if batch_mean is not None:
        result["mAP_batch_mean"] = batch_mean
    return result


# one row probed both ways, one only by main_lincls, one only by the (unnamed, older) cached-feature probe
RESULTS = [(_probe("random", 0, 0.40), "a"), (_probe("random", 0, 0.60, "main_lincls", 0.62), "b"),
           (_probe("obj-obj-dilate", 0, 0.70, "main_lincls", 0.71), "c"),
           (_probe("obj-scene", 0, 0.45, "cached_features"), "d")]


def _rows(table):
    return {r.policy: r for r in table.rows}


def test_protocols_never_share_a_cell_and_each_row_names_its_own():
    table = build_table(RESULTS)
    rows = _rows(table)
    by_header = {c.header(): c for c in table.columns}
    assert sorted(by_header) == ["probe mAP", "probe mAP [main_lincls]", "probe mAP batch mean [main_lincls]"]
    cached, lincls = by_header["probe mAP"], by_header["probe mAP [main_lincls]"]
    assert table.cell(rows["random"], cached).values == [pytest.approx(40.0)]  # not averaged with 60
    assert table.cell(rows["random"], lincls).values == [pytest.approx(60.0)]
    assert table.cell(rows["obj-obj-dilate"], by_header["probe mAP batch mean [main_lincls]"]).values == [pytest.approx(71.0)]
    # a result naming the default protocol lands where one naming none does (records before the field)
    assert table.cell(rows["obj-scene"], cached).values == [pytest.approx(45.0)]
    assert {p: table.probe_protocols(r) for p, r in rows.items()} == {
        "random": "cached_features, main_lincls", "obj-obj-dilate": "main_lincls", "obj-scene": DEFAULT_PROBE_PROTOCOL}
    # Δ is read within a protocol: obj-obj-dilate's main_lincls cell against random's main_lincls cell
    assert table.cell(rows["obj-obj-dilate"], lincls).delta == pytest.approx(10.0)


def test_markdown_csv_and_latex_show_the_protocol_of_every_row():
    table = build_table(RESULTS)
    md = to_markdown(table)
    assert "| method | view policy | proposals | epochs | probe protocol |" in md
    assert "| moco_v2 | obj-obj-dilate | gt | 200 | main_lincls |" in md
    assert "| moco_v2 | obj-scene | gt | 200 | cached_features |" in md
    assert "| moco_v2 | random | none | 200 | cached_features, main_lincls |" in md
    assert "`main_lincls` the paper's" in md
    rows = {r["policy"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert rows["obj-obj-dilate"]["probe_protocol"] == "main_lincls"
    assert float(rows["obj-obj-dilate"]["probe mAP batch mean [main_lincls] mean"]) == pytest.approx(71.0)
    tex = to_latex(table)
    assert "probe protocol" in tex and r"main\_lincls" in tex


def test_a_table_without_probe_columns_has_no_protocol_column():
    det = {"stage": "detection", "status": "ok", "pretrain": _pre("random", 0), "task": "voc_det",
           "dataset": "voc_2007_test", "box": {"AP50": 50.0, "AP": 30.0, "AP75": 30.0}}
    md = to_markdown(build_table([(det, "x")]))
    assert "probe protocol" not in md and "| moco_v2 | random | none | 200 | 50.0" in md


def test_runs_csv_names_each_probe_lines_protocol(tmp_path):
    for result, name in RESULTS:
        os.makedirs(tmp_path / name)
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    lines = list(csv.DictReader(io.StringIO(runs_csv(collect([str(tmp_path)])))))
    by_dir = {(os.path.basename(r["run_dir"]), r["column"]): r["protocol"] for r in lines}
    assert by_dir[("a", "probe mAP (voc_2007_test)")] == "cached_features"
    assert by_dir[("b", "probe mAP [main_lincls] (voc_2007_test)")] == "main_lincls"
    assert by_dir[("b", "probe mAP batch mean [main_lincls] (voc_2007_test)")] == "main_lincls"
    out = write_report([str(tmp_path)], str(tmp_path / "rep"), plots=False)
    assert out["table"].probe_protocols(_rows(out["table"])["obj-scene"]) == "cached_features"


def _copy_paste_probe(policy, tag=""):
    pre = {**_pre(policy, 0), "proposals": "gt", **({"tag": tag} if tag else {})}
    return {"stage": "probe", "status": "ok", "pretrain": pre, "seed": 0, "dataset": "voc_2007_test", "mAP": 0.5}


def test_shared_copy_paste_rows_are_labelled_as_the_shared_variant_beside_dilos():
    """A run of VIEWS.COPY_PASTE.MODE shared names its policy `+copy-paste` (every run before issue 18): its row
    reads `+copy-paste-shared`, apart from DiLo's `+copy-paste-dilo`; the run's own name is unchanged."""
    from objcrop.records import Provenance, run_name

    table = build_table([(_copy_paste_probe("obj-obj-dilate+copy-paste"), "s"),
                         (_copy_paste_probe("obj-obj-dilate+copy-paste", tag="4x"), "t"),
                         (_copy_paste_probe("obj-obj-dilate+copy-paste-dilo"), "d")])
    assert sorted(r.policy for r in table.rows) == [
        "obj-obj-dilate+copy-paste-dilo", "obj-obj-dilate+copy-paste-shared", "obj-obj-dilate+copy-paste-shared-4x"]
    assert run_name(Provenance.from_dict(_copy_paste_probe("obj-obj-dilate+copy-paste")["pretrain"])).startswith(
        "moco_v2_obj-obj-dilate+copy-paste_gt_")


def test_the_studys_recorded_copy_paste_rows_read_as_the_shared_variant():
    """The study's copy-paste runs (docs/results/study, MODE shared) land in a `+copy-paste-shared` row."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    record = os.path.join(repo, "docs", "results", "study")
    if not os.path.isfile(os.path.join(record, "record.json")):
        pytest.skip("no study record in this checkout")
    lines = list(csv.DictReader(io.StringIO(runs_csv(collect([os.path.join(record, "runs")])))))
    copy_paste = {r["policy"] for r in lines if "copy-paste" in r["policy"]}
    assert copy_paste and all(p.startswith("obj-obj-dilate+copy-paste-") for p in copy_paste), copy_paste
    assert "obj-obj-dilate+copy-paste-shared" in copy_paste
