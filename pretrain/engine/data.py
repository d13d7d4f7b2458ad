"""The pretraining data: records -> (image, boxes, mask) -> a view pair, sharded and resumable.

A dataset item is an image (all its boxes go to the view policy, which draws one) or, with the
released crop geometry, one proposal box (`item_mode`): then, as object-cropping-ssl's
`openimages_dataset_bing.py` lists each image once per box, an epoch is a pass over the boxes
(after PROPOSALS_TOPK) and item k hands the policy its image and that box alone.

Randomness is per sample: each (epoch, item) pair gets its own seed, handed to the view policy as
a torch.Generator. The views therefore do not depend on worker count, worker scheduling, world size
or on where a run was resumed, and a resumed run sees exactly the views the uninterrupted one saw.
"""
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from objcrop.datasets.boxes import gt_boxes, object_annotations
from objcrop.errors import ConfigError, DatasetError
from objcrop.pretrain.proposals.filters import ranked


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct, reproducible 63-bit seed for one image in one epoch."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class ShardedResumableSampler(Sampler):
    """DistributedSampler's order (a seeded shuffle per epoch, the tail dropped so every process gets
    the same count, process r taking items r, r+W, ...), cut to whole batches, plus a start position
    inside the epoch. Yields (dataset index, per-sample seed) keys.

    Global batch b holds the same images whatever the world size (up to the dropped tail), so a run may
    resume on another world size.
    """

    def __init__(self, num_items: int, batch_per_process: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.num_items, self.batch, self.rank, self.world, self.seed = num_items, batch_per_process, rank, world_size, seed
        self.batches_per_epoch = (num_items // world_size) // batch_per_process
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and skip the `start_batch` batches a resumed run already trained on."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.num_items, generator=g)
        order = order[: (self.num_items // self.world) * self.world]
        mine = order[self.rank::self.world][: self.batches_per_epoch * self.batch]
        for index in mine[self.start_batch * self.batch:].tolist():
            yield index, sample_seed(self.seed, self.epoch, index)


class BoxSource:
    """Where the object boxes of an image come from: "" (none), "gt" (annotations) or a proposal store."""

    def __init__(self, spec: str, topk: int = 0, with_masks: bool = False, soft_alpha: bool = False):
        # Masks are only read when a consumer (DiLo copy-paste) uses them: decoding them is wasted work otherwise.
        # soft_alpha (copy-paste MODE dilo): a store's continuous saliency map (get_alpha), DiLo's alpha.
        self.spec, self.topk, self.with_masks, self.soft_alpha = spec, topk, with_masks, soft_alpha
        self._store = None
        self.name = "none" if not spec else "gt" if spec == "gt" else self._store_name()

    def _open(self):
        if self._store is None:  # opened lazily: once per DataLoader worker
            from objcrop.pretrain.proposals import ProposalStore

            self._store = ProposalStore.open(self.spec)
        return self._store

    def _store_name(self) -> str:
        if not os.path.exists(self.spec):
            raise ConfigError(f"DATA.PROPOSALS: {self.spec}: proposal store not found (give a path written by "
                              f"`objcrop proposals`, 'gt' for annotated boxes, or '' for none)")
        meta = self._open().meta
        method = str(meta.get("method", "")) if isinstance(meta, dict) else ""
        return method or os.path.splitext(os.path.basename(self.spec.rstrip("/")))[0]

    def coverage(self, records: List[dict]) -> float:
        """Fraction of the records this source has an entry for."""
        if not self.spec or self.spec == "gt":
            return 1.0
        store = self._open()
        return sum(r["image_id"] in store for r in records) / max(1, len(records))

    def boxes(self, record: dict) -> np.ndarray:
        if not self.spec:
            return np.zeros((0, 4), np.float32)
        if self.spec == "gt":
            return gt_boxes(record)  # the one crowd rule of objcrop.datasets.boxes
        found = self._open().get(record["image_id"], default=None)
        if found is None:
            return np.zeros((0, 4), np.float32)  # the policy falls back to random crops (counted)
        boxes, scores = found
        if self.topk:  # the method's ranking (proposals.filters.ranked), as `proposals stats --top-k` counts it
            return ranked(boxes, scores)[0][: self.topk]
        return np.asarray(boxes, np.float32).reshape(-1, 4)

    def mask(self, record: dict, height: int, width: int) -> Optional[np.ndarray]:
        """The foreground for copy-paste, or None: a mask (uint8 [height, width]), or with soft_alpha a
        store's alpha (float32 in [0, 1], the continuous saliency map where it kept one)."""
        if not self.spec or not self.with_masks:
            return None
        if self.spec == "gt":  # the union of the annotated instance masks, as `proposals compute --method gt` stores
            from objcrop.pretrain.proposals.methods import annotation_mask

            return annotation_mask(object_annotations(record), height, width)
        store = self._open()
        if record["image_id"] not in store:
            return None
        return store.get_alpha(record["image_id"]) if self.soft_alpha else store.get_mask(record["image_id"])

    def __getstate__(self) -> Dict:  # an open store handle must not be copied into workers
        state = dict(self.__dict__)
        state["_store"] = None
        return state


ITEM_MODES = ("images", "boxes")


def item_mode(cfg) -> str:
    """"boxes" (one item per proposal box) for a box policy under VIEWS.GEOMETRY "released", else "images".

    One switch, not two: the released geometry is the released dataset's `__getitem__`, and that dataset
    lists an image once per box; a run of the released crops with objcrop's per-image sampling would be
    neither method. The random baseline uses no boxes, so its epoch stays a pass over images (as the
    released MoCo baseline's ImageFolder)."""
    views = cfg.VIEWS
    released = str(views.get("GEOMETRY", "objcrop")) == "released"
    return "boxes" if released and views.POLICY != "random" and cfg.DATA.PROPOSALS else "images"


def box_items(records: List[dict], box_source: BoxSource) -> np.ndarray:
    """[n, 2] int64 (record index, box index): every box of every record, after PROPOSALS_TOPK, in record order.

    Images without a box yield no item, as in the released code (an image appears once per entry of
    its box list, so an image with none is never sampled)."""
    counts = np.array([len(box_source.boxes(r)) for r in records], np.int64)
    record_index = np.repeat(np.arange(len(records), dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([record_index, np.arange(len(record_index), dtype=np.int64) - starts], axis=1)


def shrink_to_short_side(image: torch.Tensor, boxes: torch.Tensor, mask: Optional[torch.Tensor], size: int):
    """Resize so the shorter side is `size` (never enlarges); boxes and mask follow: a binary mask to the
    nearest pixel, a float alpha (DiLo's saliency map) bilinearly, so that it stays continuous."""
    from torchvision.transforms.v2 import functional as F

    h, w = image.shape[-2:]
    if not size or min(h, w) <= size:
        return image, boxes, mask
    scale = size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = F.resize(image, [nh, nw], antialias=True)
    boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=boxes.dtype)
    if mask is not None:
        soft = mask.is_floating_point()
        mode = F.InterpolationMode.BILINEAR if soft else F.InterpolationMode.NEAREST
        mask = F.resize(mask[None], [nh, nw], interpolation=mode, antialias=soft)[0]
    return image, boxes, mask


class ViewPairDataset(Dataset):
    """Item (index, seed) -> (view1, view2, has_boxes): one image read, pre-shrunk, cut into two views.

    items (from `box_items`): item k is (record, box): the policy gets that box alone; None: item k is record k."""

    def __init__(self, records: List[dict], policy, box_source: BoxSource, image_size: int = 0,
                 items: Optional[np.ndarray] = None, image_cache_mb: float = 0):
        self.records, self.policy, self.box_source, self.image_size = records, policy, box_source, image_size
        self.items = items
        self.images = DecodedImages(image_cache_mb)

    def __len__(self) -> int:
        return len(self.records) if self.items is None else len(self.items)

    def __getitem__(self, key: Tuple[int, int]):
        from torchvision import tv_tensors

        index, seed = key
        box_index = None
        if self.items is not None:
            index, box_index = (int(v) for v in self.items[index])
        record = self.records[index]
        image = torch.tensor(self.images.read(record["file_name"])).permute(2, 0, 1).contiguous()  # a writable copy
        boxes = self.box_source.boxes(record)
        if box_index is not None:
            boxes = boxes[box_index:box_index + 1]
        boxes = torch.from_numpy(np.ascontiguousarray(boxes))
        mask = self.box_source.mask(record, *image.shape[-2:])
        mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
        image, boxes, mask = shrink_to_short_side(image, boxes, mask, self.image_size)
        generator = torch.Generator().manual_seed(seed)
        view1, view2 = self.policy(tv_tensors.Image(image), boxes, mask=mask, generator=generator)
        return view1, view2, len(boxes) > 0


class DecodedImages:
    """read_image with this process's decoded images kept until they fill `limit_mb` (DATA.IMAGE_CACHE_MB).
    Each loader worker holds its own, and lives for the whole run (persistent workers), so from the
    second epoch on a dataset that fits is not decoded again; past the limit images are read each time.
    The cached arrays are read-only: the caller copies (torch.tensor) before anything changes pixels."""

    def __init__(self, limit_mb: float = 0):
        self.limit, self.used, self.cached = int(limit_mb * 2 ** 20), 0, {}

    def read(self, path: str) -> np.ndarray:
        from objcrop.datasets import read_image

        image = self.cached.get(path)
        if image is None:
            image = read_image(path)
            if self.used + image.nbytes <= self.limit:
                image.setflags(write=False)
                self.cached[path], self.used = image, self.used + image.nbytes
        return image


class DatasetBackgrounds:
    """`background_fn` for DiLo copy-paste's "image" backgrounds: another image of the same dataset."""

    def __init__(self, records: List[dict], image_size: int = 0):
        self.records, self.image_size = records, image_size

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        from objcrop.datasets import read_image

        index = int(torch.randint(len(self.records), (1,), generator=generator))
        image = torch.tensor(read_image(self.records[index]["file_name"])).permute(2, 0, 1).contiguous()
        return shrink_to_short_side(image, torch.zeros(0, 4), None, self.image_size)[0]


def _quiet_worker(_: int) -> None:
    # Each worker is one of several processes sharing few cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def build_loader(dataset: Dataset, sampler: ShardedResumableSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(
        dataset, batch_size=sampler.batch, sampler=sampler, num_workers=num_workers, drop_last=True,
        pin_memory=pin_memory, persistent_workers=num_workers > 0, worker_init_fn=_quiet_worker,
        # A private generator: creating the iterator must not draw from the global RNG, whose state
        # is checkpointed (a resumed run would otherwise draw differently from an uninterrupted one).
        generator=torch.Generator().manual_seed(0),
    )


def check_enough_data(num_items: int, batch: int, world: int, dataset: str, unit: str = "images") -> None:
    if (num_items // world) // (batch // world) < 1:
        raise DatasetError(f"{dataset}: {num_items} {unit} are fewer than one batch of {batch} "
                           f"(PRETRAIN.BATCH_SIZE); lower the batch size or use more {unit}")


def iterations_per_epoch(num_items: int, batch: int, world: int) -> int:
    return (num_items // world) // (batch // world)


