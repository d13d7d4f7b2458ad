"""`objcrop probe`'s command line: defaults <- --config-file <- flags <- --opts, then the run.

Thin, like detectron2's tools/train_net.py: `setup_cfg` merges the config (objcrop.pretrain.probe.config),
`main` loads the backbone and the data, writes the resolved config.yaml, and scores.
"""
import argparse
import json
import os
import time
from typing import List, Optional, Tuple

import torch

from objcrop.config import CfgNode, config_hash, merge_config, write_config
from objcrop.errors import DatasetError
from objcrop.io import append_jsonl
from objcrop.logger import setup_logger
from objcrop.pretrain.cli_flags import PRECEDENCE, add_config_args, add_flags, flag_opts
from objcrop.pretrain.engine.results import device_name
from objcrop.pretrain.probe.config import PROBE_FLAGS, check_probe_cfg, get_probe_cfg
from objcrop.pretrain.probe.features import cached_features, native_size
from objcrop.pretrain.probe.linear import train_linear_probe
from objcrop.pretrain.probe.scores import feature_spectrum, is_single_label, knn_scores, mean_average_precision
from objcrop.pretrain.probe.weights import load_backbone
from objcrop.records import PROVENANCE_FIELDS, parse_provenance_overrides, results, write_results

DESCRIPTION = "linear-probe (mAP) and kNN evaluation of a frozen ResNet backbone"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objcrop probe", description=f"{DESCRIPTION[0].upper()}{DESCRIPTION[1:]}.",
        epilog=f"{PRECEDENCE}. Every key is documented in objcrop/pretrain/probe/config.py; presets ship in "
               "eval_configs/probe/. Required: PROBE.WEIGHTS, DATA.TRAIN, DATA.TEST and OUTPUT_DIR, "
               "from flags, the file or --opts.")
    add_config_args(p, "probe/paper.yaml", "LINEAR.EPOCHS 50 KNN.K 10")
    add_flags(p, PROBE_FLAGS, get_probe_cfg())
    p.add_argument("--pretrain", action="append", default=[], metavar="KEY=VALUE",
                   help="set a field of the pretrain block reported with the scores, e.g. --pretrain seed=3 for a "
                        "torchvision file trained with seed 3 (such a file carries no description of its training: "
                        "it is reported as method supervised, its seed unknown); repeatable. KEY is one of "
                        f"{', '.join(PROVENANCE_FIELDS)}; `objcrop convert --pretrain` takes the same")
    return p


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The merged, frozen config (not yet resolved: DATA.IMAGE_SIZE may still be 0 = auto)."""
    cfg = merge_config(get_probe_cfg, args.config_file, flag_opts(args, PROBE_FLAGS) + list(args.opts))
    check_probe_cfg(cfg, args.config_file or "objcrop probe")
    return cfg


def resolve_cfg(cfg: CfgNode, train_records: List[dict]) -> CfgNode:
    """The config as run: DATA.IMAGE_SIZE 0 becomes the size the images are resized to."""
    if cfg.DATA.IMAGE_SIZE:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.IMAGE_SIZE = native_size(train_records)
    cfg.freeze()
    return cfg


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _load_data(cfg: CfgNode) -> Tuple[list, list, list]:
    """(train records, test records, classes); DatasetError when the two sets' classes differ."""
    from objcrop.datasets import load_dataset

    train_records, train_meta = load_dataset(cfg.DATA.TRAIN, strict=cfg.DATA.STRICT)
    test_records, test_meta = load_dataset(cfg.DATA.TEST, strict=cfg.DATA.STRICT)
    classes = train_meta.get("thing_classes") or []
    if not classes:
        raise DatasetError(f"{cfg.DATA.TRAIN}: no classes, nothing to probe")
    if (test_meta.get("thing_classes") or []) != classes:
        raise DatasetError(f"{cfg.DATA.TEST}: its classes differ from those of {cfg.DATA.TRAIN}")
    return train_records, test_records, classes


def score(cfg: CfgNode, train_x, train_y, test_x, test_y, device: torch.device) -> dict:
    """Train the linear classifier (its loss per epoch to metrics.jsonl) and score it and the kNN vote."""
    metrics_path = _fresh_metrics(cfg)
    lin = cfg.LINEAR
    probe = train_linear_probe(train_x, train_y, lin.EPOCHS, lin.LR, lin.BATCH_SIZE, lin.WEIGHT_DECAY, cfg.PROBE.SEED,
                               log=lambda e, loss: append_jsonl(metrics_path, {"iteration": e + 1, "loss": loss}),
                               device=device)
    with torch.no_grad():
        logits = probe(test_x)
    y = test_y.numpy()
    m_ap, n_scored = mean_average_precision(torch.sigmoid(logits).numpy(), y)
    knn_map, _ = mean_average_precision(knn_scores(train_x, train_y, test_x, cfg.KNN.K, cfg.KNN.T).numpy(), y)
    out = {"mAP": m_ap, "knn_mAP": knn_map, "classes_scored": n_scored, "features": feature_spectrum(test_x)}
    if is_single_label(train_y.numpy(), y):
        out["top1"] = float((logits.argmax(1) == test_y.argmax(1)).float().mean())
    return out


