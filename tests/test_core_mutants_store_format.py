"""pretrain/proposals/store_format.py: the mask file's table, header checks and errors, pinned where mutation
testing (benchmarks/mutation.md) found a changed line that no test noticed. Pure and fast: small files in
tmp_path, written and read by the module's own helpers."""
import os
import zlib

import numpy as np
import pytest

from objcrop.pretrain.proposals.store_format import (FORMAT_VERSION, MASK_VERSION_ALPHA, _MASK_HEADER,
                                                     ProposalStoreError, SaliencyMask, _map_file, _open_masks,
                                                     _write_masks, decode_mask_rle, decode_saliency,
                                                     encode_mask_rle)

TOKEN = b"tok12345"


def _mask(rows, cols, seed=0):
    return (np.random.default_rng(seed).random((rows, cols)) > 0.5).astype(np.uint8)


def _write_and_open(tmp_path, ids, masks, n=None, token=TOKEN):
    path = str(tmp_path / "s.masks")
    _write_masks(path, ids, masks, TOKEN)
    return path, _open_masks(path, len(ids) if n is None else n, token)


def test_mask_table_rows_offsets_and_runs(tmp_path):
    """Guards against the table of a mask file: an image without a mask must read as shape (0, 0) and size
    (0, 0) with no runs, a stored (runs, shape, size) triple as given, and a 3-row mask as a mask (not as a
    triple because it has 3 items); the offsets hold n + 1 entries ending at the run count."""
    three_rows = _mask(3, 5)
    runs = encode_mask_rle(_mask(4, 6, seed=1))
    _, table = _write_and_open(tmp_path, ["a", "b", "c"], {"a": three_rows, "c": (list(runs), (4, 6), (8, 12))})
    assert table["shapes"].tolist() == [[3, 5, 3, 5], [0, 0, 0, 0], [4, 6, 8, 12]]
    n_a = len(encode_mask_rle(three_rows))
    assert table["offsets"].tolist() == [0, n_a, n_a, n_a + len(runs)]
    assert np.array_equal(decode_mask_rle(table["runs"][:n_a], 3, 5), three_rows)
    assert np.array_equal(table["runs"][n_a:], runs) and int(table["version"]) == FORMAT_VERSION


def test_one_saliency_map_anywhere_makes_the_file_version_2(tmp_path):
    """Guards against the soft-mask flag being overwritten by the next, binary mask (a version-1 file whose
    readers would not look for the saliency maps)."""
    sal = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    _, table = _write_and_open(tmp_path, [1, 2], {1: SaliencyMask(sal > 100, sal), 2: _mask(3, 4)})
    assert int(table["version"]) == MASK_VERSION_ALPHA


def test_an_empty_store_writes_a_readable_mask_file(tmp_path):
    _, table = _write_and_open(tmp_path, [], {})
    assert table["shapes"].shape == (0, 4) and table["offsets"].tolist() == [0] and table["runs"].size == 0


def test_write_errors_name_the_image_and_the_pixels(tmp_path):
    """Guards against write errors without the image or with the wrong dimensions in the message."""
    with pytest.raises(ProposalStoreError, match=r"mask of image 'x': expected \[H, W\], got shape \(2, 2, 2\)"):
        _write_masks(str(tmp_path / "a.masks"), ["x"], {"x": np.zeros((2, 2, 2))}, TOKEN)
    runs = encode_mask_rle(_mask(2, 3))
    with pytest.raises(ProposalStoreError, match=r"mask runs of image 'y' do not cover 4x5 pixels$"):
        _write_masks(str(tmp_path / "b.masks"), ["y"], {"y": (runs, (4, 5), (4, 5))}, TOKEN)


def test_open_rejects_another_store_by_count_or_by_token(tmp_path):
    """Guards against a mask file of another store being read when only its count or only its token differs."""
    path, _ = _write_and_open(tmp_path, [1, 2], {1: _mask(2, 2)})
    for n, token in ((3, TOKEN), (2, b"other123")):
        with pytest.raises(ProposalStoreError, match="belongs to another proposal store"):
            _open_masks(path, n, token)


