"""objcrop report from a fixture of results.json files written here (numbers checked by hand-derivable stats)."""
import csv
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from objcrop.report.aggregate import Column, RowKey, build_table, dataset_label
from objcrop.report.cli import main as report_main
from objcrop.report.cli import write_report


def _pre(policy, seed, proposals=None, method="moco_v2", epochs=8):
    return {"method": method, "policy": policy, "proposals": proposals or ("none" if policy == "random" else "gt"),
            "epochs": epochs, "arch": "resnet18", "dataset": "synth:/data/x:train", "seed": seed}


def _write(root, name, obj, metrics=None):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(obj, f)
    with open(os.path.join(d, "config.yaml"), "w") as f:
        f.write("SEED: 0\n")
    if metrics:
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            for m in metrics:
                f.write(json.dumps(m) + "\n")
            f.write('{"iteration": 99, "lo')  # a torn last line, as a crash leaves it
    return d


PROBE = {"random": [0.40, 0.44], "obj-obj-dilate": [0.50, 0.56, 0.53]}
VOC_AP50 = {"random": [10.0, 12.0], "obj-obj-dilate": [15.0, 17.0]}


@pytest.fixture
def runs(tmp_path):
    root = str(tmp_path / "runs")
    for policy, values in PROBE.items():
        for seed, v in enumerate(values):
            pre = _pre(policy, seed)
            _write(root, f"pretrain/{policy}_s{seed}",
                   {"stage": "pretrain", "status": "ok", "pretrain": pre, "seed": seed, "final_loss": 5.0,
                    "images_seen": 100},
                   metrics=[{"iteration": i, "loss": 6.0 - 0.1 * i, "lr": 0.1} for i in range(10)])
            _write(root, f"probe/{policy}_s{seed}",
                   {"stage": "probe", "status": "ok", "pretrain": pre, "seed": seed,
                    "dataset": "synth:/data/x:test", "mAP": v, "knn_mAP": v - 0.1})
    for policy, values in VOC_AP50.items():
        for seed, v in enumerate(values):
            _write(root, f"det/voc_{policy}_s{seed}",
                   {"stage": "detection", "status": "ok", "pretrain": _pre(policy, seed), "seed": 0,
                    "task": "voc_det", "dataset": "voc:/data/x/voc:test",
                    "box": {"AP50": v, "AP": v / 2, "AP75": v / 3}})
    # a NaN probe of obj-obj-dilate seed 3 and a failed detection run: flagged, not averaged
    _write(root, "probe/nan_run", {"stage": "probe", "status": "ok", "pretrain": _pre("obj-obj-dilate", 3),
                                   "seed": 3, "dataset": "synth:/data/x:test", "mAP": float("nan")})
    _write(root, "det/failed_run", {"stage": "detection", "status": "failed", "error": "loss diverged",
                                    "pretrain": _pre("random", 5), "task": "voc_det",
                                    "dataset": "voc:/data/x/voc:test"})
    # a setting that only has a probe (its detection cells are missing)
    _write(root, "probe/objscene", {"stage": "probe", "status": "ok", "pretrain": _pre("obj-scene", 0),
                                    "seed": 0, "dataset": "synth:/data/x:test", "mAP": 0.47})
    # a corrupt results.json
    os.makedirs(os.path.join(root, "broken"))
    with open(os.path.join(root, "broken", "results.json"), "w") as f:
        f.write("{not json")
    return root


def _row(policy):
    return RowKey("moco_v2", policy, "none" if policy == "random" else "gt", 8, "resnet18", "synth:train")


PROBE_COL = Column("probe", "", "mAP", "synth:test")
VOC_COL = Column("voc_det", "box", "AP50", "voc:test")


def test_aggregates_mean_std_n_delta_and_flags(runs):
    out = write_report([runs], os.path.join(runs, "..", "report"), plots=False)
    table = out["table"]
    rand, dil, scene = _row("random"), _row("obj-obj-dilate"), _row("obj-scene")
    assert table.rows[0] == rand  # the baseline first
    c = table.cell(dil, PROBE_COL)
    assert c.n == 3  # the NaN run is not in the mean ...
    assert c.mean == pytest.approx(100 * statistics.fmean(PROBE["obj-obj-dilate"]))
    assert c.std == pytest.approx(100 * statistics.stdev(PROBE["obj-obj-dilate"]))
    assert [f.reason for f in c.flags] == ["probe mAP is nan"]  # ... but flagged
    base = table.cell(rand, PROBE_COL)
    assert c.delta == pytest.approx(c.mean - base.mean)
    assert c.best and not base.best
    assert table.cell(dil, VOC_COL).delta == pytest.approx(16.0 - 11.0)
    assert table.cell(rand, VOC_COL).n == 2 and table.cell(rand, VOC_COL).flags  # the failed run
    missing = table.cell(scene, VOC_COL)
    assert missing.n == 0 and missing.mean is None and not missing.flags
    assert table.cell(scene, PROBE_COL).std is None  # n = 1: no std
    reasons = {os.path.basename(f.run_dir): f.reason for f in table.all_flags()}
    assert reasons["failed_run"] == "status failed: loss diverged"
    assert reasons["nan_run"] == "probe mAP is nan"
    assert any("unreadable" in r for r in reasons.values())


