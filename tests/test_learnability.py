"""benchmarks/learnability.py: the supervised bound the study's probe table is read against."""
import json
import os

import pytest
import torch
import torchvision
from _repo_files import load_repo_module


def _learnability():
    return load_repo_module(os.path.join("benchmarks", "learnability.py"))


def test_supervised_bound_writes_its_numbers_and_a_backbone_the_probe_can_load(synth_dir, tmp_path, one_torch_thread):
    out_json, backbone = tmp_path / "learnability.json", tmp_path / "backbone.pth"
    rc = _learnability().main(["--data", synth_dir, "--samples", "32", "--batch", "8", "--size", "32",
                               "--json", str(out_json), "--save-backbone", str(backbone), "--device", "auto"])
    assert rc == 0
    res = json.loads(out_json.read_text())
    assert res["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert res["supervised_training"]["samples"] >= 32 and res["supervised_training"]["steps"] == res["supervised_training"]["samples"] // 8
    for key in ("random_init_mAP", "supervised_mAP", "supervised_head_mAP", "chance_mAP"):
        assert 0.0 <= res[key] <= 1.0
    # a torchvision state dict without the head, on the CPU, loadable with weights_only
    state = torch.load(backbone, map_location="cpu", weights_only=True)
    assert not any(k.startswith("fc.") for k in state) and all(v.device.type == "cpu" for v in state.values())
    missing, unexpected = torchvision.models.resnet18(weights=None).load_state_dict(state, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_cuda_asked_for_without_a_gpu_is_a_clear_error(synth_dir, capsys):
    with pytest.raises(SystemExit) as e:
        _learnability().main(["--data", synth_dir, "--device", "cuda"])
    assert e.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err
