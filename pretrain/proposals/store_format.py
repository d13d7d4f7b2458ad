"""Low-level pieces of the proposal store's files (objcrop.pretrain.proposals.store): the error type,
64-byte alignment, read-only memory maps, and the optional mask file `<store>.masks` with its
binary run lengths and, since mask-file version 2, the continuous saliency maps (DiLo's soft
alpha). The layout is described in store.py's docstring.
"""
import mmap
import os
import struct
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from objcrop.errors import ObjcropError
from objcrop.io import atomic_path

FORMAT_VERSION = 1
MASK_MAGIC = b"OBJCMSK\0"
MASK_VERSION_ALPHA = 2         # a mask file holding soft saliency maps
ALPHA_MARK = 0xFFFFFFFF        # ends the binary runs of a mask that carries its saliency map
_MASK_HEADER = struct.Struct("<8sIxxxxQQ8s")  # magic, version, n_images, n_runs, token
_ALIGN = 64

ImageId = Union[int, str]


class ProposalStoreError(ObjcropError):
    """A proposal store file that is missing, truncated, foreign or inconsistent."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def _aligned(n: int) -> int:
    return n + _pad(n)


# -- masks as run lengths ---------------------------------------------------------------
class SaliencyMask(np.ndarray):
    """A binary foreground mask (uint8 0/1) carrying the continuous saliency map it was cut from.

    `.saliency` is uint8 [H, W] (0..255), the mask's shape: DiLo composites with this map, not
    with the mask. Everything that reads a mask sees the plain binary mask; `encode_mask_rle`
    stores the map too, and `ProposalStore.get_alpha` gives it back.
    """

    def __new__(cls, mask: np.ndarray, saliency: np.ndarray) -> "SaliencyMask":
        obj = np.asarray(mask, dtype=np.uint8).view(cls)
        saliency = np.asarray(saliency)
        if saliency.shape != obj.shape:
            raise ProposalStoreError(f"saliency map of shape {saliency.shape} does not match its mask {obj.shape}")
        obj.saliency = saliency.astype(np.uint8)
        return obj

    def __array_finalize__(self, obj) -> None:
        # Slices and copies of other shapes are plain masks: a map only belongs to a mask of its size.
        saliency = getattr(obj, "saliency", None)
        self.saliency = saliency if saliency is not None and saliency.shape == self.shape else None


def encode_mask_rle(mask: np.ndarray) -> np.ndarray:
    """Row-major run lengths (uint32) of a binary mask, alternating 0s and 1s, starting with 0s,
    followed by the compressed saliency map when the mask is a `SaliencyMask`."""
    flat = np.asarray(mask).ravel() != 0
    if flat.size >= ALPHA_MARK:
        raise ProposalStoreError(f"mask of {flat.size} pixels is too large for the store's uint32 runs")
    if flat.size == 0:
        return np.zeros(0, np.uint32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        runs = np.concatenate([[0], runs])
    runs = runs.astype(np.uint32)
    saliency = getattr(mask, "saliency", None)
    if saliency is None:
        return runs
    blob = zlib.compress(np.ascontiguousarray(saliency, np.uint8).tobytes(), 6)
    words = np.frombuffer(blob + b"\0" * ((-len(blob)) % 4), dtype="<u4")
    return np.concatenate([runs, np.asarray([ALPHA_MARK, len(blob)], np.uint32), words.astype(np.uint32)])


def split_runs(runs: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(the binary runs, the words of the saliency map after ALPHA_MARK or None)."""
    runs = np.asarray(runs)
    marks = np.flatnonzero(runs == ALPHA_MARK)  # a run never reaches the mark; the first one is it
    if len(marks) == 0:
        return runs, None
    return runs[:marks[0]], runs[marks[0] + 1:]


def decode_mask_rle(runs: np.ndarray, height: int, width: int) -> np.ndarray:
    runs, _ = split_runs(runs)
    values = (np.arange(len(runs)) % 2).astype(np.uint8)
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    if flat.size != height * width:
        raise ProposalStoreError(f"mask runs cover {flat.size} pixels, expected {height}x{width}")
    return flat.reshape(height, width)


def decode_saliency(words: np.ndarray, height: int, width: int) -> np.ndarray:
    """The uint8 [height, width] saliency map from the words after ALPHA_MARK."""
    words = np.asarray(words)
    if len(words) < 1:
        raise ProposalStoreError("saliency map: missing its length")
    length = int(words[0])
    data = np.ascontiguousarray(words[1:], dtype="<u4").tobytes()[:length]
    try:
        raw = zlib.decompress(data)
    except zlib.error as e:
        raise ProposalStoreError(f"saliency map: damaged ({e})") from e
    if len(raw) != height * width:
        raise ProposalStoreError(f"saliency map holds {len(raw)} pixels, expected {height}x{width}")
    return np.frombuffer(raw, np.uint8).reshape(height, width)


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    rows = (np.arange(height) * mask.shape[0]) // height
    cols = (np.arange(width) * mask.shape[1]) // width
    return mask[rows][:, cols]