def test_markdown_csv_tex_show_the_same_numbers(runs):
    out_dir = os.path.join(runs, "..", "report")
    assert report_main([runs, "--out", out_dir, "--decimals", "2"]) == 0
    md = open(os.path.join(out_dir, "results.md")).read()
    dil = [100 * v for v in PROBE["obj-obj-dilate"]]
    rnd = [100 * v for v in PROBE["random"]]
    mean, std = statistics.fmean(dil), statistics.stdev(dil)
    delta = mean - statistics.fmean(rnd)
    assert f"**{mean:.2f}** ± {std:.2f} (n=3, Δ {delta:+.2f}) †" in md
    assert "| moco_v2 | obj-scene | gt | 8 |" in md and "| — |" in md  # missing cells
    assert "nan_run" in md and "failed_run" in md and "broken" in md  # flagged runs listed
    tex = open(os.path.join(out_dir, "results.tex")).read()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert rf"\textbf{{{mean:.2f}}}" in tex and "obj-obj-dilate" in tex
    assert "nan\\_run" in tex
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    by_policy = {r["policy"]: r for r in rows}
    assert float(by_policy["obj-obj-dilate"]["probe mAP mean"]) == pytest.approx(mean)
    assert int(by_policy["obj-obj-dilate"]["probe mAP n"]) == 3
    assert by_policy["obj-scene"]["VOC AP50 mean"] == ""
    assert math.isclose(float(by_policy["obj-obj-dilate"]["VOC AP50 delta"]), 5.0)
    plots = os.listdir(os.path.join(out_dir, "plots"))
    assert {"bars.png", "loss_curves.png"} <= set(plots)
    for p in plots:
        assert open(os.path.join(out_dir, "plots", p), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(out_dir) if f.endswith(".tmp")]


def test_probe_over_epochs_plot_when_several_epochs(tmp_path):
    root = str(tmp_path)
    for epochs, v in [(4, 0.4), (8, 0.5), (16, 0.6)]:
        _write(root, f"p{epochs}", {"stage": "probe", "status": "ok", "pretrain": _pre("random", 0, epochs=epochs),
                                    "dataset": "synth:/d:test", "mAP": v})
    out = write_report([root], str(tmp_path / "rep"))
    assert any(p.endswith("probe_over_epochs.png") for p in out["plots"])
    assert all(c.delta is None for c in out["table"].cells.values())  # the baseline has no Δ to itself


def test_reference_rows_and_dataset_labels():
    results = [
        ({"stage": "probe", "status": "ok", "pretrain": {"method": "supervised"}, "mAP": 0.9, "dataset": "x"}, "a"),
        ({"stage": "probe", "status": "ok", "pretrain": _pre("random", 0), "mAP": 0.4, "dataset": "x"}, "b"),
        ({"stage": "detection", "status": "ok", "pretrain": None, "task": "coco_instseg", "dataset": "coco_2017_val",
          "box": {"AP": 1.0}, "mask": {"AP": 0.5}}, "c"),
    ]
    table = build_table(results)
    assert [r.method for r in table.rows] == ["supervised", "moco_v2", "unknown"]
    assert table.rows[0].policy == "—" and table.rows[0].epochs is None
    assert [c.header() for c in table.columns] == ["probe mAP", "COCO box AP", "COCO mask AP"]
    assert dataset_label("coco:/a/b/instances_val.json:/a/img") == "coco:instances_val"
    assert dataset_label("synth:/tmp/a:b:test") == "synth:test"


def test_cli_errors_name_the_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "objcrop.report.cli", str(tmp_path / "nope"), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "nope: no such file or directory" in r.stderr and "Traceback" not in r.stderr


def test_pretrain_fields_missing_from_results_come_from_config_yaml(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"stage": "pretrain", "status": "failed", "pretrain": {"method": "byol"}}))
    (d / "config.yaml").write_text("PRETRAIN:\n  ARCH: resnet50\n  EPOCHS: 200\nVIEWS:\n  POLICY: obj-scene\n")
    out = write_report([str(tmp_path)], str(tmp_path / "rep"), plots=False)
    (row,) = out["table"].rows
    assert (row.method, row.policy, row.epochs, row.arch) == ("byol", "obj-scene", 200, "resnet50")
    assert out["table"].row_flags[row][0].reason == "pretraining status failed"
    assert "| byol † | obj-scene |" in open(tmp_path / "rep" / "results.md").read()


def test_no_best_when_all_equal():
    results = [({"stage": "probe", "status": "ok", "pretrain": _pre(p, 0), "mAP": 0.0, "dataset": "x"}, p)
               for p in ("random", "obj-obj")]
    table = build_table(results)
    assert not any(c.best for c in table.cells.values())


def test_provenance_names_a_root_below_the_working_directory_relatively(tmp_path, monkeypatch):
    from objcrop.report import cli

    monkeypatch.chdir(tmp_path)
    assert cli._shown_path(str(tmp_path / "docs" / "runs")) == os.path.join("docs", "runs")
    assert cli._shown_path(str(tmp_path.parent / "elsewhere")) == str(tmp_path.parent / "elsewhere")
