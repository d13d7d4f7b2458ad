"""The probe's defaults, in detectron2's idiom: a CfgNode in code that YAML and `--opts` override.

`get_probe_cfg()` returns every key with its default; `eval_configs/probe/*.yaml` (or any YAML, or
the config.yaml a probe run wrote) overrides it, the command-line flags (`PROBE_FLAGS`, each a
shortcut for one key) override the file, and `--opts KEY VALUE` overrides them all
(objcrop.pretrain.cli_flags). The run's config.yaml is the merged config with DATA.IMAGE_SIZE
resolved, so it names exactly what ran.
"""
import os

from objcrop.config import CfgNode
from objcrop.datasets.quirks import STRICT_HELP
from objcrop.errors import ConfigError
from objcrop.pretrain.cli_flags import Flag

# PROBE.PROTOCOL values: objcrop's fast probe and the paper's (see get_probe_cfg).
PROTOCOLS = ("cached_features", "main_lincls")


def get_probe_cfg() -> CfgNode:
    cfg = CfgNode()

    cfg.PROBE = CfgNode()
    # The frozen backbone: an objcrop checkpoint (model_final.pth), a torchvision ResNet state dict file
    # (e.g. the supervised ImageNet baseline, supplied locally) or "random" (random init). Required.
    cfg.PROBE.WEIGHTS = ""
    # ResNet to build; "" = the checkpoint's own (resnet50 for "random").
    cfg.PROBE.ARCH = ""
    # Stem of a "random" backbone (objcrop.records.RESNET_STEMS): the random-init reference row of
    # CIFAR-stem runs (PRETRAIN.STEM cifar) needs their stem. A checkpoint's own stem is read from it.
    cfg.PROBE.STEM = "imagenet"
    # Seed of the linear classifier (its init and data order) and of "random" weights.
    cfg.PROBE.SEED = 0
    # Where features are computed and the classifier trained: "auto" (cuda when available), "cpu", "cuda".
    cfg.PROBE.DEVICE = "auto"
    # Which probe runs (results.json records it as "protocol"):
    #   cached_features  objcrop's fast probe: whole images resized to DATA.IMAGE_SIZE, features computed
    #                    once and cached, a linear layer on standardised features (LINEAR.*, cosine lr);
    #   main_lincls      the paper's (object-cropping-ssl main_lincls.py, after MoCo's): a linear layer
    #                    trained end-to-end on augmented images through the frozen backbone in eval mode
    #                    (LINCLS.*); slow, one backbone pass per image per epoch.
    cfg.PROBE.PROTOCOL = "cached_features"

    cfg.DATA = CfgNode()
    # Dataset names or specs for objcrop.datasets.load_dataset: the classifier is trained on TRAIN and
    # scored on TEST; both must have the same classes. Required.
    cfg.DATA.TRAIN = ""
    cfg.DATA.TEST = ""
    # Real datasets' quirks (boxes past the border, degenerate boxes, invalid polygons, unreadable
    # images in a folder): False repairs and counts them in one log line; True refuses them
    # (a DatasetError naming the file and annotation). objcrop/datasets/quirks.py.
    cfg.DATA.STRICT = False
    # cached_features: images are resized whole (no crop, every object stays in) to this square size;
    # 0 = the images' own size (median longer side of TRAIN) capped at 224. The written config holds the
    # resolved size. (main_lincls uses LINCLS.TRAIN_SIZE / TEST_RESIZE / TEST_SIZE instead.)
    cfg.DATA.IMAGE_SIZE = 0

    cfg.FEATURES = CfgNode()
    # cached_features only. Feature-extraction batch and DataLoader workers (they change speed, not the
    # features).
    cfg.FEATURES.BATCH_SIZE = 64
    cfg.FEATURES.NUM_WORKERS = 2
    # Feature cache, keyed by the weights' sha256, the dataset and the image size: a sweep of probe
    # settings costs one forward pass.
    cfg.FEATURES.CACHE_DIR = os.path.join("output", "cache", "probe_features")

    cfg.LINEAR = CfgNode()
    # cached_features only. The linear classifier: BCE per class, SGD (momentum 0.9) with a cosine schedule
    # on standardised features. The paper: 100 epochs, batch 256 (its lr of 30 is for raw features; 0.1 here is the
    # same optimum on standardised ones).
    cfg.LINEAR.EPOCHS = 100
    cfg.LINEAR.LR = 0.1
    cfg.LINEAR.BATCH_SIZE = 256
    cfg.LINEAR.WEIGHT_DECAY = 0.0

    cfg.LINCLS = CfgNode()
    # PROBE.PROTOCOL main_lincls, with object-cropping-ssl main_lincls.py's values as defaults (its README's
    # command: --lr 30.0 --batch-size 256 --epochs 100; --schedule 60 80, x0.1 each; --wd 0; momentum 0.9;
    # BCEWithLogitsLoss; fc initialised N(0, 0.01), bias 0).
    cfg.LINCLS.EPOCHS = 100
    cfg.LINCLS.LR = 30.0
    cfg.LINCLS.SCHEDULE = [60, 80]     # epochs at which lr is multiplied by GAMMA
    cfg.LINCLS.GAMMA = 0.1
    cfg.LINCLS.MOMENTUM = 0.9
    cfg.LINCLS.WEIGHT_DECAY = 0.0
    cfg.LINCLS.BATCH_SIZE = 256
    # Views (datasets/openimages_dataset_lineval.py): training RandomResizedCrop(TRAIN_SIZE) (scale 0.08-1)
    # + horizontal flip; test Resize(TEST_RESIZE) (shorter side) + CenterCrop(TEST_SIZE). Smaller sizes
    # only for tests and quick trials.
    cfg.LINCLS.TRAIN_SIZE = 224
    cfg.LINCLS.TEST_RESIZE = 256
    cfg.LINCLS.TEST_SIZE = 224
    cfg.LINCLS.NUM_WORKERS = 2

    cfg.KNN = CfgNode()
    # cached_features only (it needs the cached features). kNN score (Wu et al. 2018): K neighbours by
    # cosine similarity, votes weighted by exp(cos / T).
    cfg.KNN.K = 20
    cfg.KNN.T = 0.07

    # Run directory for results.json, config.yaml, metrics.jsonl and log.txt. Required.
    cfg.OUTPUT_DIR = ""
    return cfg


