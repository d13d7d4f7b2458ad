"""StudyRecord: a legacy record directory and the compact record file answer alike; saving an
output replaces one run's entry; a damaged record file is named in the error."""
import os
import shutil

import numpy as np
import pytest

from objcrop.io import append_jsonl, read_json, write_json_atomic, write_text_atomic
from objcrop.records import Provenance, RecordError, results, write_results
from objcrop.report.record import RECORD_FILE, StudyRecord


def _output(out, mAP=0.4, loss=6.0):
    """A pipeline output as the stages leave it: results.json, config.yaml, metrics, data, logs."""
    prov = Provenance("moco_v2", "random", "none", 3, "resnet18", "synth:/d:train", 0)
    pre = os.path.join(out, "runs", "pretrain", "moco_v2_random_none_r18_e3_d-train_s0")
    write_results(pre, results("pretrain", "ok", prov, iterations=4, final_loss=loss))
    write_text_atomic(os.path.join(pre, "config.yaml"), "PRETRAIN:\n  BATCH_SIZE: 32\n  METHOD: moco_v2\n")
    for i in range(4):
        append_jsonl(os.path.join(pre, "metrics.jsonl"), {"iteration": i + 1, "epoch": i // 2, "loss": loss - i,
                                                           "lr": 0.1, "acc_top1": 0.5})
    append_jsonl(os.path.join(pre, "metrics.jsonl"), {"iteration": 4, "eval": 1.0})  # a step without a loss
    probe = os.path.join(out, "runs", "probe", "random_init_s0")
    write_results(probe, results("probe", "ok", Provenance.random_init("resnet18", 0), dataset="synth:/d:test",
                                 mAP=mAP))
    write_json_atomic(os.path.join(out, "data", "meta.json"), {"variant": "study", "num_images": 10})
    write_json_atomic(os.path.join(out, "supervised", "learnability.json"), {"supervised_mAP": 0.9})
    write_text_atomic(os.path.join(out, "logs", "pipeline.log"), "[pipeline 10:00:00] start\n"
                                                                 "[pipeline 10:01:00] done probe.x in 60 s\n")
    os.makedirs(os.path.join(out, "extras"))
    with open(os.path.join(out, "extras", "views_random_gt.png"), "wb") as f:
        f.write(b"\x89PNG not really")
    return pre


def test_legacy_directory_and_compact_file_give_the_same_answers(tmp_path):
    out = str(tmp_path / "out")
    pre = _output(out)
    legacy_dir = str(tmp_path / "legacy")
    os.makedirs(os.path.join(legacy_dir, "runs"))
    legacy = StudyRecord.open(legacy_dir)
    assert not legacy.compact
    legacy.save_output(out)
    compact = StudyRecord.open(str(tmp_path / "compact"))
    assert compact.compact
    compact.save_output(out)
    assert os.path.isfile(os.path.join(str(tmp_path / "compact"), RECORD_FILE))
    reopened = StudyRecord.open(os.path.join(str(tmp_path / "compact"), RECORD_FILE))  # the file itself
    key = os.path.relpath(pre, out)
    assert legacy.run_keys() == reopened.run_keys() == [key, "runs/probe/random_init_s0"]
    for rel in (key + "/results.json", "runs/probe/random_init_s0/results.json", "runs/nothing/results.json"):
        assert legacy.results(rel) == reopened.results(rel)
    assert reopened.results("runs/probe/random_init_s0/results.json")["mAP"] == 0.4
    assert reopened.results("runs/nothing/results.json") is None
    for rel in ("data/meta.json", "supervised/learnability.json", key + "/config.yaml", "extras/views_random_gt.png",
                "supervised_40k/learnability.json", "runs/probe/random_init_s0/config.yaml"):
        assert legacy.has(rel) == reopened.has(rel), rel
    assert reopened.has("supervised/learnability.json") and not reopened.has("supervised_40k/learnability.json")
    assert legacy.config(key) == reopened.config(key) == {"PRETRAIN": {"BATCH_SIZE": 32, "METHOD": "moco_v2"}}
    # the compact record keeps the steps with a loss, and only the columns the report reads
    want = [{k: v for k, v in r.items() if k != "lr"} for r in legacy.metrics(key) if "loss" in r]
    assert reopened.metrics(key) == want and len(want) == 4
    assert legacy.files("logs/pipeline*.log") == reopened.files("logs/pipeline*.log") != []
    log = reopened.files("logs/pipeline*.log")[0]
    assert legacy.read(log) == reopened.read(log)
    assert legacy.read("data/meta.json") == reopened.read("data/meta.json")


