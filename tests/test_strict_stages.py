"""Every stage that loads a dataset repairs a real dataset's quirk and counts it by default, and
refuses it naming the file with its strict switch (issue 21 §1; the readers: test_datasets_quirks.py).

The fixture is a 4-image COCO json whose one box overshoots the right border by 2 px (rounding):
clipped by default (one log line), refused with strict (objcrop's earlier 1 px tolerance). Each test
calls the stage's own entry with its own flag or key and stops right after the data is loaded.
"""
import json
import logging

import numpy as np
import pytest
from PIL import Image

from objcrop.errors import DatasetError

H, W = 40, 60
OVERSHOOT_BOX = [50, 5, 12, 10]  # XYWH: x2 = 62, 2 px past the 60 px wide image
CLIPPED = [50.0, 5.0, 60.0, 15.0]  # XYXY after the default repair
CLIPPED_XYWH = [50.0, 5.0, 10.0, 10.0]  # the same, as detectron2's records hold it (BoxMode.XYWH_ABS)
REPAIR_LINE = "1 box(es) clipped to the border"


@pytest.fixture
def quirky(tmp_path):
    """(spec, json path) of a COCO dataset of 4 images, one box 2 px past the border."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image_dir / f"{k}.jpg")
    boxes = [OVERSHOOT_BOX] + [[5 + k, 5, 20, 20] for k in range(1, 4)]
    data = {"images": [{"id": k, "file_name": f"{k}.jpg", "height": H, "width": W} for k in range(4)],
            "annotations": [{"id": k + 1, "image_id": k, "category_id": 1, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for k, b in enumerate(boxes)],
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return f"coco:{path}:{image_dir}", str(path)


@pytest.fixture
def repair_lines(caplog):
    """The quirk summary lines the readers log (captured even if a stage's logger stops propagation)."""
    reader_logger = logging.getLogger("objcrop.datasets")
    reader_logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    yield lambda: [r.getMessage() for r in caplog.records if r.name == "objcrop.datasets"]
    reader_logger.removeHandler(caplog.handler)


def _assert_repaired(lines, json_path):
    assert any(json_path in line and REPAIR_LINE in line for line in lines()), lines()


def _refused(json_path):
    return pytest.raises(DatasetError, match=rf"{json_path}.*\(strict\)")


def test_proposals_compute_strict_flag(quirky, repair_lines, tmp_path):
    from objcrop.pretrain.proposals import cli
    from objcrop.pretrain.proposals.store import ProposalStore

    spec, json_path = quirky
    argv = ["compute", "--dataset", spec, "--method", "gt"]
    assert cli.main(argv + ["--out", str(tmp_path / "gt.ocp")]) == 0
    _assert_repaired(repair_lines, json_path)
    boxes, _ = ProposalStore.open(str(tmp_path / "gt.ocp")).get(0)
    assert boxes.tolist() == [CLIPPED]
    with _refused(json_path):
        cli.main(argv + ["--out", str(tmp_path / "strict.ocp"), "--strict"])
    assert not (tmp_path / "strict.ocp").exists()


def test_probe_strict_flag(quirky, repair_lines, tmp_path):
    from objcrop.pretrain.probe.cli import _load_data, build_parser, setup_cfg

    spec, json_path = quirky
    argv = ["--weights", "random", "--dataset-train", spec, "--dataset-test", spec, "--out", str(tmp_path / "probe")]
    train, _, classes = _load_data(setup_cfg(build_parser().parse_args(argv)))
    assert len(train) == 4 and classes == ["thing", "other"]
    _assert_repaired(repair_lines, json_path)
    strict_cfg = setup_cfg(build_parser().parse_args(argv + ["--strict"]))
    assert strict_cfg.DATA.STRICT is True
    with _refused(json_path):
        _load_data(strict_cfg)


def test_pretrain_data_strict_key(quirky, repair_lines, tmp_path):
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    spec, json_path = quirky
    opts = ["DATA.DATASET", spec, "DATA.PROPOSALS", "gt", "PRETRAIN.BATCH_SIZE", "2", "DATA.NUM_WORKERS", "0",
            "OUTPUT_DIR", str(tmp_path / "run")]
    assert get_pretrain_cfg().DATA.STRICT is False

    def build_data(*extra):
        cfg = merge_config(get_pretrain_cfg, None, opts + list(extra))
        return PretrainTrainer(cfg, DistContext(), logging.getLogger("test")).build_data()

    records, _, _ = build_data()
    assert len(records) == 4
    _assert_repaired(repair_lines, json_path)
    with _refused(json_path):
        build_data("DATA.STRICT", "True")


def test_views_stats_strict_flag(quirky, repair_lines, tmp_path):
    from objcrop.pretrain.views import cli

    spec, json_path = quirky
    argv = ["stats", "--dataset", spec, "--proposals", "gt", "--pairs", "1", "--no-progress",
            "--opts", "VIEWS.CROP_SIZE", "32"]
    assert cli.main(argv[:-3] + ["--json", str(tmp_path / "v.json")] + argv[-3:]) == 0
    _assert_repaired(repair_lines, json_path)
    with _refused(json_path):
        cli.main(argv[:-3] + ["--strict"] + argv[-3:])


def test_detect_train_strict_flag_and_key(quirky, repair_lines, tmp_path):
    from detectron2.data import DatasetCatalog

    from objcrop.detection.cli import _parser
    from objcrop.detection.train_net import setup

    spec, json_path = quirky
    argv = ["train", "--config-file", "demo/faster_rcnn_R_18_FPN_voc.yaml", "--weights", "none",
            "--dataset-train", spec, "--dataset-test", spec, "--output-dir", str(tmp_path / "det")]
    cfg = setup(_parser().parse_args(argv), seed=0, world_size=1)
    assert cfg.OBJCROP.STRICT_DATA is False
    records = DatasetCatalog.get(spec)  # what detectron2's loaders read
    assert records[0]["annotations"][0]["bbox"] == CLIPPED_XYWH
    _assert_repaired(repair_lines, json_path)
    for strict in (["--strict"], ["--opts", "OBJCROP.STRICT_DATA", "True"]):
        cfg = setup(_parser().parse_args(argv + strict), seed=0, world_size=1)
        assert cfg.OBJCROP.STRICT_DATA is True
        with _refused(json_path):
            DatasetCatalog.get(spec)
