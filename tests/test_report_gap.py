"""The reference rows of every table and the "gap closed" of each method row: (row − random_init) /
(supervised − random_init) of the same column and architecture, in %, in Markdown, CSV and LaTeX.

The records are the blocks the stages write: the probe's Provenance.random_init / supervised, the
from-scratch detection's Provenance.random_init(arch, None) (detection/results.py) and the
supervised backbone converted with the pipeline's --pretrain fields (Provenance.supervised's)."""
import csv
import os
import statistics

import pytest

from objcrop.records import Provenance
from objcrop.report.aggregate import Column, build_table, gap_closed, row_key
from objcrop.report.cli import write_report
from objcrop.report.tables import to_csv, to_latex, to_markdown

# probe mAP (fractions, as the probe writes them) and VOC AP50 (percent, as detectron2 writes them);
# the probe's random init and the detection's scratch differ, so a column read against another
# column's reference is caught
PROBE = {"random_init": [0.30, 0.32], "supervised": [0.80], "random": [0.40, 0.44], "obj-obj-dilate": [0.50, 0.56]}
VOC = {"random_init": [5.0, 7.0], "supervised": [45.0, 47.0], "random": [10.0, 12.0], "obj-obj-dilate": [15.0, 17.0]}
# ResNet-50 references with other numbers: an R18 row must not be read against them
R50 = {"random_init": 1.0, "supervised": 90.0}
PROBE_COL = Column("probe", "", "mAP", "synth:test")
VOC_COL = Column("voc_det", "box", "AP50", "voc:test")


def _ssl(policy, seed, arch="resnet18"):
    return Provenance("moco_v2", policy, "none" if policy == "random" else "gt", 8, arch, "synth:/d:train", seed).to_dict()


def _probe(block, value):
    return {"stage": "probe", "status": "ok", "pretrain": block, "dataset": "synth:/d:test", "mAP": value}


def _voc(block, value, seed):
    return {"stage": "detection", "status": "ok", "pretrain": block, "task": "voc_det", "seed": seed,
            "dataset": "voc:/d/voc:test", "box": {"AP50": value, "AP": value / 2, "AP75": value / 3}}


def _results(arch="resnet18", probe=PROBE, voc=VOC):
    out = []
    for seed, v in enumerate(probe["random_init"]):
        out.append((_probe(Provenance.random_init(arch, seed).to_dict(), v), f"probe/random_init_s{seed}"))
    for seed, v in enumerate(voc["random_init"]):  # from scratch: no pretraining seed
        out.append((_voc(Provenance.random_init(arch, None).to_dict(), v, seed), f"detect_voc/scratch/seed{seed}"))
    sup = Provenance.supervised(arch, "backbone.pth", 0).to_dict()
    out += [(_probe(sup, v), "probe/supervised_s0") for v in probe["supervised"]]
    out += [(_voc(sup, v, seed), f"detect_voc/supervised/seed{seed}") for seed, v in enumerate(voc["supervised"])]
    for policy in ("random", "obj-obj-dilate"):
        for seed, (p, d) in enumerate(zip(probe[policy], voc[policy])):
            out += [(_probe(_ssl(policy, seed, arch), p), f"probe/{policy}_s{seed}"),
                    (_voc(_ssl(policy, seed, arch), d, 0), f"detect_voc/{policy}_s{seed}")]
    return out


def _expected(values, col_scale=1.0):
    """The gap of each policy row from the fixture's lists: the formula written out once more."""
    low, high = statistics.fmean(values["random_init"]), statistics.fmean(values["supervised"])
    return {p: 100 * (statistics.fmean(values[p]) - low) / (high - low) for p in ("random", "obj-obj-dilate")}


def _rows(table):
    return {(r.method, r.policy): r for r in table.rows}