def test_save_output_replaces_the_same_runs_entry_and_keeps_the_others(tmp_path):
    out = str(tmp_path / "out")
    pre = _output(out)
    record = StudyRecord.open(str(tmp_path / "rec"))
    record.save_output(out)
    key = os.path.relpath(pre, out)
    # a rerun of the probe only: a new number, and the pretraining run is no longer in the output
    shutil.rmtree(os.path.join(out, "runs", "pretrain"))
    probe = os.path.join(out, "runs", "probe", "random_init_s0")
    write_results(probe, results("probe", "ok", Provenance.random_init("resnet18", 0), dataset="synth:/d:test",
                                 mAP=0.25))
    record.save_output(out, replace=True)
    again = StudyRecord.open(str(tmp_path / "rec"))
    assert again.results("runs/probe/random_init_s0/results.json")["mAP"] == 0.25
    assert again.results(key + "/results.json")["final_loss"] == 6.0  # the other run stays
    with open(os.path.join(str(tmp_path / "rec"), RECORD_FILE), "rb") as f:
        first = f.read()
    again.save_output(out)  # the same output twice: the same bytes
    with open(os.path.join(str(tmp_path / "rec"), RECORD_FILE), "rb") as f:
        assert f.read() == first


@pytest.mark.parametrize("content", ["{not json", '{"format": "something else", "runs": {}, "files": {}}',
                                     '{"format": "objcrop-study-record", "version": 1, "runs": {"r": {}}, "files": {}}'])
def test_a_damaged_record_file_is_named_in_the_error(tmp_path, content):
    path = tmp_path / "rec" / RECORD_FILE
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(RecordError, match=str(path)):
        StudyRecord.open(str(path.parent))


def test_save_output_refuses_a_missing_output(tmp_path):
    from objcrop.errors import ObjcropError

    with pytest.raises(ObjcropError, match="nowhere"):
        StudyRecord.open(str(tmp_path / "rec")).save_output(str(tmp_path / "nowhere"))


def test_the_report_reads_a_record_as_it_reads_the_output(tmp_path):
    """`objcrop report RECORD/runs` (the path the output's runs had) gives the output's tables."""
    from objcrop.report.cli import write_report

    out = str(tmp_path / "out")
    _output(out)
    # a malformed results.json (schema 1 without its provenance): flagged under its path, in both
    write_json_atomic(os.path.join(out, "runs", "probe", "broken", "results.json"),
                      {"schema": 1, "stage": "probe", "status": "ok", "mAP": 0.3})
    StudyRecord.open(str(tmp_path / "rec")).save_output(out)
    a = write_report([os.path.join(out, "runs")], str(tmp_path / "a"), plots=False)
    b = write_report([str(tmp_path / "rec" / "runs")], str(tmp_path / "b"), plots=False)
    for name in ("results.csv", "results.tex"):
        with open(a["paths"][name.split(".")[1]]) as fa, \
                open(b["paths"][name.split(".")[1]]) as fb:
            assert fa.read().replace("/out/runs/", "/rec/runs/") == fb.read()  # the flagged run's path aside
    assert [r.data for r in a["collection"].runs] == [r.data for r in b["collection"].runs] != []
    for report, root in ((a, out), (b, str(tmp_path / "rec"))):
        (bad,) = report["collection"].unreadable
        assert bad.path == os.path.join(root, "runs", "probe", "broken", "results.json") and "pretrain" in bad.reason
        with open(report["paths"]["md"]) as f:
            assert "broken/results.json" in f.read()