PROBE_FLAGS = (
    Flag("--weights", "PROBE.WEIGHTS", "objcrop checkpoint, torchvision ResNet state dict file, or 'random'"),
    Flag("--dataset-train", "DATA.TRAIN", "dataset name/spec the linear layer is trained on"),
    Flag("--dataset-test", "DATA.TEST", "dataset name/spec it is scored on"),
    Flag("--strict", "DATA.STRICT", STRICT_HELP + " (both datasets)", {"action": "store_true"}),
    Flag("--out", "OUTPUT_DIR", "run directory for results.json, config.yaml, metrics.jsonl, log"),
    Flag("--arch", "PROBE.ARCH", "ResNet to build ('' = from the checkpoint; resnet50 for 'random')"),
    Flag("--stem", "PROBE.STEM", "stem of a 'random' backbone: imagenet or cifar (a checkpoint's own stem is "
                                 "read from its conv1)"),
    Flag("--image-size", "DATA.IMAGE_SIZE", "images are resized whole to this square size; 0 = the images' "
         "own size (median longer side), at most 224", {"type": int}),
    Flag("--epochs", "LINEAR.EPOCHS", "linear-classifier epochs (the paper: 100)", {"type": int}),
    Flag("--lr", "LINEAR.LR", "SGD lr on standardised features (cosine schedule)", {"type": float}),
    Flag("--probe-batch-size", "LINEAR.BATCH_SIZE", "linear-classifier batch (the paper: 256)", {"type": int}),
    Flag("--weight-decay", "LINEAR.WEIGHT_DECAY", "linear-classifier weight decay", {"type": float}),
    Flag("--knn-k", "KNN.K", "neighbours of the kNN score", {"type": int}),
    Flag("--knn-t", "KNN.T", "temperature of the kNN vote weights exp(cos/T)", {"type": float}),
    Flag("--batch-size", "FEATURES.BATCH_SIZE", "feature-extraction batch", {"type": int}),
    Flag("--num-workers", "FEATURES.NUM_WORKERS", "feature-extraction DataLoader workers", {"type": int}),
    Flag("--device", "PROBE.DEVICE", "where features are computed", {"choices": ["auto", "cpu", "cuda"]}),
    Flag("--protocol", "PROBE.PROTOCOL", "cached_features (fast, objcrop's) or main_lincls (the paper's: "
         "end-to-end on augmented images, LINCLS.*)", {"choices": list(PROTOCOLS)}),
    Flag("--seed", "PROBE.SEED", "seed of the classifier (and of 'random' weights)", {"type": int}),
    Flag("--cache-dir", "FEATURES.CACHE_DIR", "feature cache, keyed by weights sha256 + dataset + image size"),
)

