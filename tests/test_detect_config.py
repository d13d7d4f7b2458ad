"""Config handling of `objcrop detect train`: shipped configs, norm adaption, linear scaling, weights options."""
import argparse
import glob
import logging
import os

import pytest
import torch
import torch

from objcrop.convert.detectron2_model import adapt_norms_to_world_size, load_config
from objcrop.detection.config import scale_to_world_size
from objcrop.errors import CheckpointError, ConfigError

LOG = logging.getLogger("test")
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "eval_configs")


def _configs():
    """The detection configs: Base-*.yaml, voc/, coco/, demo/ (other folders belong to other stages)."""
    paths = glob.glob(os.path.join(CONFIG_DIR, "*.yaml")) + [
        p for d in ("voc", "coco", "demo") for p in glob.glob(os.path.join(CONFIG_DIR, d, "*.yaml"))]
    return sorted(os.path.relpath(p, CONFIG_DIR) for p in paths)


def _base_depth(path, depth=1):
    import yaml

    with open(path) as f:
        base = (yaml.safe_load(f) or {}).get("_BASE_")
    return depth if not base else _base_depth(os.path.join(os.path.dirname(path), base), depth + 1)


@pytest.mark.parametrize("name", _configs())
def test_every_shipped_config_merges_with_at_most_three_levels(name):
    cfg = load_config(name)
    assert _base_depth(os.path.join(CONFIG_DIR, name)) <= 3
    if name == "Base-RCNN-C4-BN.yaml" or name.endswith(("_moco.yaml", "_msra.yaml")):
        return  # MoCo's and MSRA's reference modes, pinned key by key in tests/test_fidelity_detection.py
    # The protocol for torchvision-format weights, everywhere.
    assert cfg.INPUT.FORMAT == "RGB" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert list(cfg.MODEL.PIXEL_STD) == [58.395, 57.120, 57.375]
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    if "_scratch" in name:
        assert cfg.OBJCROP.RANDOM_INIT and cfg.MODEL.WEIGHTS == ""


def test_voc_protocol_is_mocos():
    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml")
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == \
        (24000, (18000, 22000), 16, 0.02)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(range(480, 801, 32)) and cfg.INPUT.MIN_SIZE_TEST == 800
    assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval") and cfg.DATASETS.TEST == ("voc_2007_test",)


def test_linear_scaling_on_fewer_devices():
    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml").clone()
    cfg.defrost()
    assert scale_to_world_size(cfg, 1, LOG) == pytest.approx(1 / 8)
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.SOLVER.BASE_LR == pytest.approx(0.0025)
    assert cfg.SOLVER.MAX_ITER == 192000 and tuple(cfg.SOLVER.STEPS) == (144000, 176000)
    assert cfg.SOLVER.WARMUP_ITERS == 800 and cfg.SOLVER.REFERENCE_WORLD_SIZE == 1
    assert scale_to_world_size(cfg, 1, LOG) is None  # already scaled: not again

    same = load_config("voc/faster_rcnn_R_50_C4_24k.yaml").clone()
    same.defrost()
    assert scale_to_world_size(same, 8, LOG) is None and same.SOLVER.MAX_ITER == 24000

    unscaled = load_config("voc/faster_rcnn_R_50_C4_24k.yaml").clone()
    unscaled.defrost()
    assert scale_to_world_size(unscaled, 2, LOG, enabled=False) is None
    assert (unscaled.SOLVER.IMS_PER_BATCH, unscaled.SOLVER.MAX_ITER, unscaled.SOLVER.REFERENCE_WORLD_SIZE) == (16, 24000, 0)


def test_syncbn_becomes_bn_on_one_process_only():
    cfg = load_config("coco/mask_rcnn_R_50_FPN_1x.yaml").clone()
    cfg.defrost()
    one = cfg.clone()
    assert len(adapt_norms_to_world_size(one, 1, LOG)) == 4
    assert {one.MODEL.RESNETS.NORM, one.MODEL.FPN.NORM, one.MODEL.ROI_BOX_HEAD.NORM, one.MODEL.ROI_MASK_HEAD.NORM} == {"BN"}
    eight = cfg.clone()
    assert adapt_norms_to_world_size(eight, 8, LOG) == [] and eight.MODEL.RESNETS.NORM == "SyncBN"


def _args(**kw):
    base = dict(config_file="voc/faster_rcnn_R_50_C4_24k.yaml", opts=[], weights=None, dataset_train=None,
                dataset_test=None, no_scale=False, output_dir=None, seeds=[0])
    base.update(kw)
    return argparse.Namespace(**base)


def test_weights_must_be_given_local_or_explicitly_none(tmp_path):
    from objcrop.detection.results import provenance_of_weights
    from objcrop.detection.train_net import setup

    with pytest.raises(ConfigError, match="--weights none"):
        setup(_args(), 0, 1)
    with pytest.raises(CheckpointError, match="never downloads"):
        setup(_args(weights="detectron2://ImageNetPretrained/MSRA/R-50.pkl"), 0, 1)
    with pytest.raises(CheckpointError, match=r"missing\.pkl: weights file not found"):
        setup(_args(weights=str(tmp_path / "missing.pkl")), 0, 1)

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="2 processes on CPU"):
            setup(_args(weights="none"), 0, 2)
    cfg = setup(_args(weights="none", output_dir=str(tmp_path)), 3, 1)
    assert cfg.MODEL.WEIGHTS == "" and cfg.SEED == 3 and cfg.OUTPUT_DIR == str(tmp_path / "seed3")
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.MODEL.RESNETS.NORM == "BN"
    assert provenance_of_weights(cfg).method == "random_init"
    scratch = setup(_args(config_file="voc/faster_rcnn_R_50_C4_24k_scratch.yaml"), 0, 1)
    assert scratch.OBJCROP.RANDOM_INIT and scratch.MODEL.WEIGHTS == ""


