"""benchmarks/learnability.py: the supervised bound the study's probe table is read against."""
import json
import os

import pytest
import torch
import torchvision
from _repo_files import load_repo_module

from objcrop import records
from objcrop.io import sha256_file


def _learnability():
    return load_repo_module(os.path.join("benchmarks", "learnability.py"))


def test_supervised_bound_writes_its_numbers_and_a_backbone_the_probe_can_load(synth_dir, tmp_path, one_torch_thread):
    out_json, backbone = tmp_path / "learnability.json", tmp_path / "backbone.pth"
    rc = _learnability().main(["--data", synth_dir, "--samples", "32", "--batch", "8", "--size", "32",
                               "--json", str(out_json), "--save-backbone", str(backbone), "--device", "auto"])
    assert rc == 0
    res = json.loads(out_json.read_text())
    # the device as a pretraining run names it: the CPU's model, vector extension and threads (one thread: the fixture's)
    assert res["device"] == (f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                             else f"cpu: {records.cpu_kind()}, 1 thread(s)")
    assert res["torch"] == torch.__version__ and set(res["code"]) == {"objcrop", "commit", "dirty"}
    assert res["supervised_training"]["samples"] >= 32 and res["supervised_training"]["steps"] == res["supervised_training"]["samples"] // 8
    for key in ("random_init_mAP", "supervised_mAP", "supervised_head_mAP", "chance_mAP"):
        assert 0.0 <= res[key] <= 1.0
    # a torchvision state dict without the head, on the CPU, loadable with weights_only
    state = torch.load(backbone, map_location="cpu", weights_only=True)
    assert not any(k.startswith("fc.") for k in state) and all(v.device.type == "cpu" for v in state.values())
    missing, unexpected = torchvision.models.resnet18(weights=None).load_state_dict(state, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
    assert res["backbone_sha256"] == sha256_file(str(backbone))  # the training, as what stands on it names it


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_cuda_asked_for_without_a_gpu_is_a_clear_error(synth_dir, capsys):
    with pytest.raises(SystemExit) as e:
        _learnability().main(["--data", synth_dir, "--device", "cuda"])
    assert e.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err


def _patch_sign_fixture(n: int, seed: int, size: int = 32):
    """Images of strong pixel noise with one flat patch whose sign is the class (two labels, one per image).

    Separable for a trained network (the patch is the only structure), hard for random features: globally
    pooled random filters mostly report the noise, so a linear probe on them scores well below 1."""
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(n, 3, size, size, generator=g)
    cls = torch.randint(0, 2, (n,), generator=g)
    y = torch.nn.functional.one_hot(cls, 2).float()
    side = size // 4
    for i in range(n):
        r, c = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
        x[i, :, r:r + side, c:c + side] = 2.0 if cls[i] else -2.0
    return x, y


def test_supervised_training_beats_random_init_on_a_separable_fixture(one_torch_thread):
    """Guards against a supervised bound that does not learn (no optimiser step, the targets misaligned with
    the images, features read through the head): 20 steps on a fixture a network separates must leave the
    probe on its features with at most half of random init's error (1 − mAP), random init being the same
    architecture and seed, probed the same way."""
    learnability = _learnability()
    splits = {name: _patch_sign_fixture(n, seed)
              for name, n, seed in [("train", 64, 0), ("val", 32, 1), ("test", 64, 2)]}
    random_init = learnability.probe_map(learnability.build("resnet18", 2, seed=0), splits)["test_mAP"]
    model = learnability.build("resnet18", 2, seed=0)
    trained = learnability.train_supervised(model, *splits["train"], minutes=5, batch=16, lr=2e-3, wd=0.05,
                                            seed=0, max_samples=320)
    assert trained["steps"] == 20
    supervised = learnability.probe_map(model, splits)["test_mAP"]
    assert 1 - supervised <= (1 - random_init) / 2, (supervised, random_init)
