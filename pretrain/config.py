"""Pretraining defaults, in detectron2's idiom: a CfgNode in code that YAML presets override.

`get_pretrain_cfg()` returns every key with its default; `eval_configs/pretrain/*.yaml` override
them and `--opts KEY VALUE` overrides the file (objcrop.config.merge_config). The view-policy keys
(`VIEWS.*`) belong to objcrop.pretrain.views and are added by its `add_views_config(cfg)`.
"""
from objcrop.config import CfgNode


def get_pretrain_cfg() -> CfgNode:
    cfg = CfgNode()

    cfg.PRETRAIN = CfgNode()
    # Self-supervised method, a key of objcrop.pretrain.methods.METHODS: "moco_v2" or "byol".
    cfg.PRETRAIN.METHOD = "moco_v2"
    # torchvision ResNet: "resnet50" is the product; "resnet18"/"resnet34" only to make tests fast.
    cfg.PRETRAIN.ARCH = "resnet50"
    # The ResNet stem: "imagenet" (torchvision's 7x7 stride-2 conv1 and max-pool) or "cifar" (3x3 stride-1
    # conv1, no max-pool; objcrop.pretrain.models.use_cifar_stem), small-image SSL's stem at 32-64 px:
    # feature maps 4x larger per side, more compute per image. Detection (`objcrop convert`) needs "imagenet".
    cfg.PRETRAIN.STEM = "imagenet"
    cfg.PRETRAIN.EPOCHS = 200
    # Total (effective) batch over all processes; each of the W processes takes BATCH_SIZE / W.
    cfg.PRETRAIN.BATCH_SIZE = 128
    # lr = BASE_LR * BATCH_SIZE / BASE_BATCH_SIZE (the linear scaling rule; the log states it).
    # The paper's MoCo-v2 runs: 0.015 for batch 128.
    cfg.PRETRAIN.BASE_LR = 0.015
    cfg.PRETRAIN.BASE_BATCH_SIZE = 128
    # "sgd" (MoCo-v2; weight decay on every parameter) or "lars" (BYOL's paper: layer-wise trust ratio,
    # biases and BN parameters neither adapted nor decayed; pretrain/engine/optim.py).
    cfg.PRETRAIN.OPTIMIZER = "sgd"
    # Momentum and weight decay of either optimiser (MoCo-v2: 0.9, 1e-4; BYOL with LARS: 0.9, 1.5e-6).
    cfg.PRETRAIN.MOMENTUM = 0.9
    cfg.PRETRAIN.WEIGHT_DECAY = 1e-4
    # LARS's trust coefficient eta: each adapted parameter's step is scaled to eta * ||w|| / ||grad + wd w||.
    cfg.PRETRAIN.LARS_TRUST_COEFFICIENT = 1e-3
    # Linear warm-up length in epochs (may be fractional) before the cosine decay to 0; MoCo-v2 uses 0.
    cfg.PRETRAIN.WARMUP_EPOCHS = 0.0
    # Seed for model init, data order and per-sample augmentations (runs with one seed repeat exactly).
    cfg.PRETRAIN.SEED = 0
    # A name for a variant of a setting (e.g. "no-colour" for a run without colour jitter): the `tag`
    # field of the run's provenance (objcrop.records). Run directories and report rows join it to the
    # policy (`random-no-colour`), so reports give it its own row instead of averaging it into the
    # plain setting's.
    cfg.PRETRAIN.TAG = ""
    # "auto" (cuda when available, else cpu), "cpu" or "cuda".
    cfg.PRETRAIN.DEVICE = "auto"
    # Mixed precision on CUDA; "bfloat16" needs no loss scaling, "float16" uses a GradScaler.
    cfg.PRETRAIN.AMP = True
    cfg.PRETRAIN.AMP_DTYPE = "bfloat16"
    # bf16 autocast on the CPU as well (with AMP on and AMP_DTYPE bfloat16): on a CPU with native bf16
    # (AMX or AVX512-BF16) the MoCo-v2 step runs faster (by how much: benchmarks/bench_step.py --cpu-amp on).
    # Off by default: it changes the numerics of CPU runs, whose recorded study ran in float32. A CPU
    # without native bf16 is refused: there bf16 is emulated, slower than float32.
    cfg.PRETRAIN.AMP_CPU = False
    # Store the backbone and inputs in channels_last memory format where it is faster: on CUDA, and on
    # the CPU under bf16 autocast (PRETRAIN.AMP_CPU). Ignored on an fp32 CPU run: measured no faster
    # there, and split BN's one-pass grouping copies every activation of a channels_last tensor
    # (benchmarks/bench_step.py --layouts).
    cfg.PRETRAIN.CHANNELS_LAST = False

    cfg.PRETRAIN.MOCO = CfgNode()
    # Output dimension of the projection head, and its hidden width (MoCo-v2: 2-layer MLP 2048-2048-128).
    cfg.PRETRAIN.MOCO.DIM = 128
    cfg.PRETRAIN.MOCO.MLP_HIDDEN = 2048
    # BN after the head's hidden layer (MoCo-v2 has none; MoCo-v3 and SimCLR do): tried against the
    # ResNet-50 runs' collapse in docs/results.md ("GPU scale").
    cfg.PRETRAIN.MOCO.HEAD_BN = False
    # Queue length (negatives). Keep it well below the dataset size: a queue longer than the data
    # holds stale keys of the very same image as negatives.
    cfg.PRETRAIN.MOCO.K = 65536
    # Momentum of the key encoder, and the softmax temperature (MoCo-v2: 0.999, 0.2).
    cfg.PRETRAIN.MOCO.M = 0.999
    cfg.PRETRAIN.MOCO.T = 0.2
    # Shuffle-BN groups per process: BN normalises the batch in this many groups (in one forward pass,
    # as MoCo's single-GPU demo does), the keys in a shuffled order, so a query and its key never share
    # batch statistics. 0 = auto: 1 under DDP (MoCo's one group per GPU, shuffled across processes),
    # else max(2, per-process batch // 32).
    cfg.PRETRAIN.MOCO.BN_SPLITS = 0

    cfg.PRETRAIN.BYOL = CfgNode()
    # Projector / predictor: Linear-BN-ReLU-Linear with this hidden width and output size (BYOL: 4096, 256).
    cfg.PRETRAIN.BYOL.PROJ_HIDDEN = 4096
    cfg.PRETRAIN.BYOL.PROJ_DIM = 256
    # EMA rate of the target network; it rises to 1 over training on a cosine (BYOL: 0.996).
    cfg.PRETRAIN.BYOL.BASE_MOMENTUM = 0.996

    cfg.DATA = CfgNode()
    # Dataset name or spec for objcrop.datasets.load_dataset (docs/INTERFACES.md), e.g.
    # "objcrop_synth_train", "synth:DIR:train", "coco_2017_train", "openimages:DIR:train", "folder:DIR".
    cfg.DATA.DATASET = "objcrop_synth_train"
    # Real datasets' quirks (boxes past the border, degenerate boxes, invalid polygons, unreadable
    # images in a folder): False repairs and counts them in one log line; True refuses them
    # (a DatasetError naming the file and annotation). objcrop/datasets/quirks.py.
    cfg.DATA.STRICT = False
    # Where the object boxes come from: a proposal store path (objcrop proposals), "gt" for the
    # dataset's annotated boxes (the paper's upper bound), or "" for none (random crops only).
    cfg.DATA.PROPOSALS = ""
    # Keep only the top-scoring N proposals per image (the paper: 10 BING boxes); 0 keeps all.
    cfg.DATA.PROPOSALS_TOPK = 0
    # Shrink every image so its shorter side is this many pixels before cropping (boxes follow);
    # 0 keeps the original size. Saves decoding/cropping time when crops are small.
    cfg.DATA.IMAGE_SIZE = 0
    # DataLoader worker processes per training process (0 loads in the training process).
    cfg.DATA.NUM_WORKERS = 4
    # Keep decoded images in each loader process (its workers live for the whole run) up to this many
    # MB, so a small dataset is decoded once instead of once per epoch; images past the limit are read
    # every time. 0: none. The views are the same either way (an execution-only key).
    cfg.DATA.IMAGE_CACHE_MB = 0

    cfg.CHECKPOINT = CfgNode()
    # Also checkpoint every this many iterations inside an epoch (0: only at the end of each epoch).
    cfg.CHECKPOINT.PERIOD = 0
    # Checkpoint at the end of every this many epochs (and always after the last); 1 = each epoch.
    cfg.CHECKPOINT.EPOCH_PERIOD = 1
    # How many resume checkpoints (RUN/checkpoints/ckpt_*.pth) to keep; older ones are deleted.
    cfg.CHECKPOINT.KEEP_LAST = 3

    cfg.LOG = CfgNode()
    # Write a metrics.jsonl / TensorBoard entry every this many iterations.
    cfg.LOG.PERIOD = 1
    # Write an `iter=<n> ...` line to the log every this many iterations.
    cfg.LOG.PRINT_PERIOD = 20

    # Run directory; "" = output/pretrain/<method>_<policy>_<proposals>_<arch>_b<batch>_e<epochs>_<data>_s<seed>.
    cfg.OUTPUT_DIR = ""

    _add_views_config(cfg)
    return cfg


def _add_views_config(cfg: CfgNode) -> None:
    # The views package adds VIEWS.* (POLICY, crop size, augmentations); it is owned elsewhere.
    try:
        from objcrop.pretrain.views.config import add_views_config
    except ImportError:  # pragma: no cover - only while the views package has not landed
        return
    add_views_config(cfg)