def test_record_runs_keeps_the_first_entry_of_a_backbone_trained_again_for_its_fine_tuning(tmp_path, capsys):
    """docs/preregistration.md, detection: a registered run whose checkpoint was not kept is trained again
    for its fine-tuning only; `report record --runs 'runs/detect_voc/*/*'` adds the fine-tuning and leaves
    the recorded pretraining run (the one its probe measured) as it was."""
    from objcrop.report.cli import record_main

    rec = str(tmp_path / "rec")
    first = _output(str(tmp_path / "first"), loss=6.0)
    StudyRecord.open(rec).save_output(str(tmp_path / "first"))
    again = str(tmp_path / "again")
    _output(again, mAP=0.3, loss=5.0)  # trained again: other losses (and a probe this record must keep too)
    write_json_atomic(os.path.join(again, "supervised", "learnability.json"), {"supervised_mAP": 0.8})  # and the bound
    det = os.path.join(again, "runs", "detect_voc", os.path.basename(first), "seed0")
    write_results(det, results("detection", "ok", Provenance("moco_v2", "random", "none", 3, "resnet18", "synth:/d:train", 0),
                               task="voc", dataset="voc:/d/voc:test", box={"AP50": 12.5, "AP": 5.0, "AP75": 4.0}))
    assert record_main([again, rec, "--runs", "runs/detect_voc/*/*"]) == 0
    assert "(1 results matching runs/detect_voc/*/*)" in capsys.readouterr().out
    record = StudyRecord.open(rec)
    key = os.path.relpath(first, str(tmp_path / "first"))
    assert record.results(key + "/results.json")["final_loss"] == 6.0
    assert [m["loss"] for m in record.metrics(key)] == [6.0, 5.0, 4.0, 3.0]
    assert record.results("runs/probe/random_init_s0/results.json")["mAP"] == 0.4
    assert record.results(os.path.relpath(det, again) + "/results.json")["box"]["AP50"] == 12.5
    assert record.read("supervised/learnability.json") == {"supervised_mAP": 0.9}  # the first bound's, kept
    # without --runs the second training is refused, the record untouched; --replace replaces every run
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        before = f.read()
    with pytest.raises(RecordError, match=r"3 result\(s\) that .* holds with another value: runs/pretrain/\S+, runs/probe/random_init_s0, "
                                          r"supervised/learnability\.json\. Nothing was recorded"):
        record_main([again, rec])
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        assert f.read() == before
    assert record_main([again, rec, "--replace"]) == 0
    assert StudyRecord.open(rec).results(key + "/results.json")["final_loss"] == 5.0


def test_a_legacy_record_directory_refuses_another_result_as_the_compact_record_does(tmp_path):
    """The legacy layout copies the output's files: without the same refusal a second training's
    results.json and another bound's learnability.json would replace the recorded ones unnoticed."""
    rec = str(tmp_path / "legacy")
    os.makedirs(os.path.join(rec, "runs"))
    first = _output(str(tmp_path / "first"), loss=6.0)
    StudyRecord.open(rec).save_output(str(tmp_path / "first"))
    again = str(tmp_path / "again")
    _output(again, mAP=0.3, loss=5.0)
    write_json_atomic(os.path.join(again, "supervised", "learnability.json"), {"supervised_mAP": 0.8})
    key = os.path.relpath(first, str(tmp_path / "first"))
    with pytest.raises(RecordError, match=r"3 result\(s\) that .* holds with another value: runs/pretrain/\S+, "
                                          r"runs/probe/random_init_s0, supervised/learnability\.json\. Nothing"):
        StudyRecord.open(rec).save_output(again)
    record = StudyRecord.open(rec)
    assert not record.compact and record.results(key + "/results.json")["final_loss"] == 6.0
    assert record.read("supervised/learnability.json") == {"supervised_mAP": 0.9}
    assert record.metrics(key)[0]["loss"] == 6.0  # no file of the refused output was copied
    StudyRecord.open(rec).save_output(str(tmp_path / "first"))  # the same output again: nothing differs
    StudyRecord.open(rec).save_output(again, replace=True)
    assert StudyRecord.open(rec).results(key + "/results.json")["final_loss"] == 5.0


