"""What is made from a checkpoint names the training it comes from (objcrop.pipeline.freshness): a backbone
trained again is converted again, and a probe or fine-tuning of the earlier training is refused, not
skipped as complete nor overwritten. Real `objcrop convert` (without its detectron2 verification, which
other tests run) and torchvision state dicts; the probe and the fine-tuning are stand-ins that record what
`objcrop probe` and `detect train` record, since what is tested here is the pipeline's reading of it."""
import json
import os
import re

import pytest
import torch
import torchvision

import objcrop.pipeline as pipeline
from objcrop.convert.cli import convert
from objcrop.io import sha256_file
from objcrop.pipeline import freshness
from objcrop.pipeline import tasks as tasks_mod
from objcrop.pipeline.presets import PipelineError


def _train(path, seed):
    """A 'training' of a ResNet-18 backbone: its random init under `seed`, saved as a torchvision state dict."""
    torch.manual_seed(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)


def _fine_tuning(results_json, pkl, **fields):
    """The results.json `objcrop detect train` writes of a .pkl (its source and weight hashes), with `fields`."""
    os.makedirs(os.path.dirname(results_json), exist_ok=True)
    record = {"status": "ok", "weights_sha256": sha256_file(pkl), "source_sha256": freshness.pkl_source_sha256(pkl)}
    with open(results_json, "w") as f:
        json.dump({**record, **fields}, f)


def test_a_conversion_and_a_fine_tuning_are_outdated_once_their_checkpoint_is_trained_again(tmp_path):
    backbone, pkl = str(tmp_path / "bound" / "backbone.pth"), str(tmp_path / "weights" / "bound.pkl")
    results = str(tmp_path / "runs" / "seed0" / "results.json")
    _train(backbone, 0)
    convert(backbone, pkl, fmt="torchvision", verify=False)
    _fine_tuning(results, pkl)
    old = str(tmp_path / "old.json")  # a results.json from before source_sha256: read through its .pkl
    _fine_tuning(old, pkl, source_sha256=None)
    assert freshness.conversion_outdated(pkl, backbone) is None
    assert freshness.fine_tuning_outdated(results, pkl, backbone) is None
    assert freshness.fine_tuning_outdated(old, pkl, backbone) is None

    _train(backbone, 1)  # trained again: another training at the same path
    assert pkl in freshness.conversion_outdated(pkl, backbone)
    assert results in freshness.fine_tuning_outdated(results, pkl, backbone)
    assert old in freshness.fine_tuning_outdated(old, pkl, backbone)
    convert(backbone, pkl, fmt="torchvision", verify=False)  # converted again: the fine-tunings stay outdated
    assert freshness.conversion_outdated(pkl, backbone) is None
    assert results in freshness.fine_tuning_outdated(results, pkl, backbone)
    assert freshness.fine_tuning_outdated(old, pkl, backbone) is None  # its .pkl is gone: it cannot tell

    with open(pkl, "r+b") as f:  # cut short: it is converted again, not read as fresh
        f.truncate(100)
    assert pkl in freshness.conversion_outdated(pkl, backbone)
    assert freshness.fine_tuning_outdated(results, str(tmp_path / "none.pkl"), str(tmp_path / "gone.pth")) is None


