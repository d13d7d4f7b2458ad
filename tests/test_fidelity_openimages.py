"""The paper's OpenImages headline run as a preset (issue 18 §5; eval_configs/pipeline/paper_openimages.yaml):
random vs Obj-Obj+Dilate on the released OpenImages subset lists, main_moco_openimages.py's recipe with the
released crop geometry, the released boxes imported whole, and main_lincls's probe on the released test list."""
import pytest

import objcrop.pipeline as pipeline
from objcrop.config import merge_config
from objcrop.pretrain.config import get_pretrain_cfg

DATASETS = "/DS"


@pytest.fixture(scope="module")
def plan():
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", DATASETS)
    try:
        yield pipeline.build_plan(pipeline.load_preset("paper_openimages"), "/OUT")
    finally:
        mp.undo()


def _arg(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def _opts(task):
    opts = task.cmd[task.cmd.index("--opts") + 1:]
    return dict(zip(opts[::2], opts[1::2]))


def test_it_pretrains_and_probes_on_the_released_subset_lists(plan):
    subset = f"openimages:{DATASETS}/openimages:train:{DATASETS}/openimages/images_selected_new.npy"
    test = f"openimages:{DATASETS}/openimages:test:{DATASETS}/openimages/images_selected_test_40k.npy"
    pre = [t for t in plan if t.stage == "pretrain"]
    assert pre and {_opts(t)["DATA.DATASET"] for t in pre} == {subset}
    probes = [t for t in plan if t.stage == "probe"]
    assert len(probes) == len(pre)
    for t in probes:
        assert (_arg(t.cmd, "--dataset-train"), _arg(t.cmd, "--dataset-test")) == (subset, test)
        assert _arg(t.cmd, "--config-file") == "probe/main_lincls.yaml"  # the paper's probe protocol
    assert not [t for t in plan if t.stage in ("data", "detect", "convert")]  # real data; the table is the probe


def test_random_vs_obj_obj_dilate_on_the_released_boxes_every_row(plan):
    props = [t for t in plan if t.stage == "proposals"]
    assert [t.name for t in props] == ["proposals.file"]
    cmd = props[0].cmd
    assert _arg(cmd, "--file") == f"{DATASETS}/openimages/images_selected_with_all_features.npy"
    assert "--top-k" not in cmd and "--config-file" not in cmd  # every released row, as the released loader
    pre = [_opts(t) for t in plan if t.stage == "pretrain"]
    assert sorted({(o["VIEWS.POLICY"], o["DATA.PROPOSALS"]) for o in pre}) == [
        ("obj-obj-dilate", props[0].checks[0][1]), ("random", "")]
    assert sorted(int(o["PRETRAIN.SEED"]) for o in pre) == [0, 0, 1, 1, 2, 2]
    assert all(o.get("DATA.PROPOSALS_TOPK", "0") == "0" for o in pre)  # no top-k in pretraining either


def test_pretraining_is_main_moco_openimages_recipe_with_the_released_geometry(plan):
    for t in plan:
        if t.stage != "pretrain":
            continue
        opts = t.cmd[t.cmd.index("--opts") + 1:]
        cfg = merge_config(get_pretrain_cfg, _arg(t.cmd, "--config-file"), opts)
        p = cfg.PRETRAIN
        # README: -a resnet50 --lr 0.015 --batch-size 128 --moco-t 0.2 --mlp --aug-plus --cos (200 epochs)
        assert (p.ARCH, p.EPOCHS, p.BATCH_SIZE, p.BASE_LR, p.MOCO.T, p.MOCO.K) == ("resnet50", 200, 128, 0.015, 0.2, 65536)
        assert (cfg.VIEWS.GEOMETRY, cfg.VIEWS.RELEASED_DILATION) == ("released", 0.2)
        assert t.gpus == 8 and t.distributed == "torchrun"