# key -> the flag that sets it, for "missing" messages
REQUIRED = {"PROBE.WEIGHTS": "--weights", "DATA.TRAIN": "--dataset-train", "DATA.TEST": "--dataset-test",
            "OUTPUT_DIR": "--out"}


def check_probe_cfg(cfg: CfgNode, source: str) -> None:
    """The keys a probe cannot run without; ConfigError naming the key, its flag and where the config came from."""
    from objcrop.pretrain.cli_flags import cfg_get

    missing = [f"{key} ({flag})" for key, flag in REQUIRED.items() if not str(cfg_get(cfg, key)).strip()]
    if missing:
        raise ConfigError(f"{source}: no value for {', '.join(missing)}; give the flag, set the key in "
                          f"--config-file or pass --opts KEY VALUE")
    if cfg.PROBE.DEVICE not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{source}: PROBE.DEVICE is {cfg.PROBE.DEVICE!r}; expected auto, cpu or cuda")
    from objcrop.records import check_stem

    check_stem(cfg.PROBE.STEM, f"{source}: PROBE.STEM")
    if cfg.PROBE.PROTOCOL not in PROTOCOLS:
        raise ConfigError(f"{source}: PROBE.PROTOCOL is {cfg.PROBE.PROTOCOL!r}; expected one of {', '.join(PROTOCOLS)}")
    lc = cfg.LINCLS
    if min(lc.EPOCHS, lc.BATCH_SIZE - 1, lc.TRAIN_SIZE - 1, lc.TEST_SIZE - 1) < 0 or lc.TEST_RESIZE < lc.TEST_SIZE:
        raise ConfigError(f"{source}: LINCLS needs EPOCHS >= 0, BATCH_SIZE/TRAIN_SIZE/TEST_SIZE >= 1 and "
                          f"TEST_RESIZE >= TEST_SIZE; got {lc.EPOCHS}, {lc.BATCH_SIZE}/{lc.TRAIN_SIZE}/{lc.TEST_SIZE}, "
                          f"{lc.TEST_RESIZE}")
    if cfg.DATA.IMAGE_SIZE < 0 or cfg.LINEAR.EPOCHS < 0 or cfg.KNN.K < 1 or cfg.KNN.T <= 0:
        raise ConfigError(f"{source}: DATA.IMAGE_SIZE and LINEAR.EPOCHS must be >= 0, KNN.K >= 1 and KNN.T > 0; "
                          f"got {cfg.DATA.IMAGE_SIZE}, {cfg.LINEAR.EPOCHS}, {cfg.KNN.K}, {cfg.KNN.T}")