def _chain(tmp_path):
    """pretrain (a stand-in that trains with the seed in seed.txt) -> probe and convert (real) -> detect
    (stand-ins that write what objcrop probe and detect train write), planned as objcrop.pipeline.plan plans them."""
    out, backbone, pkl = tmp_path / "out", str(tmp_path / "out" / "bound" / "backbone.pth"), str(tmp_path / "out" / "w.pkl")
    results = str(tmp_path / "out" / "runs" / "detect_voc" / "bound" / "seed0" / "results.json")
    probed = str(tmp_path / "out" / "runs" / "probe" / "bound_s0" / "results.json")
    (tmp_path / "probe.py").write_text(
        "import json, os, sys\n"
        "from objcrop.io import sha256_file\n"
        "os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)\n"
        "json.dump({'status': 'ok', 'weights_id': sha256_file(sys.argv[1])[:16]}, open(sys.argv[2], 'w'))\n")
    (tmp_path / "pretrain.py").write_text(
        "import sys, torch, torchvision\n"
        "torch.manual_seed(int(open(sys.argv[2]).read()))\n"
        "torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])\n")
    (tmp_path / "detect.py").write_text(
        "import json, os, sys\n"
        "from objcrop.io import sha256_file\n"
        "from objcrop.pipeline.freshness import pkl_source_sha256\n"
        "os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)\n"
        "json.dump({'status': 'ok', 'weights_sha256': sha256_file(sys.argv[1]),\n"
        "           'source_sha256': pkl_source_sha256(sys.argv[1])}, open(sys.argv[2], 'w'))\n")
    os.makedirs(os.path.dirname(backbone))
    tasks = [
        pipeline.Task("pretrain.bound", "pretrain", ["pretrain.py", backbone, str(tmp_path / "seed.txt")],
                      [["file", backbone]], raw=True),
        pipeline.Task("probe.bound_s0", "probe", ["probe.py", backbone, probed],
                      [["results_ok", probed], ["probed_from", probed, backbone]], deps=["pretrain.bound"],
                      raw=True, results=[probed]),
        pipeline.Task("convert.bound", "convert", ["convert", backbone, pkl, "--format", "torchvision", "--no-verify"],
                      [["file", pkl], ["converted_from", pkl, backbone]], deps=["pretrain.bound"]),
        pipeline.Task("detect.voc.bound.seed0", "detect", ["detect.py", pkl, results],
                      [["results_ok", results], ["fine_tuned_from", results, pkl, backbone]],
                      deps=["convert.bound"], raw=True, results=[results]),
    ]
    return tasks, str(out), backbone, pkl, results, probed


def test_the_pipeline_converts_a_backbone_trained_again_and_refuses_its_old_probe_and_fine_tuning(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_mod, "REPO", str(tmp_path))
    tasks, out, backbone, pkl, results, probed = _chain(tmp_path)
    log = os.path.join(out, "logs", "pipeline.log")
    (tmp_path / "seed.txt").write_text("0")
    assert pipeline.Pipeline(tasks, out).run() == 0
    first = sha256_file(backbone)
    assert json.load(open(results))["source_sha256"] == first and json.load(open(probed))["weights_id"] == first[:16]
    assert pipeline.Pipeline(tasks, out).run() == 0
    assert open(log).read().count("outputs complete") == 4  # nothing new: every step skipped

    _train(backbone, 1)  # trained again by hand, its outputs complete: the plan sees it at once
    before = open(pkl, "rb").read()
    with pytest.raises(PipelineError, match=r"2 result folder\(s\) hold a result of another training .*"
                                            r"probe\.bound_s0: .*results\.json is a probe of another training of "
                                            r".*backbone\.pth .*detect\.voc\.bound\.seed0: .*results\.json is a "
                                            r"fine-tuning of another training of .*backbone\.pth .*nothing was run"):
        pipeline.Pipeline(tasks, out).run()
    assert open(pkl, "rb").read() == before and json.load(open(results))["source_sha256"] == first  # nothing lost
    assert json.load(open(probed))["weights_id"] == first[:16]

    os.remove(results)  # their owner moved them away: probed again, converted again, fine-tuned again
    os.remove(probed)
    assert pipeline.Pipeline(tasks, out).run() == 0
    assert "run convert.bound again: " in open(log).read()
    assert freshness.pkl_source_sha256(pkl) == sha256_file(backbone) != first
    assert json.load(open(results))["source_sha256"] == sha256_file(backbone)
    assert json.load(open(probed))["weights_id"] == sha256_file(backbone)[:16]

    # the pretraining's output removed and run again: its dependents cannot be judged before it has run,
    # so they are checked when their turn comes; the probe is refused, the conversion redone (--keep-going)
    # and the fine-tuning then refused
    os.remove(backbone)
    (tmp_path / "seed.txt").write_text("2")
    assert pipeline.Pipeline(tasks, out, keep_going=True).run() == 1
    text = open(log).read()
    assert "check convert.bound after pretrain.bound" in text and "check detect.voc.bound.seed0 after convert.bound" in text
    assert re.search(r"FAILED stage probe\.bound_s0: .*results\.json is a probe of another training", text)
    assert freshness.pkl_source_sha256(pkl) == sha256_file(backbone)
    assert re.search(r"FAILED stage detect\.voc\.bound\.seed0: .*results\.json is a fine-tuning of another training", text)
    assert json.load(open(results))["source_sha256"] != sha256_file(backbone)  # kept, not overwritten