def _detection_run(out, period=2, iters=6, seed=1, loss_cls=lambda it: 1.0 + it):
    """A fine-tuning's run folder with the metrics.jsonl detection/trainer.py's hook writes, driven by a
    detectron2 EventStorage filled as SimpleTrainer and the LR scheduler fill it (losses, timing, lr)."""
    from types import SimpleNamespace

    from detectron2.utils.events import EventStorage
    from objcrop.detection.trainer import MetricsJsonlHook

    prov = Provenance("supervised", "none", "none", 0, "resnet18", "backbone.pth", 0)
    run = os.path.join(out, "runs", "detect_voc", "supervised", f"seed{seed}")
    os.makedirs(run)
    hook = MetricsJsonlHook(os.path.join(run, "metrics.jsonl"), period)
    with EventStorage(0) as storage:
        hook.trainer = SimpleNamespace(storage=storage, max_iter=iters, iter=0)
        for it in range(iters):
            storage.iter = hook.trainer.iter = it
            losses = {"loss_cls": loss_cls(it), "loss_box_reg": 0.5, "loss_rpn_cls": 0.2, "loss_rpn_loc": 0.1}
            storage.put_scalars(total_loss=sum(losses.values()), **losses)
            storage.put_scalars(data_time=0.01, time=0.3, smoothing_hint=True)
            storage.put_scalar("lr", 0.01 * (it + 1), smoothing_hint=False)
            hook.after_step()
    write_results(run, results("detection", "ok", prov, task="voc_det", dataset="voc:/d:test",
                               box={"AP50": 24.5}, seed=seed))
    return run