def test_reference_rows_come_first_and_each_column_reads_against_its_own_references():
    table = build_table(_results())
    assert [r.method for r in table.rows[:2]] == ["random_init", "supervised"]
    rows = _rows(table)
    for col, values in ((PROBE_COL, PROBE), (VOC_COL, VOC)):
        for policy, gap in _expected(values).items():
            assert table.cell(rows[("moco_v2", policy)], col).gap == pytest.approx(gap)
        for ref in ("random_init", "supervised"):  # the references carry no gap of their own
            assert table.cell(rows[(ref, "none")], col).gap is None
    # the detection column's 0 % is the from-scratch fine-tuning, not the probe's random init
    dil = table.cell(rows[("moco_v2", "obj-obj-dilate")], VOC_COL)
    probe_low = 100 * statistics.fmean(PROBE["random_init"])
    assert dil.gap != pytest.approx(gap_closed(dil.mean, probe_low, statistics.fmean(VOC["supervised"])))
    # ... and not the row over the supervised row alone
    assert dil.gap != pytest.approx(100 * dil.mean / statistics.fmean(VOC["supervised"]))
    assert dil.delta == pytest.approx(statistics.fmean(VOC["obj-obj-dilate"]) - statistics.fmean(VOC["random"]))


def test_rows_are_read_against_the_references_of_their_own_architecture():
    r50 = {k: [v] for k, v in R50.items()}
    results = _results() + [(_voc(Provenance.random_init("resnet50", None).to_dict(), R50["random_init"], 0), "s50"),
                            (_voc(Provenance.supervised("resnet50", "backbone.pth", 0).to_dict(), R50["supervised"], 0),
                             "u50"),
                            (_voc(_ssl("random", 0, "resnet50"), 30.0, 0), "r50")]
    table = build_table(results)
    r18 = next(r for r in table.rows if r.arch == "resnet18" and r.policy == "obj-obj-dilate")
    assert table.cell(r18, VOC_COL).gap == pytest.approx(_expected(VOC)["obj-obj-dilate"])
    row50 = next(r for r in table.rows if r.arch == "resnet50" and r.method == "moco_v2")
    assert table.cell(row50, VOC_COL).gap == pytest.approx(_expected({**r50, "random": [30.0],
                                                                      "obj-obj-dilate": [30.0]})["random"])


def test_no_gap_without_both_references_or_when_they_are_equal():
    no_sup = [r for r in _results() if (r[0]["pretrain"] or {}).get("method") != "supervised"]
    assert all(c.gap is None for c in build_table(no_sup).cells.values())
    flat = {**VOC, "supervised": VOC["random_init"]}
    table = build_table(_results(voc=flat))
    assert all(table.cell(r, VOC_COL).gap is None for r in table.rows)
    # references apart by less than their own spread, or supervised below scratch: no scale either
    for sup in ([statistics.fmean(VOC["random_init"]) + statistics.stdev(VOC["random_init"]) / 2] * 2,
                [min(VOC["random_init"]) - 1.0] * 2):
        table = build_table(_results(voc={**VOC, "supervised": sup}))
        assert all(table.cell(r, VOC_COL).gap is None for r in table.rows)
    assert table.cell(_rows(table)[("moco_v2", "random")], PROBE_COL).gap is not None


def test_markdown_csv_and_latex_show_the_gap(tmp_path):
    table = build_table(_results())
    gap = _expected(VOC)["obj-obj-dilate"]
    md, tex = to_markdown(table), to_latex(table)
    assert f"gap {gap:.0f}%)" in md and "(supervised − random_init)" in md
    assert "`random_init` is a random backbone for the probe and fine-tuning from scratch" in md
    assert f"gap {gap:.0f}" + r"\%" in tex
    rows = {r["policy"]: r for r in csv.DictReader(to_csv(table).splitlines())}
    assert float(rows["obj-obj-dilate"]["VOC AP50 gap closed %"]) == pytest.approx(gap)
    assert rows["none"]["VOC AP50 gap closed %"] == ""  # a reference row
    # the reference rows are the first lines of the Markdown table, as of the CSV
    body = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert body[0].startswith("| random_init |") and body[1].startswith("| supervised |")


