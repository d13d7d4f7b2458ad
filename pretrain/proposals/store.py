"""The proposal store: boxes and scores of every image, memory-mapped, readable with numpy alone.

One file, little-endian, every section aligned to 64 bytes:

    header   64 B   magic b"OBJCPRP\\0", version, flags, n_images, n_boxes, meta_len,
                    id_width, token (ties the optional mask file to this store)
    meta     json   (method, parameters, dataset, ...), padded
    ids      n_images x int64, or n_images x S{id_width} utf-8: sorted, so that an image
                    is found by binary search (np.searchsorted) on the memory map
    offsets  (n_images + 1) x int64: image i owns boxes[offsets[i]:offsets[i + 1]]
    boxes    n_boxes x 4 float32, XYXY in original image pixels
    scores   n_boxes float32

Opening reads the header and the meta only (a 1M-image store opens in milliseconds); a
lookup is O(log n) reads of the mapped id column. The file size is checked against the
header, so a truncated or foreign file is refused with a message naming it.

Saliency masks (for DiLo copy-paste) live in an optional sibling file `<path>.masks`:

    header   64 B   magic b"OBJCMSK\\0", version, n_images, n_runs, token
    shapes   n_images x 4 int32 (mask height, mask width, image height, image width); 0 = no mask
    offsets  (n_images + 1) x int64 into runs
    runs     n_runs uint32: row-major run lengths, alternating 0s and 1s, starting with 0s

A mask may carry the continuous saliency map it was thresholded from, DiLo's soft alpha
(`SaliencyMask`; `get_alpha`): its runs are then followed by ALPHA_MARK (0xFFFFFFFF, longer than
any run of a stored mask), the byte length of the zlib-compressed uint8 map (0..255, the mask's
size; a PNG's worth of data, as DiLo stores its maps) and those bytes packed into uint32 words.
A mask file holding any such map is version 2; files without one are written as version 1, byte
for byte as before, and both versions are read.

Writing is atomic (objcrop.io), masks first, so a store file always has its masks beside it.
"""
import hashlib
import json
import os
import struct
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from objcrop.io import atomic_path
from objcrop.pretrain.proposals.store_format import (ALPHA_MARK, FORMAT_VERSION, MASK_VERSION_ALPHA,  # noqa: F401
                                                     ProposalStoreError, SaliencyMask, _aligned, _map_file, _open_masks,
                                                     _pad, _resize_nearest, _section, _write_masks, decode_mask_rle,
                                                     decode_saliency, encode_mask_rle, mask_path, split_runs)

__all__ = ["ProposalStore", "ProposalStoreError", "SaliencyMask", "encode_mask_rle", "decode_mask_rle",
           "FORMAT_VERSION"]

MAGIC = b"OBJCPRP\0"
_HEADER = struct.Struct("<8sIIQQQI4x8s")      # magic, version, flags, n_images, n_boxes, meta_len, id_width, token
_FLAG_STR_IDS = 1
_FLAG_MASKS = 2

ImageId = Union[int, str]


