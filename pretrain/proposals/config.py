"""`objcrop proposals compute` defaults, in detectron2's idiom: a CfgNode in code that YAML and `--opts` override.

`get_proposals_cfg()` returns every key with its default; a YAML file (`eval_configs/proposals/*.yaml`,
any path, or the STORE.config.yaml a run wrote beside its store) overrides it, the command-line
flags (`COMPUTE_FLAGS`, each a shortcut for one key) override the file, and `--opts KEY VALUE`
overrides them all (objcrop.pretrain.cli_flags). `method_spec(cfg)` turns the config into the
MethodSpec that decides the store's content (and its meta), exactly as the flags did before.
"""
from objcrop.config import CfgNode
from objcrop.datasets.quirks import STRICT_HELP
from objcrop.errors import ConfigError
from objcrop.pretrain.cli_flags import Flag, cfg_get
from objcrop.pretrain.proposals.filters import BoxFilter
from objcrop.pretrain.proposals.methods import METHODS, MethodSpec


def get_proposals_cfg() -> CfgNode:
    cfg = CfgNode()

    cfg.PROPOSALS = CfgNode()
    # Proposal method, one of objcrop.pretrain.proposals.methods.METHODS (gt = annotation boxes, the
    # upper bound; file = boxes from PROPOSALS.FILE). Required.
    cfg.PROPOSALS.METHOD = ""
    # Image methods run on a copy whose longer side is at most this (boxes are mapped back to the
    # original pixels); 0 = full resolution.
    cfg.PROPOSALS.MAX_SIDE = 500
    # Selective search strategy: "fast" or "quality".
    cfg.PROPOSALS.SS_MODE = "fast"
    # SLIC segments of saliency-rbd / -gs / -mc.
    cfg.PROPOSALS.SUPERPIXELS = 200
    # Folder with OpenCV's trained BING model (opencv_contrib modules/saliency/samples/
    # ObjectnessTrainedModel); required by METHOD bing.
    cfg.PROPOSALS.BING_MODEL = ""
    # METHOD file: COCO detections json ([{image_id, bbox, score}]),
    # {image id or file name: [[x, y, w, h(, score)], ...]}, or a `.npy` file with object-cropping-ssl's
    # released boxes (layouts in objcrop/pretrain/proposals/released_boxes.py).
    cfg.PROPOSALS.FILE = ""

    cfg.DATA = CfgNode()
    # Dataset name or spec for objcrop.datasets.load_dataset (synth:DIR:train, coco_2017_train,
    # voc:DIR:trainval, folder:DIR). Required.
    cfg.DATA.DATASET = ""
    # Only the first N images (quick trials); null = all.
    cfg.DATA.LIMIT = None
    # Real datasets' quirks (boxes past the border, degenerate boxes, invalid polygons, unreadable
    # images in a folder): False repairs and counts them in one log line; True refuses them
    # (a DatasetError naming the file and annotation). objcrop/datasets/quirks.py.
    cfg.DATA.STRICT = False

    cfg.FILTER = CfgNode()
    # Box filters, in original pixels. null = the method's default: SoCo's for unsupervised methods
    # (min size 32 px capped at 0.1 of the shorter side, aspect ratio 1/3..3, area 0..1), none for gt and file.
    cfg.FILTER.MIN_SIZE = None            # minimum width and height, pixels
    cfg.FILTER.MIN_SIZE_FRACTION = None   # cap MIN_SIZE at this fraction of the shorter side (0 = no cap)
    cfg.FILTER.ASPECT_RATIO = None        # [MIN, MAX] width / height
    cfg.FILTER.AREA = None                # [MIN, MAX] box area / image area
    cfg.FILTER.NMS = None                 # non-maximum suppression IoU threshold; null = off
    cfg.FILTER.TOP_K = None               # keep the K best-scored boxes per image; null = all
    # Where TOP_K counts, always in the method's own ranking (its scores, ties in its order): False = the
    # K best of the boxes that pass the filters and NMS (objcrop's); True = the K first boxes the method
    # ranks, taken before any filter (the paper's "top 10 BING boxes"; the filters then see those K only).
    cfg.FILTER.TOP_K_FIRST = False

    cfg.COMPUTE = CfgNode()
    # Worker processes, one image each at a time (the store is the same for any number).
    cfg.COMPUTE.WORKERS = 1

    # The store file to write (masks, when the method has them, go to OUTPUT_FILE.masks; the merged
    # config to OUTPUT_FILE.config.yaml). Required.
    cfg.OUTPUT_FILE = ""
    return cfg


