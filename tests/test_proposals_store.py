"""The proposal store: round trip, ids, masks, damaged files, atomic rewrite."""
import os

import numpy as np
import pytest

from objcrop.errors import ObjcropError
from objcrop.pretrain.proposals.store import (ProposalStore, ProposalStoreError, decode_mask_rle,
                                              encode_mask_rle, mask_path)


def _items(rng, ids):
    out = {}
    for image_id in ids:
        n = int(rng.integers(0, 6))
        xy = rng.random((n, 2), dtype=np.float32) * 50
        out[image_id] = (np.concatenate([xy, xy + 1 + rng.random((n, 2), dtype=np.float32) * 40], 1),
                         rng.random(n, dtype=np.float32))
    return out


@pytest.mark.parametrize("ids", [[f"img_{i:03d}" for i in (5, 1, 30, 2)], [17, 3, 250, 9], ["a", 7, "ß-äé"]])
def test_round_trip_preserves_every_box_and_sorts_ids(tmp_path, ids):
    items = _items(np.random.default_rng(0), ids)
    path = ProposalStore.write(str(tmp_path / "p.ocp"), items, {"method": "test", "k": [1, 2]})
    store = ProposalStore.open(path)
    assert len(store) == len(ids) and store.meta["method"] == "test" and store.meta["k"] == [1, 2]
    assert store.num_boxes == sum(len(b) for b, _ in items.values())
    for image_id, (boxes, scores) in items.items():
        got_boxes, got_scores = store.get(image_id)
        assert got_boxes.dtype == np.float32 and got_boxes.shape == (len(boxes), 4)
        np.testing.assert_array_equal(got_boxes, boxes)
        np.testing.assert_array_equal(got_scores, scores)
        assert image_id in store
    if all(isinstance(i, int) for i in ids):
        assert store.image_ids == sorted(ids)
        assert np.array_equal(store.get(str(ids[0]))[0], items[ids[0]][0])  # "17" finds 17
    else:
        assert store.image_ids == sorted(str(i) for i in ids)


def test_unknown_image_raises_naming_the_store_or_returns_default(tmp_path):
    store = ProposalStore.open(ProposalStore.write(str(tmp_path / "p.ocp"), {1: ([[0, 0, 2, 2]], [1.0])}))
    with pytest.raises(ObjcropError, match="p.ocp.*image id 2"):
        store.get(2)
    assert store.get(2, None) is None and "x" not in store


def test_writing_is_independent_of_insertion_order(tmp_path):
    items = _items(np.random.default_rng(1), list(range(40)))
    a = ProposalStore.write(str(tmp_path / "a.ocp"), items, {"m": 1})
    b = ProposalStore.write(str(tmp_path / "b.ocp"), dict(reversed(list(items.items()))), {"m": 1})
    assert open(a, "rb").read() == open(b, "rb").read()


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(ProposalStoreError, match="duplicate image id"):
        ProposalStore.write(str(tmp_path / "d.ocp"), [(1, [[0, 0, 1, 1]], [1]), (1, [[0, 0, 2, 2]], [1])])


def test_masks_round_trip_and_upsample_to_the_image(tmp_path):
    rng = np.random.default_rng(2)
    full = (rng.random((30, 40)) > 0.6).astype(np.uint8)
    small = np.zeros((15, 20), np.uint8)
    small[3:9, 5:15] = 1
    masks = {"a": full, "b": (encode_mask_rle(small), (15, 20), (30, 40)), "c": None}
    items = {k: ([[1, 1, 5, 5]], [1.0]) for k in masks}
    store = ProposalStore.open(ProposalStore.write(str(tmp_path / "m.ocp"), items, {}, masks=masks))
    assert store.has_masks
    np.testing.assert_array_equal(store.get_mask("a"), full)
    up = store.get_mask("b")
    assert up.shape == (30, 40) and up[6:18, 10:30].all() and up.sum() == 4 * small.sum()
    assert store.get_mask("c") is None


