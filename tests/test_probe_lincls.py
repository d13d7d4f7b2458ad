"""PROBE.PROTOCOL main_lincls: the paper's probe (object-cropping-ssl main_lincls.py) — its schedule, views,
loss and frozen backbone — on a tiny fixture with small image sizes."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torchvision import transforms as T

from objcrop.cli import run_stage_main
from objcrop.config import merge_config
from objcrop.datasets import load_dataset, multilabel_targets
from objcrop.errors import ObjcropError
from objcrop.pretrain import probe
from objcrop.pretrain.probe import get_probe_cfg
from objcrop.pretrain.probe.features import MEAN, STD
from objcrop.pretrain.probe.lincls import (FrozenBackboneClassifier, batch_mean_map, lr_at, predict, released_map,
                                           scoring_views, train_lincls, training_views)
from objcrop.pretrain.probe.scores import mean_average_precision
from objcrop.records import read_results

# Reference constants from the released code, object-cropping-ssl main_lincls.py (argparse defaults and
# its README's command) and datasets/openimages_dataset_lineval.py (train_transform / test_trasform).
MAIN_LINCLS = {"LR": 30.0, "SCHEDULE": [60, 80], "GAMMA": 0.1, "MOMENTUM": 0.9, "WEIGHT_DECAY": 0.0,
               "EPOCHS": 100, "BATCH_SIZE": 256, "TRAIN_SIZE": 224, "TEST_RESIZE": 256, "TEST_SIZE": 224}
RRC_DEFAULT_SCALE = (0.08, 1.0)  # transforms.RandomResizedCrop(224): torchvision's default scale


def test_defaults_and_preset_are_main_lincls_and_the_fast_probe_stays_the_default():
    defaults = get_probe_cfg()
    assert {k: defaults.LINCLS[k] for k in MAIN_LINCLS} == MAIN_LINCLS
    assert defaults.PROBE.PROTOCOL == "cached_features"  # non-paper presets keep objcrop's probe
    cfg = merge_config(get_probe_cfg, "probe/main_lincls.yaml", [])
    assert cfg.PROBE.PROTOCOL == "main_lincls" and {k: cfg.LINCLS[k] for k in MAIN_LINCLS} == MAIN_LINCLS


def test_lr_is_30_then_x0_1_at_epochs_60_and_80():
    lc = get_probe_cfg().LINCLS
    lrs = {e: lr_at(e, lc.LR, lc.SCHEDULE, lc.GAMMA) for e in (0, 59, 60, 79, 80, 99)}
    base, (m1, m2) = MAIN_LINCLS["LR"], MAIN_LINCLS["SCHEDULE"]
    assert lrs[0] == lrs[m1 - 1] == base
    assert lrs[m1] == pytest.approx(base * MAIN_LINCLS["GAMMA"]) == lrs[m2 - 1]
    assert lrs[m2] == pytest.approx(base * MAIN_LINCLS["GAMMA"] ** 2) == lrs[99]


def test_views_are_random_resized_crop_and_flip_then_resize_and_centre_crop():
    lc = get_probe_cfg().LINCLS
    train, test = training_views(lc.TRAIN_SIZE), scoring_views(lc.TEST_RESIZE, lc.TEST_SIZE)
    assert [type(t) for t in train.transforms] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    rrc, flip = train.transforms[0], train.transforms[1]
    assert rrc.size == (MAIN_LINCLS["TRAIN_SIZE"],) * 2 and rrc.scale == RRC_DEFAULT_SCALE and flip.p == 0.5
    assert [type(t) for t in test.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert test.transforms[0].size == MAIN_LINCLS["TEST_RESIZE"]  # an int: the shorter side
    assert test.transforms[1].size == (MAIN_LINCLS["TEST_SIZE"],) * 2
    for views in (train, test):
        assert tuple(views.transforms[-1].mean) == MEAN and tuple(views.transforms[-1].std) == STD


class Recorder(nn.Module):
    """A real tiny backbone with BatchNorm (running statistics to protect) that keeps every input it saw."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.bn(x).mean(dim=(2, 3))


def _tiny(synth_dir, split):
    records, meta = load_dataset(f"synth:{synth_dir}:{split}")
    return records, torch.from_numpy(multilabel_targets(records, len(meta["thing_classes"])))


def _small_lincls(**changes):
    cfg = get_probe_cfg()
    cfg.LINCLS.update({"EPOCHS": 3, "SCHEDULE": [1, 2], "BATCH_SIZE": 8, "TRAIN_SIZE": 24, "TEST_RESIZE": 40,
                       "TEST_SIZE": 32, "NUM_WORKERS": 0, **changes})
    return cfg.LINCLS