def test_report_of_files_has_one_row_per_reference(tmp_path):
    """Written to disk and read back by `objcrop report`: the probe's and the detection's random
    init are one row, the probe's and the converted backbone's supervised another."""
    import json

    for data, rel in _results():
        d = tmp_path / "runs" / rel
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(data))
    table = write_report([str(tmp_path / "runs")], str(tmp_path / "rep"), plots=False)["table"]
    refs = [r for r in table.rows if r.method in ("random_init", "supervised")]
    assert len(refs) == 2 and all(table.cell(r, PROBE_COL).n and table.cell(r, VOC_COL).n for r in refs)
    assert row_key(Provenance.random_init("resnet18", 3).to_dict()) == row_key(
        Provenance.random_init("resnet18", None).to_dict())
    assert os.path.isfile(tmp_path / "rep" / "results.md")


def test_a_shorter_fine_tuning_gets_columns_of_its_own_never_the_references_of_a_longer_one(tmp_path):
    """A table with VOC fine-tunings of 300 and of 500 iterations (the study's first detection rows and the
    calibrated budget's references): the 300-iteration runs land in `VOC AP50 [300 it]`, whose cells have
    no references (no gap closed) and are never marked best against the 500-iteration ones; the 500 keep
    the plain header, in the table and in runs.csv (the page's registered column)."""
    def at(its, results):
        return [({**r, "iterations": its} if r["stage"] == "detection" else r, d) for r, d in results]

    refs = [(r, d) for r, d in _results() if d.startswith(("detect_voc/scratch", "detect_voc/supervised", "probe/"))]
    ssl = [(r, d) for r, d in _results() if d.startswith(("detect_voc/random", "detect_voc/obj"))]
    table = build_table(at(500, refs) + at(300, ssl))
    short = Column("voc_det", "box", "AP50", "voc:test", budget=300)
    assert VOC_COL in table.columns and short in table.columns
    assert short.header(with_dataset=True) == "VOC AP50 [300 it] (voc:test)"
    assert VOC_COL.header(with_dataset=True) == "VOC AP50 (voc:test)"
    rows = _rows(table)
    dil = table.cell(rows[("moco_v2", "obj-obj-dilate")], short)
    assert dil.values == VOC["obj-obj-dilate"] and dil.gap is None  # no 300-iteration references
    assert table.cell(rows[("moco_v2", "obj-obj-dilate")], VOC_COL).n == 0
    assert table.cell(rows[("random_init", "none")], VOC_COL).values == VOC["random_init"]
    # one budget only: the plain header, as before
    assert {c.budget for c in build_table(at(300, _results())).columns} == {0}
    # runs.csv, which the study page reads its columns from, names them the same way
    import json

    for data, rel in at(500, refs) + at(300, ssl):
        (tmp_path / "runs" / rel).mkdir(parents=True)
        (tmp_path / "runs" / rel / "results.json").write_text(json.dumps(data))
    write_report([str(tmp_path / "runs")], str(tmp_path / "rep"), plots=False)
    with open(tmp_path / "rep" / "runs.csv", newline="") as f:
        columns = {(r["run_dir"].split("/runs/")[1].split("/")[1], r["column"]) for r in csv.DictReader(f)
                   if r["column"].startswith("VOC AP50")}
    assert columns == {("scratch", "VOC AP50 (voc:test)"), ("supervised", "VOC AP50 (voc:test)")} | {
        (f"{p}_s{s}", "VOC AP50 [300 it] (voc:test)") for p in ("random", "obj-obj-dilate") for s in (0, 1)}


