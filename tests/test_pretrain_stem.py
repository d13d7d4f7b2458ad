"""PRETRAIN.STEM: the CIFAR-style ResNet stem (3x3 stride-1 conv1, no max-pool) of small-image SSL,
through the model, the methods, the probe's loader, `objcrop convert` and the run name (tiny inputs, CPU)."""
import math

import pytest
import torch

from objcrop.checkpoints import save_checkpoint
from objcrop.errors import CheckpointError, ConfigError
from objcrop.pretrain.config import get_pretrain_cfg
from objcrop.pretrain.models import backbone_state_dict, build_resnet, load_backbone_weights
from objcrop.records import Provenance, run_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def _stem_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the stem hands to layer1: conv1, bn1, relu, maxpool."""
    return model.maxpool(model.relu(model.bn1(model.conv1(x))))


@pytest.mark.parametrize("stem, side", [("cifar", 32), ("imagenet", 8)])
def test_the_stem_sets_the_feature_map_size_a_32px_image_keeps(stem, side):
    model, width = build_resnet("resnet18", stem=stem)
    with torch.no_grad():
        out = _stem_output(model.eval(), torch.randn(1, 3, 32, 32))
        pooled = model(torch.randn(2, 3, 32, 32))
    assert tuple(out.shape) == (1, 64, side, side)
    assert tuple(pooled.shape) == (2, width)


def test_the_cifar_stem_keeps_torchvisions_state_dict_keys():
    cifar, imagenet = build_resnet("resnet18", stem="cifar")[0], build_resnet("resnet18")[0]
    assert list(cifar.state_dict()) == list(imagenet.state_dict())
    assert tuple(cifar.conv1.weight.shape) == (64, 3, 3, 3) and cifar.conv1.bias is None
    assert tuple(imagenet.conv1.weight.shape) == (64, 3, 7, 7)


def _cfg(*opts):
    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["PRETRAIN.ARCH", "resnet18", *opts])
    return cfg


@pytest.mark.parametrize("method", ["moco_v2", "byol"])
def test_every_method_builds_its_encoders_with_the_configured_stem(method):
    from objcrop.pretrain.methods import METHODS

    cfg = _cfg("PRETRAIN.STEM", "cifar", "PRETRAIN.MOCO.MLP_HIDDEN", "16", "PRETRAIN.MOCO.K", "12",
               "PRETRAIN.BYOL.PROJ_HIDDEN", "16", "PRETRAIN.BYOL.PROJ_DIM", "8")
    model = METHODS[method].from_config(cfg, world_size=1, per_process_batch=4)
    convs = [m.conv1 for m in model.modules() if isinstance(getattr(m, "conv1", None), torch.nn.Conv2d)
             and hasattr(m, "layer1")]
    assert len(convs) == 2  # online/query and target/key encoders
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)


def test_one_moco_v2_step_with_the_cifar_stem():
    from objcrop.pretrain.methods import MoCoV2

    torch.manual_seed(0)
    cfg = _cfg("PRETRAIN.STEM", "cifar", "PRETRAIN.MOCO.DIM", "8", "PRETRAIN.MOCO.MLP_HIDDEN", "16",
               "PRETRAIN.MOCO.K", "12")
    model = MoCoV2.from_config(cfg, world_size=1, per_process_batch=4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    out["loss"].backward()
    opt.step()
    assert math.isfinite(float(out["loss"])) and int(model.queue_ptr) == 4


def test_an_unknown_stem_is_a_config_error_naming_the_key_and_the_choices():
    from objcrop.pretrain.engine.results import pretrain_provenance

    for build in (lambda: build_resnet("resnet18", stem="cifar10"),
                  lambda: pretrain_provenance(_cfg("PRETRAIN.STEM", "cifar10"), "none")):
        with pytest.raises(ConfigError, match=r"PRETRAIN\.STEM.*'cifar10'.*imagenet.*cifar"):
            build()


@pytest.fixture
def cifar_backbone_file(tmp_path):
    """A plain torchvision state dict of a CIFAR-stem ResNet-18: no provenance says its stem."""
    torch.manual_seed(0)
    model, _ = build_resnet("resnet18", stem="cifar")
    path = tmp_path / "cifar_r18.pth"
    save_checkpoint(backbone_state_dict(model), str(path))
    return path, model


def test_the_probe_loads_a_cifar_stem_backbone_with_its_stem_inferred(cifar_backbone_file):
    from objcrop.pretrain.probe.weights import load_backbone

    path, saved = cifar_backbone_file
    model, arch, provenance, _ = load_backbone(str(path))
    assert (arch, provenance.stem) == ("resnet18", "cifar")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), saved.eval()(x))
    with pytest.raises(CheckpointError, match="conv1.weight"):  # what loading it with the ImageNet stem gives
        load_backbone_weights(build_resnet("resnet18")[0], backbone_state_dict(saved), str(path))


def test_a_random_init_reference_takes_the_stem_it_is_asked_for():
    """The random-init row of CIFAR-stem runs (`objcrop probe --weights random --stem cifar`) must be a
    CIFAR-stem network, with its own cache key and row; the default keeps the old key (cached features)."""
    from objcrop.pretrain.probe.weights import load_backbone

    model, _, provenance, weights_id = load_backbone("random", "resnet18", seed=3, random_stem="cifar")
    assert provenance.stem == "cifar" and model.conv1.kernel_size == (3, 3)
    assert weights_id == "random-resnet18-cifarstem-s3" and provenance.method == "random_init"
    model, _, provenance, weights_id = load_backbone("random", "resnet18", seed=3)
    assert provenance.stem == "imagenet" and model.conv1.kernel_size == (7, 7) and weights_id == "random-resnet18-s3"


def test_the_probe_refuses_an_unknown_stem_naming_probe_stem():
    from objcrop.pretrain.probe.config import check_probe_cfg, get_probe_cfg

    cfg = get_probe_cfg()
    cfg.PROBE.WEIGHTS, cfg.DATA.TRAIN, cfg.DATA.TEST, cfg.OUTPUT_DIR = "random", "synth:d:train", "synth:d:test", "o"
    cfg.PROBE.STEM = "cifar10"
    with pytest.raises(ConfigError, match="PROBE.STEM"):
        check_probe_cfg(cfg, "test")


def test_convert_refuses_a_cifar_stem_backbone_naming_the_file(cifar_backbone_file, tmp_path):
    from objcrop.convert.cli import convert

    path, _ = cifar_backbone_file
    out = tmp_path / "out.pkl"
    with pytest.raises(CheckpointError) as error:
        convert(str(path), str(out), verify=False)
    message = str(error.value)
    assert str(path) in message and "PRETRAIN.STEM imagenet" in message and "\n" not in message
    assert not out.exists()


def test_run_names_differ_by_stem_and_the_default_keeps_its_name():
    from objcrop.pretrain.engine.results import default_run_dir, pretrain_provenance

    prov = Provenance("moco_v2", "random", "none", 100, "resnet18", "synth:/data/study:train", 3)
    assert run_name(prov, 256) == "moco_v2_random_none_r18_b256_e100_study-train_s3"
    assert run_name(prov.replace(stem="imagenet"), 256) == "moco_v2_random_none_r18_b256_e100_study-train_s3"
    assert run_name(prov.replace(stem="cifar"), 256) == "moco_v2_random_none_r18-cifarstem_b256_e100_study-train_s3"
    assert "stem" not in prov.to_dict()  # default records keep their old shape
    stored = prov.replace(stem="cifar").to_dict()
    assert run_name(Provenance.from_dict(stored), 256) == run_name(prov.replace(stem="cifar"), 256)

    default, cifar = _cfg(), _cfg("PRETRAIN.STEM", "cifar")
    assert default_run_dir(default, "none") != default_run_dir(cifar, "none")
    assert "stem" not in default_run_dir(default, "none")
    assert pretrain_provenance(cifar, "none").stem == "cifar"


def test_resuming_a_checkpoint_of_the_other_stem_is_refused():
    from types import SimpleNamespace

    from objcrop.pretrain.engine.checkpoint import restore_training_state
    from objcrop.pretrain.engine.results import pretrain_provenance

    cfg = _cfg()
    trainer = SimpleNamespace(cfg=cfg, ctx=None, logger=None, provenance=pretrain_provenance(cfg, "none"))
    state = {"arch": "resnet18", "method": "moco_v2",
             "pretrain": pretrain_provenance(_cfg("PRETRAIN.STEM", "cifar"), "none").to_dict()}
    with pytest.raises(ConfigError, match=r"ckpt\.pth: .*\(cifar stem\).*\(imagenet stem\)"):
        restore_training_state(trainer, state, "ckpt.pth")


def test_a_cifar_stem_run_gets_its_own_report_row():
    from objcrop.report.aggregate import row_key

    block = Provenance("moco_v2", "random", "none", 100, "resnet18", "synth:/data/study:train", 3).to_dict()
    assert row_key(block).arch == "resnet18"
    assert row_key({**block, "stem": "cifar"}).arch == "resnet18-cifarstem"