def main(argv: Optional[List[str]] = None) -> int:
    from objcrop.datasets import multilabel_targets

    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    provenance_overrides = parse_provenance_overrides(args.pretrain)
    start = time.perf_counter()
    logger = setup_logger("objcrop.probe", cfg.OUTPUT_DIR)
    device = _device(cfg.PROBE.DEVICE)
    model, arch, provenance, weights_id = load_backbone(cfg.PROBE.WEIGHTS, cfg.PROBE.ARCH, cfg.PROBE.SEED,
                                                         random_stem=cfg.PROBE.STEM,
                                                         provenance_overrides=provenance_overrides)
    logger.info(f"backbone: {arch} with the {provenance.stem} stem from {cfg.PROBE.WEIGHTS} ({provenance.method}); "
                f"protocol {cfg.PROBE.PROTOCOL} on {device}")
    train_records, test_records, classes = _load_data(cfg)
    train_y = torch.from_numpy(multilabel_targets(train_records, len(classes)))
    test_y = torch.from_numpy(multilabel_targets(test_records, len(classes)))
    if cfg.PROBE.PROTOCOL == "main_lincls":
        logger.info(f"config: {write_config(cfg, cfg.OUTPUT_DIR)}")
        scores = score_main_lincls(cfg, model, arch, train_records, train_y, test_records, test_y, device)
    else:
        cfg = resolve_cfg(cfg, train_records)
        logger.info(f"images resized whole to {cfg.DATA.IMAGE_SIZE}x{cfg.DATA.IMAGE_SIZE}")
        logger.info(f"config: {write_config(cfg, cfg.OUTPUT_DIR)}")
        train_x = cached_features(model, weights_id, arch, cfg.DATA.TRAIN, train_records, cfg, device, logger)
        test_x = cached_features(model, weights_id, arch, cfg.DATA.TEST, test_records, cfg, device, logger)
        scores = score(cfg, train_x, train_y, test_x, test_y, device)
    record = results("probe", "ok", provenance, seed=cfg.PROBE.SEED, config_hash=config_hash(cfg),
                     protocol=cfg.PROBE.PROTOCOL, dataset=cfg.DATA.TEST, dataset_train=cfg.DATA.TRAIN, **scores,
                     num_train=len(train_records), num_test=len(test_records), weights=cfg.PROBE.WEIGHTS,
                     weights_id=weights_id, arch=arch, device=device_name(device),
                     wall_time_s=round(time.perf_counter() - start, 3))
    write_results(cfg.OUTPUT_DIR, record)
    logger.info("probe: " + json.dumps({k: record[k] for k in ("protocol", "mAP", "knn_mAP", "top1", "features")
                                        if k in record}))
    return 0


def score_main_lincls(cfg: CfgNode, backbone, arch: str, train_records, train_y, test_records, test_y,
                      device: torch.device) -> dict:
    """PROBE.PROTOCOL main_lincls (objcrop.pretrain.probe.lincls): the classifier trained on augmented
    images through the frozen backbone, scored by mAP of the test views. No kNN score (it needs features)."""
    from objcrop.pretrain.models import RESNETS
    from objcrop.pretrain.probe.lincls import FrozenBackboneClassifier, batch_mean_map, predict, train_lincls

    metrics_path = _fresh_metrics(cfg)
    model = FrozenBackboneClassifier(backbone, RESNETS[arch][1], train_y.shape[1])
    train_lincls(model, train_records, train_y, cfg.LINCLS, cfg.PROBE.SEED, device,
                 log=lambda row: append_jsonl(metrics_path, {"iteration": row["epoch"] + 1, **row}))
    probs = predict(model, test_records, test_y, cfg.LINCLS, device)
    y = test_y.numpy()
    m_ap, n_scored = mean_average_precision(probs.numpy(), y)
    out = {"mAP": m_ap, "classes_scored": n_scored,
           "mAP_batch_mean": batch_mean_map(probs.numpy(), y, cfg.LINCLS.BATCH_SIZE)}
    if is_single_label(train_y.numpy(), y):
        out["top1"] = float((probs.argmax(1) == test_y.argmax(1)).float().mean())
    return out


def _fresh_metrics(cfg: CfgNode) -> str:
    metrics_path = os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    return metrics_path