def test_the_same_images_on_another_world_size_share_the_column_of_their_budget():
    """Columns split by the images a fine-tuning trained on, not by its iterations: 500 iterations of 4
    images and 125 of 16 (4 times the devices, the linear scaling rule) are one budget, as the pipeline's
    --records counts them (report.record.same_budget); a shorter budget is worded in the plain budget's
    iterations whatever its batch (300 of 4 and 75 of 16 are one column: `[75 it]` beside 125 of 16)."""
    def at(its, ims, results):
        return [({**r, "iterations": its, "ims_per_batch": ims} if r["stage"] == "detection" else r, d)
                for r, d in results]

    refs = [(r, d) for r, d in _results() if d.startswith(("detect_voc/scratch", "detect_voc/supervised", "probe/"))]
    ssl = {s: [(r, d) for r, d in _results() if d.startswith(("detect_voc/random", "detect_voc/obj")) and d.endswith(s)]
           for s in ("_s0", "_s1")}
    table = build_table(at(500, 4, refs) + at(500, 4, ssl["_s0"]) + at(125, 16, ssl["_s1"]))
    assert {c.budget for c in table.columns} == {0}
    dil = table.cell(_rows(table)[("moco_v2", "obj-obj-dilate")], VOC_COL)
    assert dil.values == VOC["obj-obj-dilate"] and dil.gap == pytest.approx(_expected(VOC)["obj-obj-dilate"])
    # the plain budget is the most images, not the most iterations
    table = build_table(at(125, 16, refs) + at(300, 4, ssl["_s0"]) + at(75, 16, ssl["_s1"]))
    short = Column("voc_det", "box", "AP50", "voc:test", budget=75)
    assert {c for c in table.columns if c.metric == "AP50"} == {VOC_COL, short}
    dil = table.cell(_rows(table)[("moco_v2", "obj-obj-dilate")], short)
    assert dil.values == VOC["obj-obj-dilate"] and dil.gap is None


def test_a_fine_tuning_at_another_learning_rate_in_a_column_is_named_in_the_report(tmp_path):
    """Columns are split by length, not by schedule: a fine-tuning of the same length at another lr (or
    steps, or warmup) would share cells with the others, so the report names it under its flags; the
    same schedule on 4 times the devices (linear scaling: lr and batch x4, steps and warmup /4) is not."""
    import json

    def solver(lr=0.02, steps=(400,), warmup=30, scale=1):
        return {"MAX_ITER": 500 // scale, "IMS_PER_BATCH": 4 * scale, "BASE_LR": lr * scale,
                "STEPS": [s // scale for s in steps], "WARMUP_ITERS": round(warmup / scale)}

    # the first run of the column (in path order) is off its schedule: the column's is the one most of its runs share
    # (the second on 4 times the devices: its column is the one of its images, not of its iterations)
    odd = {"detect_voc/obj-obj-dilate_s1": solver(lr=0.01),
           "detect_voc/obj-obj-dilate_s0": solver(steps=(300,), scale=4), "detect_voc/random_s1": solver(scale=4)}
    # this one says its schedule in its results.json alone (as detect train writes it), with no config.yaml
    alone = "detect_voc/obj-obj-dilate_s1"
    for data, rel in _results():
        (tmp_path / "runs" / rel).mkdir(parents=True)
        if data["stage"] == "detection":
            ran = odd.get(rel, solver())
            data = {**data, "iterations": ran["MAX_ITER"], "ims_per_batch": ran["IMS_PER_BATCH"]}
            if rel == alone:
                data["schedule"] = {"base_lr": ran["BASE_LR"], "steps": ran["STEPS"], "warmup_iters": ran["WARMUP_ITERS"]}
            else:
                (tmp_path / "runs" / rel / "config.yaml").write_text(json.dumps({"SOLVER": ran}))
        (tmp_path / "runs" / rel / "results.json").write_text(json.dumps(data))
    write_report([str(tmp_path / "runs")], str(tmp_path / "rep"), plots=False)
    md = (tmp_path / "rep" / "results.md").read_text()
    named = {rel for rel in odd if f"{rel}`: fine-tuned at" in md}
    assert named == {"detect_voc/obj-obj-dilate_s1", "detect_voc/obj-obj-dilate_s0"}, md[-1500:]
    assert ("fine-tuned at 500 iterations of 4 images (lr 0.01, steps 400, warmup 30), while most runs of its column "
            "ran 500 iterations of 4 images (lr 0.02, steps 400, warmup 30): another experiment in the same cells") in md