def test_cli_reports_a_missing_weights_option_in_one_line(capsys):
    from objcrop.cli import run_stage_main
    from objcrop.detection.cli import main

    assert run_stage_main(main, ["train", "--config-file", "voc/faster_rcnn_R_50_C4_24k.yaml"], "objcrop detect") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("objcrop detect: error: no weights") and len(err.splitlines()) == 1


def test_provenance_of_weights_is_the_pkl_block_random_init_or_unknown(tmp_path):
    """The `pretrain` block of detection results: what convert stored, the random-init block, or unknown."""
    from objcrop.convert.writer import write_detectron2_pkl
    from objcrop.detection.results import provenance_of_weights
    from objcrop.records import Provenance

    stored = {"method": "moco_v2", "policy": "obj-obj-dilate", "proposals": "gt", "epochs": 2, "arch": "resnet50",
              "dataset": "synth:x:train", "seed": 1, "tag": "no-colour"}
    write_detectron2_pkl(str(tmp_path / "ours.pkl"), {}, stored)
    write_detectron2_pkl(str(tmp_path / "foreign.pkl"), {}, None)
    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml").clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "ours.pkl")
    assert provenance_of_weights(cfg).to_dict() == stored
    cfg.MODEL.WEIGHTS = str(tmp_path / "foreign.pkl")
    assert provenance_of_weights(cfg) == Provenance(arch="resnet50")
    cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.DEPTH = "", 18
    assert provenance_of_weights(cfg).to_dict() == {"method": "random_init", "policy": "none", "proposals": "none",
                                                    "epochs": 0, "arch": "resnet18", "dataset": "none", "seed": None}


def test_a_failed_run_still_writes_a_valid_record(tmp_path):
    from objcrop.detection.results import results_record
    from objcrop.records import Provenance, read_results, write_results

    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml", ["OBJCROP.TASK", "voc_det"])
    record = results_record(cfg, {}, status="failed", seed=2, provenance=Provenance(method="byol"),
                            weights_sha256=None, iterations=0, wall_time_s=1.0, error="training diverged: nan")
    back = read_results(write_results(str(tmp_path), record))
    assert back["status"] == "failed" and back["box"] is None and back["pretrain"]["method"] == "byol"
    assert back["error"] == "training diverged: nan" and back["seed"] == 2


def test_results_json_says_the_schedule_it_trained_with_and_a_record_reads_it_without_the_config():
    """A fine-tuning's results.json carries its lr, steps and warmup as trained (after world-size
    scaling), so a record that lacks its config.yaml still tells which schedule it ran
    (report.record.solver_ran, same_budget): the same experiment on another world size, not another lr."""
    from objcrop.detection.results import results_record
    from objcrop.records import Provenance
    from objcrop.report.record import planned_budget, same_budget, solver_ran

    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml", ["OBJCROP.TASK", "voc_det"]).clone()
    cfg.defrost()
    planned = planned_budget(cfg.SOLVER)
    assert scale_to_world_size(cfg, 1, LOG) == pytest.approx(1 / 8)  # 8 devices' schedule on one
    record = results_record(cfg, {}, status="failed", seed=0, provenance=Provenance(method="byol"),
                            weights_sha256=None, iterations=cfg.SOLVER.MAX_ITER, wall_time_s=1.0)
    assert record["schedule"] == {"base_lr": cfg.SOLVER.BASE_LR, "steps": list(cfg.SOLVER.STEPS),
                                  "warmup_iters": cfg.SOLVER.WARMUP_ITERS}
    assert record["schedule"]["base_lr"] < planned["base_lr"]  # as trained, not as planned for 8 devices
    assert same_budget(record, planned, solver_ran(record, None))
    assert not same_budget(record, {**planned, "base_lr": planned["base_lr"] / 2}, solver_ran(record, None))
    assert not same_budget(record, {**planned, "warmup_iters": planned["warmup_iters"] * 2}, solver_ran(record, None))
    # the results.json's own word is taken before a config's; a record written before it says none reads the config
    assert solver_ran(record, {"BASE_LR": 1.0})["BASE_LR"] == cfg.SOLVER.BASE_LR
    older = {k: v for k, v in record.items() if k != "schedule"}
    assert solver_ran(older, dict(cfg.SOLVER)) == dict(cfg.SOLVER) and solver_ran(older, None) is None


def test_msra_caffe2_weights_are_accepted_and_reported_as_supervised(tmp_path):
    """MoCo's supervised baseline starts from MSRA's R-50.pkl (Caffe2 names, no "model" key): detection
    must accept it (issue 18 §6) instead of refusing it as 'not a detectron2 checkpoint'."""
    import pickle

    import numpy as np

    from objcrop.detection.results import check_backbone_loaded, provenance_of_weights

    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32),
                                             "res_conv1_bn_s": np.ones(64, np.float32)}}))
    cfg = load_config("voc/faster_rcnn_R_50_C4_24k_msra.yaml").clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    prov = provenance_of_weights(cfg)
    assert (prov.method, prov.arch, prov.dataset) == ("supervised", "resnet50", "R-50.pkl")
    check_backbone_loaded(torch.nn.Linear(1, 1), str(path))  # foreign names: detectron2's matching, no check
