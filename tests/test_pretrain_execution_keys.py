"""EXECUTION_ONLY_KEYS (pretrain/engine/results.py): keys that change how a run is carried out, never
what it computes. Two real runs, one with every such key changed, must train bit-identical weights;
a finished run asked again with only those keys changed is complete; a resume that changes any other
key names it. ResNet-18 on 32-px crops of the small generated dataset keeps it quick."""
import json
import logging
import subprocess

import pytest
import torch
from _tiny_pretrain import env, pretrain_cmd

from objcrop.config import config_hash
from objcrop.pretrain.config import get_pretrain_cfg
from objcrop.pretrain.engine.checkpoint import report_config_changes
from objcrop.pretrain.engine.results import EXECUTION_ONLY_KEYS, completed_results, computation_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest

SHORT = ["PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "4"]
BASELINE = ["DATA.NUM_WORKERS", "0", "DATA.IMAGE_CACHE_MB", "0", "CHECKPOINT.PERIOD", "0",
            "CHECKPOINT.EPOCH_PERIOD", "1", "CHECKPOINT.KEEP_LAST", "3", "LOG.PERIOD", "1", "LOG.PRINT_PERIOD", "20"]
# another value for every execution-only key (OUTPUT_DIR differs between the two runs anyway); the
# loader's workers are 2 so that consecutive samples come from different processes
CHANGED = {"DATA.NUM_WORKERS": "2", "DATA.IMAGE_CACHE_MB": "64", "CHECKPOINT.PERIOD": "2",
           "CHECKPOINT.EPOCH_PERIOD": "2", "CHECKPOINT.KEEP_LAST": "1", "LOG.PERIOD": "2", "LOG.PRINT_PERIOD": "1",
           "OUTPUT_DIR": None}


def _train(synth_dir, out_dir, *opts, resume=False):
    proc = subprocess.run(pretrain_cmd(synth_dir, out_dir, *SHORT, *opts, resume=resume), env=env(1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _changed_opts():
    return [x for k, v in CHANGED.items() if v is not None for x in (k, v)]


@pytest.fixture(scope="module")
def two_runs(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("execution_keys")
    _train(synth_dir, root / "baseline", *BASELINE)
    _train(synth_dir, root / "changed", *_changed_opts())
    return root / "baseline", root / "changed"


def test_every_execution_only_key_is_tested_with_another_value():
    assert set(CHANGED) == set(EXECUTION_ONLY_KEYS)


def test_runs_that_differ_only_in_execution_keys_train_identical_weights(two_runs):
    baseline, changed = two_runs
    a = torch.load(baseline / "model_final.pth", map_location="cpu", weights_only=True)
    b = torch.load(changed / "model_final.pth", map_location="cpu", weights_only=True)
    assert a["backbone"].keys() == b["backbone"].keys()
    differing = [k for k in a["backbone"] if not torch.equal(a["backbone"][k], b["backbone"][k])]
    assert not differing, f"{len(differing)} backbone tensors differ, e.g. {differing[:3]}"
    ra, rb = (json.loads((d / "results.json").read_text()) for d in two_runs)
    assert ra["final_loss"] == rb["final_loss"] and ra["iterations"] == rb["iterations"]
    assert ra["computation_hash"] == rb["computation_hash"] and ra["config_hash"] != rb["config_hash"]
    # the comparison can see a difference: the weights after the first epoch are not the final ones
    first_epoch = sorted((baseline / "checkpoints").glob("ckpt_*.pth"))[0]
    early = torch.load(first_epoch, map_location="cpu", weights_only=True)["backbone"]
    assert any(not torch.equal(early[k], a["backbone"][k]) for k in early)


def test_a_finished_run_asked_again_with_other_execution_keys_is_complete(synth_dir, two_runs):
    _, changed = two_runs
    before = (changed / "results.json").read_text()
    again = _train(synth_dir, changed, *BASELINE, resume=True)
    assert "already complete" in again.stdout
    assert (changed / "results.json").read_text() == before


def test_a_resume_that_changes_what_is_computed_names_the_keys(synth_dir, two_runs, tmp_path):
    _, changed = two_runs
    run = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(changed), str(run)], check=True)
    earlier = len((run / "log.txt").read_text())
    _train(synth_dir, run, *_changed_opts(), "PRETRAIN.MOCO.T", "0.3", resume=True)
    log = (run / "log.txt").read_text()[earlier:]  # this session's lines
    assert "already complete" not in log
    assert "was written with a different config (" in log and "PRETRAIN.MOCO.T 0.2 -> 0.3" in log
    assert "OUTPUT_DIR" in log  # the copy moved: named, though it alone would change nothing


def test_report_config_changes_says_when_only_execution_keys_changed(caplog):
    cfg = get_pretrain_cfg()
    written = cfg.dump()
    cfg.DATA.NUM_WORKERS, cfg.LOG.PRINT_PERIOD = 1, 7
    log = logging.getLogger("objcrop.test_execution_keys")
    with caplog.at_level(logging.INFO, logger=log.name):
        report_config_changes(log, "ckpt.pth", written, cfg.dump())
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "DATA.NUM_WORKERS 4 -> 1" in record.message
    assert "LOG.PRINT_PERIOD 20 -> 7" in record.message and "computes the same" in record.message
    caplog.clear()
    cfg.PRETRAIN.BASE_LR = 0.03
    with caplog.at_level(logging.INFO, logger=log.name):
        report_config_changes(log, "ckpt.pth", written, cfg.dump())
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "PRETRAIN.BASE_LR 0.015 -> 0.03" in record.message


def _finished(run_dir, **fields):
    run_dir.mkdir()
    (run_dir / "model_final.pth").write_bytes(b"")
    (run_dir / "results.json").write_text(json.dumps({"schema": 0, "stage": "pretrain", "status": "ok", **fields}))
    return str(run_dir)


def test_completed_results_match_the_computation_and_keep_accepting_older_records(tmp_path):
    cfg = get_pretrain_cfg()
    layout = cfg.clone()
    layout.DATA.NUM_WORKERS = 0
    other = cfg.clone()
    other.PRETRAIN.SEED = 1
    assert computation_hash(layout) == computation_hash(cfg) != computation_hash(other)
    run = _finished(tmp_path / "new", config_hash=config_hash(cfg), computation_hash=computation_hash(cfg))
    assert completed_results(run, cfg) and completed_results(run, layout)
    assert completed_results(run, other) is None
    # a record from before computation_hash: its full config hash still matches, nothing else does
    old = _finished(tmp_path / "old", config_hash=config_hash(cfg))
    assert completed_results(old, cfg) and completed_results(old, layout) is None
    # a failed run is never complete
    failed = _finished(tmp_path / "failed", status="failed", computation_hash=computation_hash(cfg))
    assert completed_results(failed, layout) is None
