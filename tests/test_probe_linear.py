"""The linear probe and kNN score on features with known structure, checkpoint loading, and the CLI."""
import json

import numpy as np
import pytest
import torch
import torchvision

from objcrop.cli import run_stage_main
from objcrop.errors import CheckpointError
from objcrop.records import SCHEMA_VERSION, Provenance, read_results
from objcrop.pretrain import probe
from objcrop.pretrain.probe import (feature_spectrum, is_single_label, knn_scores, load_backbone,
                                    mean_average_precision, train_linear_probe)


def separable(n, dim=32, classes=5, seed=0, margin=0.5):
    """Multi-label targets that are linear functions of the features (sign of a projection)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, classes, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n * 3, dim, generator=g) * 3 + 1.0  # not centred, not unit scale: standardising matters
    proj = (x - 1.0) @ w / w.norm(dim=0)
    keep = (proj.abs() > margin).all(dim=1)  # a margin, so the classes are separable, not just nearly
    return x[keep][:n], (proj[keep][:n] > 0).float()


def test_linear_probe_on_separable_features_reaches_map_one():
    train_x, train_y = separable(400, seed=0)
    test_x, test_y = separable(200, seed=1)
    model = train_linear_probe(train_x, train_y, epochs=60, lr=0.1, batch_size=64)
    with torch.no_grad():
        scores = torch.sigmoid(model(test_x)).numpy()
    m_ap, n = mean_average_precision(scores, test_y.numpy())
    assert n == 5 and m_ap >= 0.99
    # and a probe on noise stays near chance, so the metric cannot be satisfied trivially
    noise_map, _ = mean_average_precision(np.random.default_rng(0).random(scores.shape), test_y.numpy())
    assert noise_map < 0.8


def test_knn_on_clustered_features_and_single_label_detection():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    labels = torch.arange(200) % 4
    x = centres[labels] + torch.randn(200, 16, generator=g)
    y = torch.nn.functional.one_hot(labels, 4).float()
    scores = knn_scores(x[:150], y[:150], x[150:], k=20)
    assert mean_average_precision(scores.numpy(), y[150:].numpy())[0] >= 0.99
    assert is_single_label(y.numpy()) and not is_single_label(np.array([[1, 1, 0]], np.float32))


def test_map_ignores_classes_absent_from_the_test_set():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.7, 0.3, 0.5]])
    assert mean_average_precision(scores, targets) == (1.0, 2)


def test_feature_spectrum_tells_features_that_use_many_directions_from_one_dominant_direction():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(500, 64, generator=g)
    one_axis = spread * 0.1 + torch.randn(500, 1, generator=g) * 10.0 * torch.rand(1, 64, generator=g)
    wide, narrow = feature_spectrum(spread), feature_spectrum(one_axis)
    assert wide["effective_rank"] > 40 and wide["top_pc_share"] < 0.1
    assert narrow["effective_rank"] < 10 and narrow["top_pc_share"] > 0.9
    assert feature_spectrum(torch.ones(10, 8)) == {"effective_rank": 0.0, "top_pc_share": 1.0}


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet18_supervised.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_backbone(str(path), arch="resnet50")
    msg = str(e.value)
    assert str(path) in msg and "resnet18" in msg and "layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in msg
    assert "missing keys" in msg
    model, arch, block, _ = load_backbone(str(path))  # the architecture is inferred from the keys
    # a torchvision file does not say with which seed it was trained: not the probe's seed, unknown unless named
    assert arch == "resnet18" and block == Provenance.supervised("resnet18", path.name, None)
    assert load_backbone(str(path), seed=5)[2].seed is None
    assert load_backbone(str(path), seed=5, provenance_overrides={"seed": 3})[2] == block.replace(seed=3)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    torch.testing.assert_close(model.state_dict()["layer4.1.conv2.weight"], torch.load(path, weights_only=True)["layer4.1.conv2.weight"])
    assert "layer4.1.conv2.weight" in sd


def test_probe_cli_random_weights_writes_results_and_reuses_cache(synth_dir, tmp_path, capsys):
    out, cache = tmp_path / "probe", tmp_path / "cache"
    argv = ["--weights", "random", "--arch", "resnet18", "--dataset-train", f"synth:{synth_dir}:train",
            "--dataset-test", f"synth:{synth_dir}:val", "--out", str(out), "--image-size", "32", "--epochs", "5",
            "--num-workers", "0", "--cache-dir", str(cache)]
    assert run_stage_main(probe.main, argv, "objcrop probe") == 0
    results = read_results(str(out / "results.json"))  # validates the schema
    assert results["schema"] == SCHEMA_VERSION and results["stage"] == "probe" and results["status"] == "ok"
    assert results["pretrain"] == Provenance.random_init("resnet18", 0).to_dict()
    # every field results.json had before the shared schema is still there
    assert {"seed", "config_hash", "dataset", "dataset_train", "mAP", "knn_mAP", "classes_scored", "num_train",
            "num_test", "weights", "weights_id", "arch", "features", "wall_time_s"} <= set(results)
    assert results["protocol"] == "cached_features"  # the report row must say which probe produced it
    assert results["device"].startswith("cpu: ")  # the study page's time per task splits by device
    assert results["pretrain"]["method"] == "random_init" and 0 <= results["mAP"] <= 1 and 0 <= results["knn_mAP"] <= 1
    assert 1 <= results["features"]["effective_rank"] <= 512 and 0 < results["features"]["top_pc_share"] <= 1
    assert (out / "config.yaml").exists() and len(list(cache.glob("feats_*.pt"))) == 2
    assert run_stage_main(probe.main, argv, "objcrop probe") == 0
    assert "cached in" in (out / "log.txt").read_text()
    assert json.loads((out / "results.json").read_text())["mAP"] == results["mAP"]


def test_probe_cli_reports_mismatched_checkpoint_in_one_line(synth_dir, tmp_path, capsys):
    path = tmp_path / "r18.pth"
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet18", "method": "moco_v2",
                "backbone": {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
                             if not k.startswith("fc.")}}, path)
    argv = ["--weights", str(path), "--arch", "resnet50", "--dataset-train", f"synth:{synth_dir}:train",
            "--dataset-test", f"synth:{synth_dir}:val", "--out", str(tmp_path / "o")]
    assert run_stage_main(probe.main, argv, "objcrop probe") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"objcrop probe: error: {path}: weights look like resnet18") and err.count("\n") == 1


def test_probe_cli_names_a_torchvision_files_training_seed_with_pretrain_not_with_its_own_seed(synth_dir, tmp_path,
                                                                                                 capsys):
    """A torchvision file carries no provenance: `--seed` seeds the probe's classifier and says nothing of the
    file's training (the supervised bound's five trainings had all read as seed 0); `--pretrain seed=K`, as
    `objcrop convert` takes it, names it. A key that is not a pretrain field is refused, naming the option."""
    path = tmp_path / "backbone.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    argv = ["--weights", str(path), "--dataset-train", f"synth:{synth_dir}:train", "--dataset-test",
            f"synth:{synth_dir}:val", "--image-size", "32", "--epochs", "2", "--num-workers", "0", "--seed", "1"]
    assert run_stage_main(probe.main, argv + ["--out", str(tmp_path / "a")], "objcrop probe") == 0
    assert run_stage_main(probe.main, argv + ["--out", str(tmp_path / "b"), "--pretrain", "seed=3"], "objcrop probe") == 0
    unnamed, named = (read_results(str(tmp_path / o / "results.json")) for o in ("a", "b"))
    assert unnamed["seed"] == named["seed"] == 1
    assert unnamed["pretrain"] == Provenance.supervised("resnet18", "backbone.pth", None).to_dict()
    assert named["pretrain"] == Provenance.supervised("resnet18", "backbone.pth", 3).to_dict()
    assert run_stage_main(probe.main, argv + ["--out", str(tmp_path / "c"), "--pretrain", "lr=0.1"], "objcrop probe") == 2
    assert "--pretrain 'lr=0.1': 'lr' is not a pretrain field" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything is written


def _objcrop_and_moco_twins(tmp_path):
    """The same ResNet-18 backbone saved as an objcrop checkpoint and in MoCo's main_moco.py layout."""
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    provenance = Provenance("moco_v2", "random", "none", 1, "resnet18", "synth", 0)
    objcrop_file, moco_file = tmp_path / "objcrop.pth", tmp_path / "moco.pth.tar"
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet18", "backbone": backbone, "pretrain": provenance.to_dict()},
               objcrop_file)
    # MoCo keeps the query encoder with its MLP head (fc.0/fc.2) and a key encoder beside it, under DDP's module.
    moco = {f"module.encoder_q.{k}": v for k, v in backbone.items()}
    moco.update({"module.encoder_q.fc.0.weight": torch.zeros(512, 512),
                 "module.encoder_q.fc.2.weight": torch.zeros(128, 512)})
    moco.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in backbone.items()})
    torch.save({"epoch": 1, "arch": "resnet18", "state_dict": moco}, moco_file)
    return objcrop_file, moco_file, provenance


def test_moco_layout_checkpoint_probes_like_its_objcrop_twin(synth_dir, tmp_path):
    objcrop_file, moco_file, provenance = _objcrop_and_moco_twins(tmp_path)
    common = ["--dataset-train", f"synth:{synth_dir}:train", "--dataset-test", f"synth:{synth_dir}:val",
              "--image-size", "32", "--epochs", "5", "--num-workers", "0", "--cache-dir", str(tmp_path / "cache")]
    for name, path in (("objcrop", objcrop_file), ("moco", moco_file)):
        assert run_stage_main(probe.main, ["--weights", str(path), "--out", str(tmp_path / name)] + common,
                              "objcrop probe") == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("objcrop", "moco"))
    assert a["weights_id"] != b["weights_id"]  # two files, two feature-cache entries: the features were computed twice
    for key in ("mAP", "knn_mAP", "features", "arch", "classes_scored"):
        assert a[key] == b[key], key
    assert a["pretrain"] == provenance.to_dict()  # the objcrop file carries its pretraining
    assert b["pretrain"]["method"] == "moco" and b["pretrain"]["arch"] == "resnet18"  # a MoCo file only its layout