def mask_path(path: str) -> str:
    return os.fspath(path) + ".masks"


def _map_file(path: str):
    """The whole file, read-only memory-mapped (pages are read only when touched)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _section(mm, start: int, dtype, shape) -> np.ndarray:
    # Plain ndarrays over the mmap (np.frombuffer), not np.memmap slices: every operation on an
    # np.memmap builds a memmap subclass object, which roughly doubled the time of one lookup.
    dtype = np.dtype(dtype)
    count = int(np.prod(shape)) if shape else 1
    return np.frombuffer(mm, dtype=dtype, count=count, offset=start).reshape(shape)


def _encoded_mask(image_id, value) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]:
    if value is None:
        return np.zeros(0, np.uint32), (0, 0), (0, 0)
    if isinstance(value, tuple) and len(value) == 3:
        runs, shape, size = value
        return np.asarray(runs, np.uint32), tuple(int(x) for x in shape), tuple(int(x) for x in size)
    mask = np.asanyarray(value)  # keeps a SaliencyMask and its map
    if mask.ndim != 2:
        raise ProposalStoreError(f"mask of image {image_id!r}: expected [H, W], got shape {mask.shape}")
    return encode_mask_rle(mask), mask.shape, mask.shape


def _write_masks(path: str, sorted_ids: List[ImageId], masks: Mapping[ImageId, Any], token: bytes) -> None:
    shapes = np.zeros((len(sorted_ids), 4), np.int32)
    runs_list = []
    soft = False
    for row, image_id in enumerate(sorted_ids):
        runs, shape, size = _encoded_mask(image_id, masks.get(image_id))
        binary, words = split_runs(runs)
        soft |= words is not None
        if runs.size and int(binary.astype(np.int64).sum()) != shape[0] * shape[1]:
            raise ProposalStoreError(f"{path}: mask runs of image {image_id!r} do not cover {shape[0]}x{shape[1]} pixels")
        shapes[row] = (*shape, *size)
        runs_list.append(runs)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in runs_list])]).astype(np.int64)
    runs = np.concatenate(runs_list).astype(np.uint32) if runs_list else np.zeros(0, np.uint32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            version = MASK_VERSION_ALPHA if soft else FORMAT_VERSION
            f.write(_MASK_HEADER.pack(MASK_MAGIC, version, len(sorted_ids), len(runs), token))
            f.write(b"\0" * _pad(_MASK_HEADER.size))
            for array in (shapes, offsets, runs):
                data = array.tobytes()
                f.write(data + b"\0" * _pad(len(data)))
            f.flush()
            os.fsync(f.fileno())


def _open_masks(path: str, n: int, token: bytes) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ProposalStoreError(f"{path}: the store's mask file is missing")
    size = os.path.getsize(path)
    if size < _MASK_HEADER.size:
        raise ProposalStoreError(f"{path}: truncated or foreign mask file ({size} bytes)")
    with open(path, "rb") as f:
        magic, version, n_images, n_runs, file_token = _MASK_HEADER.unpack(f.read(_MASK_HEADER.size))
    if magic != MASK_MAGIC:
        raise ProposalStoreError(f"{path}: not an objcrop proposal mask file (bad magic {magic!r})")
    if version not in (FORMAT_VERSION, MASK_VERSION_ALPHA):
        raise ProposalStoreError(f"{path}: mask file format version {version}; this objcrop reads versions "
                                 f"{FORMAT_VERSION} and {MASK_VERSION_ALPHA}")
    if n_images != n or file_token != token:
        raise ProposalStoreError(f"{path}: mask file belongs to another proposal store (rewrite the store)")
    pos = _aligned(_MASK_HEADER.size)
    starts = {}
    for name, nbytes in (("shapes", n * 16), ("offsets", (n + 1) * 8), ("runs", n_runs * 4)):
        starts[name] = pos
        pos += _aligned(nbytes)
    if size != pos:
        raise ProposalStoreError(f"{path}: truncated or damaged mask file ({size} bytes, its header describes {pos})")
    mm = _map_file(path)
    return {"shapes": _section(mm, starts["shapes"], np.int32, (n, 4)),
            "offsets": _section(mm, starts["offsets"], np.int64, (n + 1,)),
            "runs": _section(mm, starts["runs"], np.uint32, (n_runs,)), "version": np.int64(version)}