def test_rle_handles_masks_starting_with_foreground():
    m = np.ones((3, 4), np.uint8)
    m[1, 1] = 0
    runs = encode_mask_rle(m)
    assert runs[0] == 0
    np.testing.assert_array_equal(decode_mask_rle(runs, 3, 4), m)


def _store(tmp_path, masks=False):
    items = _items(np.random.default_rng(3), list(range(20)))
    m = {k: np.ones((4, 4), np.uint8) for k in items} if masks else None
    return ProposalStore.write(str(tmp_path / "s.ocp"), items, {"method": "t"}, masks=m)


def test_truncated_store_is_rejected_naming_the_file(tmp_path):
    path = _store(tmp_path)
    data = open(path, "rb").read()
    for cut in (10, len(data) // 2, len(data) - 1):
        open(path, "wb").write(data[:cut])
        with pytest.raises(ProposalStoreError, match=r"s\.ocp.*(truncated|foreign)"):
            ProposalStore.open(path)


def test_foreign_and_newer_files_are_rejected(tmp_path):
    foreign = tmp_path / "foreign.ocp"
    np.savez(str(tmp_path / "x.npz"), a=np.zeros(100))
    os.replace(str(tmp_path / "x.npz"), str(foreign))
    with pytest.raises(ProposalStoreError, match="foreign.ocp: not an objcrop proposal store"):
        ProposalStore.open(str(foreign))
    path = _store(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[8] = 99  # the version field
    open(path, "wb").write(bytes(data))
    with pytest.raises(ProposalStoreError, match="format version 99"):
        ProposalStore.open(path)
    with pytest.raises(ProposalStoreError, match="not found"):
        ProposalStore.open(str(tmp_path / "missing.ocp"))


def test_damaged_or_mismatched_mask_file_is_rejected(tmp_path):
    path = _store(tmp_path, masks=True)
    data = open(mask_path(path), "rb").read()
    open(mask_path(path), "wb").write(data[:-8])
    with pytest.raises(ProposalStoreError, match=r"s\.ocp\.masks: truncated"):
        ProposalStore.open(path).get_mask(0)
    # a mask file left from another store of the same name
    other = ProposalStore.write(str(tmp_path / "o.ocp"), {0: ([[0, 0, 1, 1]], [1])}, {}, masks={0: np.ones((2, 2))})
    os.replace(mask_path(other), mask_path(path))
    with pytest.raises(ProposalStoreError, match="another proposal store"):
        ProposalStore.open(path).get_mask(0)


def test_rewriting_without_masks_removes_the_stale_sibling(tmp_path):
    path = _store(tmp_path, masks=True)
    assert os.path.exists(mask_path(path))
    _store(tmp_path, masks=False)
    assert not os.path.exists(mask_path(path)) and ProposalStore.open(path).get_mask(0) is None


def test_large_store_opens_without_reading_everything(tmp_path):
    n = 200_000
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 4, n)
    ids = [f"{i:09d}" for i in rng.permutation(n)]
    total = int(counts.sum())
    boxes = rng.random((total, 4), dtype=np.float32)
    path = ProposalStore.write_arrays(str(tmp_path / "big.ocp"), ids, counts, boxes, np.arange(total, dtype=np.float32))
    import time

    t = time.perf_counter()
    store = ProposalStore.open(path)
    assert time.perf_counter() - t < 0.2
    position = {image_id: i for i, image_id in enumerate(ids)}
    starts = np.concatenate([[0], np.cumsum(counts)])
    for image_id in ids[:50]:
        i = position[image_id]
        got, scores = store.get(image_id)
        np.testing.assert_array_equal(got, boxes[starts[i]:starts[i + 1]])
        np.testing.assert_array_equal(scores, np.arange(starts[i], starts[i + 1], dtype=np.float32))


def _soft_map(height, width):
    ys, xs = np.mgrid[0:height, 0:width]
    return np.clip(255 - 8 * np.hypot(ys - height / 2, xs - width / 2), 0, 255).astype(np.uint8)


def test_saliency_maps_are_kept_beside_their_masks(tmp_path):
    from objcrop.pretrain.proposals.store import SaliencyMask

    sal = _soft_map(12, 16)
    binary = (sal > 128).astype(np.uint8)
    masks = {"soft": SaliencyMask(binary, sal), "hard": binary, "none": None}
    path = ProposalStore.write(str(tmp_path / "s.ocp"), {k: ([[0, 0, 4, 4]], [1.0]) for k in masks}, {}, masks=masks)
    store = ProposalStore.open(path)
    assert store.has_soft_masks
    np.testing.assert_array_equal(store.get_mask("soft"), binary)  # readers of the mask see the binary mask
    np.testing.assert_allclose(store.get_alpha("soft"), sal / 255.0, atol=1e-6)  # the map, losslessly
    np.testing.assert_array_equal(store.get_alpha("hard"), binary.astype(np.float32))
    assert store.get_alpha("none") is None and store.get_alpha("hard").dtype == np.float32


def test_a_saliency_map_computed_small_is_upsampled_smoothly(tmp_path):
    from objcrop.pretrain.proposals.store import SaliencyMask

    sal = _soft_map(10, 10)
    encoded = (encode_mask_rle(SaliencyMask(sal > 100, sal)), (10, 10), (40, 40))
    store = ProposalStore.open(ProposalStore.write(str(tmp_path / "u.ocp"), {0: ([[0, 0, 1, 1]], [1])}, {},
                                                   masks={0: encoded}))
    alpha = store.get_alpha(0)
    assert alpha.shape == (40, 40) and store.get_mask(0).shape == (40, 40)
    assert len(np.unique(alpha)) > len(np.unique(sal))  # interpolated, not blocks of nearest pixels


def test_binary_mask_files_are_unchanged_version_one(tmp_path):
    # Stores without saliency maps are written exactly as before, so older objcrop reads them.
    path = _store(tmp_path, masks=True)
    header = open(mask_path(path), "rb").read(12)
    assert header[:8] == b"OBJCMSK\0" and int.from_bytes(header[8:12], "little") == 1
    store = ProposalStore.open(path)
    assert not store.has_soft_masks
    np.testing.assert_array_equal(store.get_alpha(0), store.get_mask(0).astype(np.float32))


def test_a_damaged_saliency_map_names_the_file(tmp_path):
    from objcrop.pretrain.proposals.store import SaliencyMask

    sal = _soft_map(8, 8)
    runs = encode_mask_rle(SaliencyMask(sal > 100, sal))
    runs[-1] ^= 0x5A5A5A5A  # corrupt the compressed bytes
    path = ProposalStore.write(str(tmp_path / "d.ocp"), {0: ([[0, 0, 1, 1]], [1])}, {}, masks={0: (runs, (8, 8), (8, 8))})
    with pytest.raises(ProposalStoreError, match=r"d\.ocp\.masks: image 0: saliency map"):
        ProposalStore.open(path).get_alpha(0)


def test_saliency_proposals_keep_their_continuous_map(tmp_path):
    # The path `proposals compute --method saliency-*` takes: saliency_boxes -> encode_mask_rle -> store.
    from objcrop.pretrain.proposals.saliency import saliency_boxes

    sal = _soft_map(30, 40).astype(np.float32) / 255.0
    boxes, scores, mask = saliency_boxes(sal)
    encoded = (encode_mask_rle(mask), tuple(mask.shape), (30, 40))
    store = ProposalStore.open(ProposalStore.write(str(tmp_path / "sal.ocp"), {0: (boxes, scores)}, {},
                                                   masks={0: encoded}))
    np.testing.assert_array_equal(store.get_mask(0), np.asarray(mask))
    np.testing.assert_allclose(store.get_alpha(0), np.round(sal * 255) / 255.0, atol=1e-6)
    assert 0 < store.get_mask(0).mean() < 1 and len(np.unique(store.get_alpha(0))) > 2