def test_open_errors_say_what_is_wrong_with_the_file(tmp_path):
    """Guards against header checks that fail with no message, or misclassify a file of exactly the
    header's size (it is read, and its magic is what is wrong)."""
    path = tmp_path / "m.masks"
    with pytest.raises(ProposalStoreError, match="the store's mask file is missing"):
        _open_masks(str(path), 1, TOKEN)
    path.write_bytes(b"\0" * (_MASK_HEADER.size - 1))
    with pytest.raises(ProposalStoreError, match=rf"truncated or foreign mask file \({_MASK_HEADER.size - 1} bytes\)"):
        _open_masks(str(path), 1, TOKEN)
    path.write_bytes(b"\0" * _MASK_HEADER.size)
    with pytest.raises(ProposalStoreError, match="not an objcrop proposal mask file"):
        _open_masks(str(path), 1, TOKEN)
    good, _ = _write_and_open(tmp_path, [1], {1: _mask(2, 2)})
    data = bytearray(open(good, "rb").read())
    data[8:12] = (7).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ProposalStoreError, match=f"format version 7; this objcrop reads versions {FORMAT_VERSION} "
                                                 f"and {MASK_VERSION_ALPHA}"):
        _open_masks(str(path), 1, TOKEN)


def test_an_empty_file_maps_to_no_bytes(tmp_path):
    """Guards against mmap being asked for an empty file (it raises) or the empty map having content."""
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "one").write_bytes(b"x")
    assert _map_file(str(tmp_path / "e")) == b""
    assert _map_file(str(tmp_path / "one"))[:] == b"x"


def test_a_saliency_map_without_data_is_damaged_not_missing_its_length():
    """Guards against the length check accepting nothing or refusing a length word without data."""
    with pytest.raises(ProposalStoreError, match="saliency map: damaged"):
        decode_saliency(np.asarray([5], np.uint32), 1, 1)
    with pytest.raises(ProposalStoreError, match="^saliency map: missing its length$"):
        decode_saliency(np.zeros(0, np.uint32), 1, 1)


def test_offsets_of_seven_images_fill_exactly_one_aligned_block(tmp_path):
    """Guards against the offsets section's size (n + 1 int64s): with 7 images it is exactly 64 bytes, so a
    size computed for one entry more, or 9-byte entries, spills into a second block and the file reads as
    damaged."""
    ids = list(range(7))
    _, table = _write_and_open(tmp_path, ids, {i: _mask(2, 3, seed=i) for i in ids})
    assert table["offsets"].shape == (8,) and table["shapes"].shape == (7, 4)


def test_decoded_masks_are_uint8():
    """Guards against a decoded mask of another dtype (float64 masks take 8 times the memory of the
    uint8 masks every reader expects)."""
    mask = _mask(3, 4)
    assert decode_mask_rle(encode_mask_rle(mask), 3, 4).dtype == np.uint8


def test_mask_file_sections_start_on_64_byte_boundaries(tmp_path):
    """Guards against the alignment padding: every section (header, shapes, offsets, runs) is padded to a
    multiple of 64 bytes, which files written before rely on and the memory-mapped arrays are read at."""
    path, table = _write_and_open(tmp_path, [1, 2, 3], {1: _mask(5, 7), 3: _mask(4, 4, seed=2)})
    n_runs = len(table["runs"])
    expected = 64 + 64 + 64 + -(-4 * n_runs // 64) * 64  # header, 3x16 B shapes, 4x8 B offsets, the runs
    assert os.path.getsize(path) == expected


def test_a_saliency_map_is_stored_as_its_zlib_stream_in_uint32_words():
    """Guards against the stored saliency layout: the mark, the stream's byte length, then the level-6 zlib
    stream padded with fewer than 4 zero bytes, all uint32 (an int64 block would change every store's runs)."""
    sal = (np.arange(30, dtype=np.uint8) * 7).reshape(5, 6)
    runs = encode_mask_rle(SaliencyMask(sal > 80, sal))
    assert runs.dtype == np.uint32
    blob = zlib.compress(sal.tobytes(), 6)
    mark = int(np.flatnonzero(runs == 0xFFFFFFFF)[0])
    assert int(runs[mark + 1]) == len(blob)
    stored = runs[mark + 2:].astype("<u4").tobytes()
    padding = stored[len(blob):]
    assert stored[:len(blob)] == blob and padding == b"\0" * len(padding) and len(padding) < 4