def test_training_sees_random_train_views_scoring_sees_test_views_and_bn_stays_frozen(synth_dir, one_torch_thread):
    records, y = _tiny(synth_dir, "train")
    lc = _small_lincls()
    model = FrozenBackboneClassifier(Recorder(), 3, y.shape[1])
    bn_before = {k: v.clone() for k, v in model.backbone.bn.state_dict().items()}
    rows = []
    train_lincls(model, records, y, lc, seed=0, device=torch.device("cpu"), log=rows.append)
    # the schedule as logged, epoch by epoch
    assert [r["lr"] for r in rows] == [lr_at(e, lc.LR, lc.SCHEDULE, lc.GAMMA) for e in range(lc.EPOCHS)]
    seen = model.backbone.seen
    assert all(x.shape[-2:] == (lc.TRAIN_SIZE, lc.TRAIN_SIZE) for x in seen)
    assert sum(len(x) for x in seen) == lc.EPOCHS * len(records)
    # BN in eval mode: running statistics untouched
    assert all(torch.equal(v, model.backbone.bn.state_dict()[k]) for k, v in bn_before.items())
    model.backbone.seen = []
    test_records, test_y = _tiny(synth_dir, "val")
    probs = predict(model, test_records[:4], test_y[:4], lc, torch.device("cpu"))
    assert probs.shape == (4, y.shape[1]) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    expected = scoring_views(lc.TEST_RESIZE, lc.TEST_SIZE)(Image.open(test_records[0]["file_name"]).convert("RGB"))
    assert torch.allclose(torch.cat(model.backbone.seen)[0], expected)  # exactly the test view, not a train view


def test_a_backbone_in_train_mode_is_caught(synth_dir, one_torch_thread, monkeypatch):
    """The planted bug: BN in train mode revises its running statistics; main_lincls's sanity check fails."""
    records, y = _tiny(synth_dir, "train")
    model = FrozenBackboneClassifier(Recorder(), 3, y.shape[1])
    monkeypatch.setattr(FrozenBackboneClassifier, "train", nn.Module.train)
    with pytest.raises(ObjcropError, match="backbone changed.*bn.running_mean"):
        train_lincls(model, records, y, _small_lincls(EPOCHS=1), seed=0, device=torch.device("cpu"))


def test_main_lincls_probe_cli_records_its_protocol(synth_dir, tmp_path, one_torch_thread):
    out = tmp_path / "lincls"
    common = ["--weights", "random", "--arch", "resnet18", "--dataset-train", f"synth:{synth_dir}:train",
              "--dataset-test", f"synth:{synth_dir}:val"]
    opts = ["LINCLS.EPOCHS", "2", "LINCLS.SCHEDULE", "[1]", "LINCLS.BATCH_SIZE", "8", "LINCLS.TRAIN_SIZE", "32",
            "LINCLS.TEST_RESIZE", "36", "LINCLS.TEST_SIZE", "32", "LINCLS.NUM_WORKERS", "0"]
    argv = common + ["--config-file", "probe/main_lincls.yaml", "--out", str(out), "--opts"] + opts
    assert run_stage_main(probe.main, argv, "objcrop probe") == 0
    results = read_results(str(out / "results.json"))
    assert results["protocol"] == "main_lincls" and 0 <= results["mAP"] <= 1 and "knn_mAP" not in results
    assert 0 <= results["mAP_batch_mean"] <= 1
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["PROBE"]["PROTOCOL"] == "main_lincls" and written["LINCLS"]["SCHEDULE"] == [1]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    base = get_probe_cfg().LINCLS
    assert [r["lr"] for r in rows] == [lr_at(e, base.LR, [1], base.GAMMA) for e in range(2)]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_released_batch_mean_map_is_the_mean_of_each_batchs_map():
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 6)) < 0.3).astype(np.float32)
    scores = rng.random((50, 6)) + targets * 0.3  # continuous, no ties: AP as scikit-learn computes it
    whole, _ = mean_average_precision(scores, targets)
    assert released_map(scores, targets) == pytest.approx(whole)
    assert batch_mean_map(scores, targets, len(scores)) == pytest.approx(whole)
    size = 16
    chunks = [(mean_average_precision(scores[i:i + size], targets[i:i + size])[0], len(scores[i:i + size]))
              for i in range(0, len(scores), size)]
    expected = sum(m * n for m, n in chunks) / sum(n for _, n in chunks)
    assert batch_mean_map(scores, targets, size) == pytest.approx(expected) != pytest.approx(whole)