COMPUTE_FLAGS = (
    Flag("--dataset", "DATA.DATASET", "dataset name or spec, as objcrop.datasets.load_dataset takes it "
         "(e.g. synth:DIR:train, coco_2017_train, voc:DIR:trainval, folder:DIR)"),
    Flag("--method", "PROPOSALS.METHOD", "proposal method (see the module docstring of "
         "objcrop.pretrain.proposals.methods); gt = annotation boxes, the upper bound", {"choices": list(METHODS)}),
    Flag("--out", "OUTPUT_FILE", "the store file to write (masks, when the method has them, go to OUT.masks)"),
    Flag("--workers", "COMPUTE.WORKERS", "processes computing proposals, one image each at a time: this one "
         "and N - 1 it starts", {"type": int}),
    Flag("--max-side", "PROPOSALS.MAX_SIDE", "image methods run on a copy whose longer side is at most this "
         "(boxes are mapped back to the original); 0 = full resolution", {"type": int}),
    Flag("--limit", "DATA.LIMIT", "only the first N images of the dataset (quick trials)", {"type": int}),
    Flag("--strict", "DATA.STRICT", STRICT_HELP, {"action": "store_true"}),
    Flag("--ss-mode", "PROPOSALS.SS_MODE", "selective search strategy", {"choices": ["fast", "quality"]}),
    Flag("--superpixels", "PROPOSALS.SUPERPIXELS", "SLIC segments for saliency-rbd / -gs / -mc", {"type": int}),
    Flag("--bing-model", "PROPOSALS.BING_MODEL", "folder with OpenCV's trained BING model (opencv_contrib "
         "modules/saliency/samples/ObjectnessTrainedModel); required by --method bing"),
    Flag("--file", "PROPOSALS.FILE", "--method file: COCO detections json ([{image_id, bbox, score}]), "
         "{image id or file name: [[x, y, w, h(, score)], ...]}, or a .npy of object-cropping-ssl's released boxes "
         "(COCO {'<dir>/<image>_<rank>.jpg': [x1, y1, x2, y2]}; OpenImages {id: {'data': rows}}, "
         "row[4:8] = x1, x2, y1, y2 normalised)"),
)

# Applied in original pixels; none = the method's default (SoCo's for unsupervised methods, none for gt and file).
FILTER_FLAGS = (
    Flag("--min-size", "FILTER.MIN_SIZE", "minimum width and height in pixels (SoCo: 32)", {"type": float}),
    Flag("--min-size-fraction", "FILTER.MIN_SIZE_FRACTION", "cap --min-size at this fraction of the image's "
         "shorter side, for small images (0.1; 0 = no cap)", {"type": float}),
    Flag("--aspect-ratio", "FILTER.ASPECT_RATIO", "allowed width/height range (1/3 3)",
         {"type": float, "nargs": 2, "metavar": ("MIN", "MAX")}),
    Flag("--area", "FILTER.AREA", "allowed box area as a fraction of the image area (0 1)",
         {"type": float, "nargs": 2, "metavar": ("MIN", "MAX")}),
    Flag("--nms", "FILTER.NMS", "non-maximum suppression IoU threshold (off)", {"type": float}),
    Flag("--top-k", "FILTER.TOP_K", "keep the K best-scored boxes per image (all)", {"type": int}),
    Flag("--top-k-first", "FILTER.TOP_K_FIRST", "take --top-k in the method's raw ranking before any filter "
         "(the paper's top-10 BING boxes), not among the boxes that pass the filters", {"action": "store_true"}),
)

REQUIRED = {"DATA.DATASET": "--dataset", "PROPOSALS.METHOD": "--method", "OUTPUT_FILE": "--out"}


def check_proposals_cfg(cfg: CfgNode, source: str) -> None:
    """The keys a compute run cannot do without; ConfigError naming the key, its flag and the source."""
    missing = [f"{key} ({flag})" for key, flag in REQUIRED.items() if not cfg_get(cfg, key)]
    if missing:
        raise ConfigError(f"{source}: no value for {', '.join(missing)}; give the flag, set the key in "
                          f"--config-file or pass --opts KEY VALUE")
    for key in ("ASPECT_RATIO", "AREA"):
        value = cfg.FILTER[key]
        if value is not None and len(value) != 2:
            raise ConfigError(f"{source}: FILTER.{key} must be [MIN, MAX] or null, got {value!r}")


def box_filter(cfg: CfgNode) -> BoxFilter:
    """The filter of the config: each unset (null) key falls back to the method's default."""
    from objcrop.pretrain.proposals.compute import default_filter_for

    f, base = cfg.FILTER, default_filter_for(cfg.PROPOSALS.METHOD)

    def given(value, default, cast):  # floats stay floats (YAML may say 10 for 10.0): the store's meta compares them
        if value is None:
            return default
        return tuple(cast(v) for v in value) if isinstance(value, (list, tuple)) else cast(value)

    return BoxFilter(min_size=given(f.MIN_SIZE, base.min_size, float),
                     min_size_fraction=given(f.MIN_SIZE_FRACTION, base.min_size_fraction, float),
                     aspect_ratio=given(f.ASPECT_RATIO, base.aspect_ratio, float), area=given(f.AREA, base.area, float),
                     nms_iou=given(f.NMS, None, float), top_k=given(f.TOP_K, None, int),
                     top_k_first=bool(f.TOP_K_FIRST))


def method_spec(cfg: CfgNode) -> MethodSpec:
    p = cfg.PROPOSALS
    return MethodSpec(name=p.METHOD, max_side=p.MAX_SIDE, ss_mode=p.SS_MODE, superpixels=p.SUPERPIXELS,
                      bing_model=p.BING_MODEL or None, filter=box_filter(cfg))