def test_a_detection_fine_tunings_training_curve_is_kept_in_the_compact_record(tmp_path):
    """Two fine-tunings of the same weights that end far apart (issue 20's supervised VOC reference)
    can be read as a diverged run or as seed noise only if the record keeps their losses: the compact
    record keeps every logged step's total and per-head losses and lr, not the timing columns."""
    out = str(tmp_path / "out")
    run = _detection_run(out)
    record = StudyRecord.open(str(tmp_path / "rec"))
    record.save_output(out)
    key = os.path.relpath(run, out)
    rows = StudyRecord.open(str(tmp_path / "rec")).metrics(key)
    assert [r["iteration"] for r in rows] == [2, 4, 6]
    # the hook logs the mean of the last `period` steps for the smoothed losses, the latest lr
    assert [r["loss_cls"] for r in rows] == [1.5, 3.5, 5.5]
    assert [r["loss"] for r in rows] == pytest.approx([2.3, 4.3, 6.3])
    assert [r["lr"] for r in rows] == [0.02, 0.04, 0.06]
    assert {"loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(rows[0])
    assert not {"time", "data_time"} & set(rows[0])


def test_the_report_draws_each_fine_tunings_loss_from_the_record(tmp_path):
    """The report of a record draws detection_curves.png: every fine-tuning's total loss, apart from the
    pretraining curves, so a run that left its sibling's path (the spike here) shows beside it."""
    from objcrop.report.cli import detection_curves, loss_curves, write_report

    out = str(tmp_path / "out")
    _output(out)
    _detection_run(out, seed=0, loss_cls=lambda it: 2.0 - 0.2 * it)
    _detection_run(out, seed=1, loss_cls=lambda it: 2.0 - 0.2 * it + (8.0 if it >= 2 else 0.0))
    StudyRecord.open(str(tmp_path / "rec")).save_output(out)
    report = write_report([str(tmp_path / "rec" / "runs")], str(tmp_path / "report"))
    curves = {label: (task, its, losses) for task, _, label, its, losses in detection_curves(report["collection"])}
    assert set(curves) == {"seed 0", "seed 1"} and {c[0] for c in curves.values()} == {"voc_det"}
    assert curves["seed 0"][1] == curves["seed 1"][1] == [2, 4, 6]
    # the hook logs each period's mean: seed 1's spike from step 2 on shows from the second logged step
    assert [b - a for a, b in zip(curves["seed 0"][2], curves["seed 1"][2])] == pytest.approx([0.0, 8.0, 8.0])
    assert all(row.method != "supervised" for row, *_ in loss_curves(report["collection"]))
    path = os.path.join(str(tmp_path / "report"), "plots", "detection_curves.png")
    assert path in report["plots"]
    # a row fine-tuned from several backbones (the bound trained again with seed 3): each label names its backbone
    again = _detection_run(str(tmp_path / "again"), seed=0)
    data = read_json(os.path.join(again, "results.json"))
    data["pretrain"]["seed"] = 3
    write_json_atomic(os.path.join(again, "results.json"), data)
    os.makedirs(os.path.join(out, "runs", "detect_voc", "supervised_seed3"))
    shutil.move(again, os.path.join(out, "runs", "detect_voc", "supervised_seed3", "seed0"))
    report = write_report([out], str(tmp_path / "report2"))
    assert sorted(c[2] for c in detection_curves(report["collection"])) == ["s0 seed 0", "s0 seed 1", "s3 seed 0"]
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(report["paths"]["md"]) as f:
        assert "(plots/detection_curves.png)" in f.read()


def _bound(out, folder, seed, mAP, device, samples=40000):
    """The json benchmarks/learnability.py writes (its keys the page reads) under OUT/<folder>/."""
    write_json_atomic(os.path.join(out, folder, "learnability.json"), {
        "seed": seed, "device": device, "supervised_mAP": mAP, "random_init_mAP": 0.34, "chance_mAP": 0.3,
        "supervised_training": {"samples": samples, "epochs": 19.0, "train_seconds": 600.0, "final_loss": 0.25}})


def _float32_ulps_below(x, n):
    """`x` moved down by n float32 ulps: the bits by which a float32 mean of the losses differs from a float64 one."""
    y = np.float32(x)
    for _ in range(n):
        y = np.nextafter(y, np.float32(0))
    return float(y)


def test_the_supervised_bound_trained_again_with_seeds_is_recorded_beside_the_first_and_its_span_read(tmp_path):
    """The pipeline's --supervised-seeds output (OUT/supervised_seed<K>/) recorded into the record that holds the
    preset's bound: the first bound is kept (another one refused), each seed's added, and the learnability line names every
    training's seed and CPU, then the range the trainings of one budget span (a budget tried once has none)."""
    from objcrop.report.cli import record_main
    from objcrop.report.study_runs import learnability_budgets

    rec, first, again = str(tmp_path / "rec"), str(tmp_path / "first"), str(tmp_path / "again")
    _output(first)
    _bound(first, "supervised", 0, 0.775, "cpu: AMD EPYC, 1 thread(s)")
    _bound(first, "supervised_17k", 0, 0.6, "cpu", samples=17000)
    StudyRecord.open(rec).save_output(first)
    write_json_atomic(os.path.join(again, "data", "meta.json"), {"variant": "study", "num_images": 10})
    for seed, mAP in ((0, 0.685), (1, 0.71)):
        _bound(again, f"supervised_seed{seed}", seed, mAP, "cpu: Intel(R) Xeon(R) Processor, 1 thread(s)")
    _bound(again, "supervised", 0, 0.5, "cpu: Intel(R) Xeon(R) Processor, 1 thread(s)")  # the preset's, again
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        before = f.read()
    with pytest.raises(RecordError, match=r"1 result\(s\) that .* holds with another value: supervised/learnability\.json\. "
                                          r"Nothing was recorded"):
        record_main([again, rec])  # a bound trained again never replaces the recorded one unnoticed
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        assert f.read() == before
    repeat = str(tmp_path / "repeat")  # the preset's bound trained again on another CPU, which repeated it
    _output(repeat)
    _bound(repeat, "supervised", 0, 0.775, "cpu: AMD EPYC (AVX512-BF16), 1 thread(s)")
    assert record_main([repeat, rec]) == 0
    assert StudyRecord.open(rec).read("supervised/learnability.json")["device"] == "cpu: AMD EPYC, 1 thread(s)"
    assert record_main([again, rec, "--runs", "supervised_seed*"]) == 0
    line = learnability_budgets(StudyRecord.open(rec))
    assert line.index("`supervised/learnability.json`") < line.index("`supervised_17k/") < line.index("`supervised_seed0/")
    assert ("40000 samples (seed 1, 19 epochs, 10 min on cpu: Intel(R) Xeon(R) Processor, 1 thread(s); "
            "`supervised_seed1/learnability.json`): supervised 0.710") in line
    assert "(seed 0, 19 epochs, 10 min on cpu: AMD EPYC, 1 thread(s); `supervised/learnability.json`): supervised 0.775" in line
    assert line.endswith(". The 3 trainings of 40000 samples span supervised 0.685 to 0.775")
    assert record_main([again, rec, "--runs", "supervised_seed*"]) == 0  # the same output again: nothing refused


def _bound_fine_tuning(out, folder, seed, task="coco", source_sha256=None):
    """A fine-tuning of the bound in OUT/<folder>/, named as the pipeline names it (runs/detect_<task>/<folder>/seed0)."""
    write_results(os.path.join(out, "runs", f"detect_{task}", folder, "seed0"),
                  results("detection", "ok", Provenance("supervised", "none", "none", 0, "resnet18", "backbone.pth", seed),
                          task=task, dataset="synth:/d:test", box={"AP50": 40.0, "AP": 20.0, "AP75": 18.0},
                          source_sha256=source_sha256))


def test_a_bound_trained_again_for_recorded_fine_tunings_is_kept_beside_the_first_as_a_further_draw(tmp_path):
    """`report record --runs 'runs/detect_coco/supervised_seed*/*'` of an output whose bound (OUT/supervised_seed1/)
    was trained again for those fine-tunings: the record keeps the training they stand on — at its own path where it
    holds none, beside the first (supervised_seed1_for_detect_coco/) where it holds another, nothing new where it
    holds the same — and the learnability line lists it with its CPU. A bound no recorded run stands on stays out."""
    from objcrop.report.cli import record_main
    from objcrop.report.study_runs import learnability_budgets

    rec, first, again, third = (str(tmp_path / d) for d in ("rec", "first", "again", "third"))
    _bound(first, "supervised_seed1", 1, 0.709, "cpu: Intel(R) Xeon(R) Processor, 1 thread(s)")
    StudyRecord.open(rec).save_output(first, ["supervised_seed*"])
    for out, mAP in ((again, 0.711), (third, 0.72)):
        for seed in (1, 2):
            _bound(out, f"supervised_seed{seed}", seed, mAP + seed / 1000, "cpu: AMD EPYC, 1 thread(s)")
            _bound_fine_tuning(out, f"supervised_seed{seed}", seed)
        _bound(out, "supervised_seed3", 3, 0.6, "cpu: AMD EPYC, 1 thread(s)")  # no run recorded here stands on it
    runs = ["--runs", "runs/detect_coco/supervised_seed*/*"]
    assert record_main([again, rec] + runs) == 0
    record = StudyRecord.open(rec)
    assert record.read("supervised_seed1/learnability.json")["supervised_mAP"] == 0.709  # the first training, kept
    assert record.read("supervised_seed1_for_detect_coco/learnability.json")["supervised_mAP"] == 0.712
    assert record.read("supervised_seed2/learnability.json")["supervised_mAP"] == 0.713  # none held: its own path
    assert not record.has("supervised_seed2_for_detect_coco/learnability.json")
    assert not record.has("supervised_seed3/learnability.json")
    assert record.results("runs/detect_coco/supervised_seed1/seed0/results.json")["box"]["AP"] == 20.0
    line = learnability_budgets(record)
    assert ("(seed 1, 19 epochs, 10 min on cpu: AMD EPYC, 1 thread(s); `supervised_seed1_for_detect_coco/learnability.json`): "
            "supervised 0.712") in line
    assert line.endswith("The 3 trainings of 40000 samples span supervised 0.709 to 0.713")
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        before = f.read()
    assert record_main([again, rec] + runs) == 0  # the same output again: nothing new
    with open(os.path.join(rec, RECORD_FILE), "rb") as f:
        assert f.read() == before
    repeat = str(tmp_path / "repeat")  # seed 1's first training repeated elsewhere, for VOC: no draw
    first_seed1 = read_json(os.path.join(first, "supervised_seed1", "learnability.json"))
    write_json_atomic(os.path.join(repeat, "supervised_seed1", "learnability.json"), dict(
        first_seed1, device="cpu: AMD EPYC, 1 thread(s)", code={"commit": "later"}, data="/elsewhere", backbone_sha256="ab",
        supervised_training=dict(first_seed1["supervised_training"], train_seconds=1234.5,
                                 final_loss=_float32_ulps_below(first_seed1["supervised_training"]["final_loss"], 2))))
    _bound_fine_tuning(repeat, "supervised_seed1", 1, task="voc")
    assert record_main([repeat, rec, "--runs", "runs/detect_voc/*/*"]) == 0
    assert StudyRecord.open(rec).files("supervised_seed1*/learnability.json") == [
        "supervised_seed1/learnability.json", "supervised_seed1_for_detect_coco/learnability.json"]
    assert record_main([third, rec] + runs + ["--replace"]) == 0  # a third training of seed 1 for COCO: numbered
    assert StudyRecord.open(rec).read("supervised_seed1_for_detect_coco_2/learnability.json")["supervised_mAP"] == 0.721
    assert StudyRecord.open(rec).read("supervised_seed2_for_detect_coco/learnability.json")["supervised_mAP"] == 0.722
    other_loss = str(tmp_path / "other_loss")  # every probe figure equal, but another loss: another training
    write_json_atomic(os.path.join(other_loss, "supervised_seed1", "learnability.json"), dict(
        first_seed1, supervised_training=dict(first_seed1["supervised_training"], final_loss=0.26)))
    _bound_fine_tuning(other_loss, "supervised_seed1", 1, task="voc")
    assert record_main([other_loss, rec, "--runs", "runs/detect_voc/*/*", "--replace"]) == 0
    assert StudyRecord.open(rec).read("supervised_seed1_for_detect_voc/learnability.json")["supervised_training"][
        "final_loss"] == 0.26


def test_a_run_stands_on_the_bound_it_is_named_after_its_probe_too_and_no_other(tmp_path):
    """bounds_of_runs: a fine-tuning (runs/detect_voc/supervised_seed1/seed0) and a probe (runs/probe/supervised_seed1_s0)
    stand on supervised_seed1/; neither on supervised/, whose name begins theirs; a run `runs` leaves out counts for nothing."""
    from objcrop.report.record import bounds_of_runs

    out = str(tmp_path / "out")
    for folder, seed in (("supervised", 0), ("supervised_seed1", 1)):
        _bound(out, folder, seed, 0.7, "cpu")
    _bound_fine_tuning(out, "supervised_seed1", 1, task="voc")
    _bound_fine_tuning(out, "supervised", 0, task="coco")
    write_results(os.path.join(out, "runs", "probe", "supervised_seed1_s0"),
                  results("probe", "ok", Provenance("supervised", "none", "none", 0, "resnet18", "backbone.pth", 1),
                          dataset="synth:/d:test", mAP=0.5))
    assert bounds_of_runs(out, ["runs/probe/*", "runs/detect_voc/*/*"]) == {"supervised_seed1/learnability.json": ["detect_voc", "probe"]}
    assert bounds_of_runs(out, ["runs/detect_coco/*/*"]) == {"supervised/learnability.json": ["detect_coco"]}
    assert bounds_of_runs(out, ["runs/*/*/*", "supervised*"]) == {}  # bounds selected themselves: recorded as such

    # where both name the training by hash, the name is checked: a bound trained again after its fine-tuning ran
    bound = os.path.join(out, "supervised", "learnability.json")
    write_json_atomic(bound, dict(read_json(bound), backbone_sha256="ab" * 32))
    _bound_fine_tuning(out, "supervised", 0, task="coco", source_sha256="ab" * 32)
    assert bounds_of_runs(out, ["runs/detect_coco/*/*"]) == {"supervised/learnability.json": ["detect_coco"]}
    _bound_fine_tuning(out, "supervised", 0, task="coco", source_sha256="cd" * 32)
    with pytest.raises(RecordError, match=r"detect_coco/supervised/seed0: fine-tuned from a checkpoint with sha256 "
                                          r"cdcdcdcdcdcd…, but .*supervised/learnability.json, the bound its name stands "
                                          r"on, saved abababababab…"):
        bounds_of_runs(out, ["runs/detect_coco/*/*"])


def test_end_labels_of_curves_that_end_together_are_spread_apart_in_order():
    """Guards against overlapping end labels on plots/detection_curves.png (four fine-tunings of one backbone end
    at nearly one loss): every two labels at least the gap apart, in the order of their values, a lone label
    where its value is, a crowded group centred on its values, and a group pushed into its neighbour merged."""
    from objcrop.report.plots import spread

    values = [1.00, 1.01, 0.99, 2.0, 1.02, 5.0]
    ys = spread(values, 0.1)
    assert [values.index(v) for v in sorted(values)] == sorted(range(len(ys)), key=ys.__getitem__)
    assert min(b - a for a, b in zip(sorted(ys), sorted(ys)[1:])) >= 0.1 - 1e-12
    assert ys[3] == 2.0 and ys[5] == 5.0  # far from the others: not moved
    assert sum(ys[i] for i in (0, 1, 2, 4)) / 4 == pytest.approx(sum(values[i] for i in (0, 1, 2, 4)) / 4)
    crowded = spread([0.0, 0.05, 0.12], 0.1)  # 0.0 and 0.05 stacked around 0.025 reach 0.075: 0.12 joins, centre 0.0567
    assert crowded == pytest.approx([-0.0433333, 0.0566667, 0.1566667], abs=1e-6)
    assert spread([], 0.1) == [] and spread([3.0], 0.1) == [3.0]
