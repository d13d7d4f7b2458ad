"""What a detection run reports: the provenance of its weights, the weights check, and results.json.

results.json follows objcrop.records' schema (docs/INTERFACES.md), stage "detection": task, dataset,
train_datasets, box (and mask) {AP, AP50, AP75}, seed, config_hash, weights, weights_sha256,
source_sha256 (the checkpoint the .pkl was converted from), iterations, wall_time_s, ims_per_batch,
world_size, schedule (base_lr, steps, warmup_iters, as trained), every metric (non-finite -> null),
and the `pretrain` provenance block the converted .pkl carries under `__objcrop__`.
"""
import logging
import os
import math
from typing import Dict, Optional

import torch
from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from objcrop.config import config_hash
from objcrop.convert.verify import compare_backbone
from objcrop.convert.writer import load_pkl_as_detectron2, pkl_source_sha256
from objcrop.errors import CheckpointError
from objcrop.records import Provenance, results

logger = logging.getLogger("objcrop.detect")


def provenance_of_weights(cfg) -> Provenance:
    """The pretraining a run starts from: the .pkl's __objcrop__ block, or random init."""
    arch = f"resnet{int(cfg.MODEL.RESNETS.DEPTH)}"
    if not cfg.MODEL.WEIGHTS:
        # The detection seed is its own field: a random-init backbone has no pretraining seed.
        return Provenance.random_init(arch, None)
    if cfg.MODEL.WEIGHTS.endswith(".pkl"):
        data = load_pkl_as_detectron2(cfg.MODEL.WEIGHTS)
        if data.get("__objcrop__"):
            return Provenance.from_dict(data["__objcrop__"])
        if data.get("__author__") == "Caffe2":
            # MSRA's R-50.pkl and other Detectron1 files: ImageNet-supervised weights (MoCo's baseline, issue 18 §6)
            logger.info("%s is a Caffe2/MSRA checkpoint: reported as supervised", cfg.MODEL.WEIGHTS)
            return Provenance.supervised(arch, os.path.basename(cfg.MODEL.WEIGHTS), None)
    logger.warning("%s was not written by `objcrop convert`: its pretraining is reported as unknown", cfg.MODEL.WEIGHTS)
    return Provenance(arch=arch)


def source_sha256_of_weights(weights: str) -> Optional[str]:
    """The sha256 of the checkpoint a converted .pkl was made from (`objcrop convert` keeps it under
    __objcrop_source__): it names one training whatever folder it was converted in, where the .pkl's own
    hash also depends on that folder (the .pkl names its source's path). None for other weights."""
    return pkl_source_sha256(weights) if weights and weights.endswith(".pkl") else None


def check_backbone_loaded(model: torch.nn.Module, weights: str) -> None:
    """After loading a converted .pkl, every backbone tensor of the model must equal the file's."""
    if not weights.endswith(".pkl"):
        return
    data = load_pkl_as_detectron2(weights)
    if "__objcrop__" not in data:
        # A foreign file (MSRA's Caffe2 names): detectron2's heuristic matching loads it and logs
        # every key it could not match; only files objcrop converted are checked tensor by tensor.
        logger.info("weights check skipped: %s was not written by `objcrop convert`", weights)
        return
    result = compare_backbone(model.module if hasattr(model, "module") else model, data["model"])
    if not result.ok:
        raise CheckpointError(f"{weights}: the backbone did not load into the model: {result.describe()}")
    logger.info("weights check: %s", result.describe())


def task_of(cfg) -> str:
    if cfg.OBJCROP.TASK:
        return cfg.OBJCROP.TASK
    evaluator_type = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("evaluator_type", None)
    if evaluator_type == "pascal_voc":
        return "voc_det"
    return "coco_instseg" if cfg.MODEL.MASK_ON else "coco_det"


def results_record(cfg, eval_results: dict, *, status: str, seed: int, provenance: Provenance,
                   weights_sha256: Optional[str], iterations: int, wall_time_s: float,
                   error: Optional[str] = None, source_sha256: Optional[str] = None) -> dict:
    """The results.json of one seed's run (objcrop.records.results, so it is validated)."""
    task = task_of(cfg)
    dataset = cfg.DATASETS.TEST[0]
    # DefaultTrainer.test returns {task: metrics} for one test set, {dataset: {task: metrics}} for several.
    first = eval_results.get(dataset, eval_results) if len(cfg.DATASETS.TEST) > 1 else eval_results
    fields = {
        "task": task, "dataset": dataset, "train_datasets": list(cfg.DATASETS.TRAIN),
        "box": _ap_triplet(first.get("bbox")) if first else None,
        "seed": seed, "config_hash": config_hash(cfg), "weights": cfg.MODEL.WEIGHTS or None,
        "weights_sha256": weights_sha256, "source_sha256": source_sha256, "iterations": iterations,
        "wall_time_s": round(wall_time_s, 2),
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "world_size": comm.get_world_size(),
        "schedule": schedule_of(cfg), "metrics": _all_finite(eval_results),
    }
    if task == "coco_instseg":
        fields["mask"] = _ap_triplet(first.get("segm")) if first else None
    if error:
        fields["error"] = error
    return results("detection", status, provenance, **fields)


def schedule_of(cfg) -> Dict[str, object]:
    """The learning-rate schedule the run trained with, after world-size scaling (detection/config.py), as
    objcrop.report.record.planned_budget words it: with "iterations" and "ims_per_batch" beside it, a
    results.json says which experiment it is without its config.yaml (report.record.same_schedule)."""
    return {"base_lr": float(cfg.SOLVER.BASE_LR), "steps": [int(s) for s in cfg.SOLVER.STEPS],
            "warmup_iters": int(cfg.SOLVER.WARMUP_ITERS)}


def _finite(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ap_triplet(metrics: Optional[dict]) -> Optional[Dict[str, Optional[float]]]:
    if not metrics:
        return None
    return {k: _finite(metrics.get(k)) for k in ("AP", "AP50", "AP75")}


def _all_finite(tree):
    if isinstance(tree, dict):
        return {str(k): _all_finite(v) for k, v in tree.items()}
    return _finite(tree)