class MissingImageError(ProposalStoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# -- ids ----------------------------------------------------------------------------------
def _is_int_id(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _id_column(ids: Sequence[ImageId]) -> np.ndarray:
    """int64 column when every id is an integer, else fixed-width utf-8 bytes."""
    if all(_is_int_id(i) for i in ids):
        return np.asarray(ids, dtype=np.int64).reshape(-1)
    encoded = [str(i).encode("utf-8") for i in ids]
    width = max((len(e) for e in encoded), default=1) or 1
    return np.asarray(encoded, dtype=f"S{width}")


class ProposalStore:
    """Read access to a store file. `ProposalStore.open(path)`; `ProposalStore.write(...)`."""

    def __init__(self, path: str, mm, header: Tuple, meta: Dict[str, Any], sections: Dict[str, np.ndarray]):
        self.path = path
        self._mm = mm
        _, self.version, self._flags, self._n, self._n_boxes, _, self._id_width, self._token = header
        self.meta = meta
        self._ids = sections["ids"]
        self._offsets = sections["offsets"]
        self._boxes = sections["boxes"]
        self._scores = sections["scores"]
        self._masks: Optional[Dict[str, np.ndarray]] = None
        self._image_ids: Optional[List[ImageId]] = None

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> "ProposalStore":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ProposalStoreError(f"{path}: proposal store not found")
        size = os.path.getsize(path)
        if size < _HEADER.size:
            raise ProposalStoreError(f"{path}: not an objcrop proposal store (only {size} bytes; truncated or foreign)")
        with open(path, "rb") as f:
            raw = f.read(_HEADER.size)
        header = _HEADER.unpack(raw)
        magic, version, flags, n, n_boxes, meta_len, id_width, _ = header
        if magic != MAGIC:
            raise ProposalStoreError(f"{path}: not an objcrop proposal store (bad magic {magic[:8]!r})")
        if version != FORMAT_VERSION:
            raise ProposalStoreError(f"{path}: proposal store format version {version}; this objcrop reads version {FORMAT_VERSION}")
        layout = _layout(n, n_boxes, meta_len, id_width)
        if size != layout["end"]:
            raise ProposalStoreError(f"{path}: truncated or damaged proposal store "
                                     f"({size} bytes, its header describes {layout['end']})")
        mm = _map_file(path)
        try:
            meta = json.loads(bytes(mm[_HEADER.size:_HEADER.size + meta_len]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProposalStoreError(f"{path}: damaged proposal store (unreadable meta: {e})") from e
        id_dtype = np.dtype(np.int64) if not flags & _FLAG_STR_IDS else np.dtype(f"S{id_width}")
        sections = {
            "ids": _section(mm, layout["ids"], id_dtype, (n,)),
            "offsets": _section(mm, layout["offsets"], np.int64, (n + 1,)),
            "boxes": _section(mm, layout["boxes"], np.float32, (n_boxes, 4)),
            "scores": _section(mm, layout["scores"], np.float32, (n_boxes,)),
        }
        offsets = sections["offsets"]
        if int(offsets[0]) != 0 or int(offsets[-1]) != n_boxes:
            raise ProposalStoreError(f"{path}: damaged proposal store (box offsets do not span the {n_boxes} boxes)")
        return cls(path, mm, header, meta, sections)

    # -- reading ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._n)

    @property
    def num_boxes(self) -> int:
        return int(self._n_boxes)

    @property
    def has_masks(self) -> bool:
        return bool(self._flags & _FLAG_MASKS)

    @property
    def image_ids(self) -> List[ImageId]:
        """All image ids, sorted (ints, or strs)."""
        if self._image_ids is None:
            if self._flags & _FLAG_STR_IDS:
                self._image_ids = [b.decode("utf-8") for b in self._ids.tolist()]
            else:
                self._image_ids = self._ids.tolist()
        return self._image_ids

    def boxes_per_image(self) -> np.ndarray:
        """Number of boxes of each image, in `image_ids` order."""
        return np.diff(np.asarray(self._offsets))

    def all_boxes(self) -> np.ndarray:
        """Every box of the store, [num_boxes, 4], read-only memory map (images in id order)."""
        return self._boxes

    def index_of(self, image_id: ImageId) -> Optional[int]:
        """Row of `image_id`, or None. Binary search on the memory-mapped id column."""
        key = self._key(image_id)
        if key is None:
            return None
        row = int(np.searchsorted(self._ids, key))
        if row < self._n and self._ids[row] == key:
            return row
        return None

    def __contains__(self, image_id: ImageId) -> bool:
        return self.index_of(image_id) is not None

    _RAISE = object()

    def get(self, image_id: ImageId, default: Any = _RAISE) -> Tuple[np.ndarray, np.ndarray]:
        """(boxes float32[n, 4] XYXY original pixels, scores float32[n]) of one image (copies)."""
        row = self.index_of(image_id)
        if row is None:
            if default is not ProposalStore._RAISE:
                return default
            raise MissingImageError(f"{self.path}: no proposals for image id {image_id!r} "
                                    f"(the store holds {len(self)} images; computed for another dataset?)")
        start, stop = int(self._offsets[row]), int(self._offsets[row + 1])
        return np.array(self._boxes[start:stop]), np.array(self._scores[start:stop])

    def items(self) -> Iterable[Tuple[ImageId, np.ndarray, np.ndarray]]:
        offsets = np.asarray(self._offsets)
        for row, image_id in enumerate(self.image_ids):
            a, b = offsets[row], offsets[row + 1]
            yield image_id, np.array(self._boxes[a:b]), np.array(self._scores[a:b])

    def get_mask(self, image_id: ImageId) -> Optional[np.ndarray]:
        """Saliency / foreground mask uint8[H, W] (0/1) at the original image size, or None."""
        stored = self._stored_mask(image_id)
        if stored is None:
            return None
        runs, mh, mw, height, width = stored
        return _resize_nearest(decode_mask_rle(runs, mh, mw), height, width)

    def _stored_mask(self, image_id: ImageId):
        """(encoded runs, stored h, w, image h, w) of an image's mask, or None when it has none."""
        if not self.has_masks:
            return None
        row = self.index_of(image_id)
        if row is None:
            raise MissingImageError(f"{self.path}: no proposals for image id {image_id!r}")
        masks = self._mask_sections()
        mh, mw, height, width = (int(x) for x in masks["shapes"][row])
        if mh == 0 or mw == 0:
            return None
        a, b = int(masks["offsets"][row]), int(masks["offsets"][row + 1])
        return masks["runs"][a:b], mh, mw, height, width

    def get_alpha(self, image_id: ImageId) -> Optional[np.ndarray]:
        """DiLo's alpha, float32 [H, W] in [0, 1] at the original image size, or None without a mask:
        the continuous saliency map where the store kept one (bilinear upsampling), else the
        binary mask as 0/1 (ground-truth masks; stores written before soft maps were kept)."""
        stored = self._stored_mask(image_id)
        if stored is None:
            return None
        encoded, mh, mw, height, width = stored
        runs, words = split_runs(encoded)
        if words is None:
            return _resize_nearest(decode_mask_rle(runs, mh, mw), height, width).astype(np.float32)
        try:
            saliency = decode_saliency(words, mh, mw)
        except ProposalStoreError as e:
            raise ProposalStoreError(f"{mask_path(self.path)}: image {image_id!r}: {e}") from e
        if (mh, mw) != (height, width):
            import cv2

            saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
        return saliency.astype(np.float32) / 255.0

    @property
    def has_soft_masks(self) -> bool:
        """Whether the mask file holds continuous saliency maps (a version-2 mask file)."""
        return self.has_masks and int(self._mask_sections()["version"]) >= MASK_VERSION_ALPHA

    def _key(self, image_id: ImageId):
        if self._flags & _FLAG_STR_IDS:
            return str(image_id).encode("utf-8")
        if _is_int_id(image_id):
            return np.int64(image_id)
        try:
            return np.int64(int(str(image_id)))
        except ValueError:
            return None

    def _mask_sections(self) -> Dict[str, np.ndarray]:
        if self._masks is None:
            self._masks = _open_masks(mask_path(self.path), self._n, self._token)
        return self._masks

    def __repr__(self) -> str:
        return (f"ProposalStore({self.path!r}, images={len(self)}, boxes={self.num_boxes}, "
                f"method={self.meta.get('method')!r}, masks={self.has_masks})")

    # -- writing ------------------------------------------------------------------------
    @staticmethod
    def write(path: str, items: Union[Mapping[ImageId, Tuple], Iterable[Tuple[ImageId, Any, Any]]],
              meta: Optional[Dict[str, Any]] = None,
              masks: Optional[Mapping[ImageId, Optional[np.ndarray]]] = None) -> str:
        """Write a store atomically. items: {image_id: (boxes [n,4] XYXY, scores [n])} or (id, boxes, scores) triples.

        masks (optional): {image_id: uint8[h, w] mask, or (runs, (h, w), (H, W)) already encoded}.
        A mask smaller than its image (computed on a downscaled copy) is kept at its own size
        and upsampled on reading; pass (runs, (h, w), (H, W)) to record the original size.
        """
        pairs = items.items() if isinstance(items, Mapping) else ((i, b, s) for i, b, s in items)
        ids, box_list, score_list = [], [], []
        for entry in pairs:
            image_id, (boxes, scores) = (entry[0], entry[1]) if len(entry) == 2 else (entry[0], entry[1:])
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            scores = np.asarray(scores, dtype=np.float32).reshape(-1)
            if len(boxes) != len(scores):
                raise ProposalStoreError(f"{path}: image {image_id!r} has {len(boxes)} boxes but {len(scores)} scores")
            ids.append(image_id)
            box_list.append(boxes)
            score_list.append(scores)
        counts = np.asarray([len(b) for b in box_list], dtype=np.int64)
        boxes = np.concatenate(box_list) if box_list else np.zeros((0, 4), np.float32)
        scores = np.concatenate(score_list) if score_list else np.zeros(0, np.float32)
        return ProposalStore.write_arrays(path, ids, counts, boxes, scores, meta, masks)

    @staticmethod
    def write_arrays(path: str, ids: Sequence[ImageId], counts: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                     meta: Optional[Dict[str, Any]] = None,
                     masks: Optional[Mapping[ImageId, Any]] = None) -> str:
        """Vectorised writer: image ids[i] owns the next counts[i] rows of boxes / scores."""
        path = os.fspath(path)
        column = _id_column(list(ids))
        order = np.argsort(column, kind="stable")
        column = column[order]
        if len(column) > 1 and (column[1:] == column[:-1]).any():
            dup = column[1:][column[1:] == column[:-1]][0]
            raise ProposalStoreError(f"{path}: duplicate image id {dup!r}")
        counts = np.asarray(counts, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])
        if starts[-1] != len(boxes) or len(boxes) != len(scores):
            raise ProposalStoreError(f"{path}: {len(boxes)} boxes / {len(scores)} scores do not match the counts ({starts[-1]})")
        # Gather the boxes in sorted-id order.
        sorted_counts = counts[order]
        gather = np.repeat(starts[:-1][order] - np.concatenate([[0], np.cumsum(sorted_counts)])[:-1], sorted_counts)
        gather = gather + np.arange(int(sorted_counts.sum()))
        boxes = np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4)[gather])
        scores = np.ascontiguousarray(np.asarray(scores, np.float32).reshape(-1)[gather])
        offsets = np.concatenate([[0], np.cumsum(sorted_counts)]).astype(np.int64)

        flags = (_FLAG_STR_IDS if column.dtype.kind == "S" else 0) | (_FLAG_MASKS if masks is not None else 0)
        id_width = column.dtype.itemsize if column.dtype.kind == "S" else 0
        token = hashlib.sha256(column.tobytes() + offsets.tobytes() + boxes.tobytes()).digest()[:8]
        meta_bytes = json.dumps(dict(meta or {}, format_version=FORMAT_VERSION), sort_keys=True).encode("utf-8")

        if masks is not None:
            id_list = list(ids)
            sorted_ids = [id_list[i] for i in order.tolist()]
            _write_masks(mask_path(path), sorted_ids, masks, token)
        elif os.path.exists(mask_path(path)):
            os.remove(mask_path(path))  # a stale sibling from an earlier store of this name

        header = _HEADER.pack(MAGIC, FORMAT_VERSION, flags, len(column), len(boxes), len(meta_bytes), id_width, token)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(meta_bytes + b"\0" * _pad(_HEADER.size + len(meta_bytes)))
                for array in (column, offsets, boxes, scores):
                    data = array.tobytes()
                    f.write(data + b"\0" * _pad(len(data)))
                f.flush()
                os.fsync(f.fileno())
        return path


def _layout(n: int, n_boxes: int, meta_len: int, id_width: int) -> Dict[str, int]:
    pos = _aligned(_HEADER.size + meta_len)
    out = {}
    for name, nbytes in (("ids", n * (id_width or 8)), ("offsets", (n + 1) * 8),
                         ("boxes", n_boxes * 16), ("scores", n_boxes * 4)):
        out[name] = pos
        pos += _aligned(nbytes)
    out["end"] = pos
    return out


