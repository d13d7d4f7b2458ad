"""Fine-tune and evaluate detectron2 models from converted weights, one run directory per seed.

The shape of detectron2's tools/train_net.py: `setup()` builds the config,
`main()` runs in every process started by detectron2's `launch`. Per seed:

    OUTPUT_DIR/seed<k>/config.yaml      merged config, as run (after norm adaption and linear scaling)
    OUTPUT_DIR/seed<k>/log.txt          this run's log
    OUTPUT_DIR/seed<k>/metrics.jsonl    smoothed training scalars (detectron2's metrics.json beside it)
    OUTPUT_DIR/seed<k>/model_*.pth, last_checkpoint   periodic checkpoints (--resume continues from them)
    OUTPUT_DIR/seed<k>/results.json     task, dataset, box (and mask) AP/AP50/AP75, seed, weights_sha256, ...
"""
import contextlib
import logging
import os
import time
from typing import Iterator, List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger as d2_setup_logger

from objcrop.config import write_config
from objcrop.convert.detectron2_model import adapt_norms_to_world_size, load_config
from objcrop.convert.writer import use_restricted_pkl_reader
from objcrop.detection.config import scale_to_world_size
from objcrop.detection.resume import continue_where_stopped, make_resumable, refuse_another_training
from objcrop.detection.results import (check_backbone_loaded, provenance_of_weights, results_record,
                                       source_sha256_of_weights)
from objcrop.detection.trainer import MetricsJsonlHook, Trainer
from objcrop.errors import CheckpointError, ConfigError
from objcrop.io import sha256_file
from objcrop.records import read_results, write_results

logger = logging.getLogger("objcrop.detect")

RANDOM_INIT = "none"  # --weights none


# ----------------------------------------------------------------------------- config


def setup(args, seed: int, world_size: int):
    """The frozen config of one seed's run: YAML <- --opts <- CLI options <- this machine's world size."""
    cfg = load_config(args.config_file, args.opts).clone()
    cfg.defrost()
    _apply_weights_option(cfg, args.weights)
    if args.dataset_train:
        cfg.DATASETS.TRAIN = tuple(args.dataset_train)
    if args.dataset_test:
        cfg.DATASETS.TEST = tuple(args.dataset_test)
    cfg.OBJCROP.STRICT_DATA = cfg.OBJCROP.STRICT_DATA or bool(getattr(args, "strict", False))
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        _register_dataset(name, cfg.OBJCROP.STRICT_DATA)
    _num_classes_from_dataset(cfg)
    if not torch.cuda.is_available() and not str(cfg.MODEL.DEVICE).startswith("cpu"):
        logger.info("no CUDA device: MODEL.DEVICE %s -> cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if world_size > 1 and str(cfg.MODEL.DEVICE).startswith("cpu"):
        # detectron2's DefaultTrainer wraps the model in DDP with device_ids, which torch refuses for CPU modules.
        raise ConfigError(f"{world_size} processes on CPU: detectron2's trainer runs multi-process only on GPUs; "
                          "use --num-gpus 1 on a CPU machine (one process uses all cores)")
    adapt_norms_to_world_size(cfg, world_size, logger)
    scale_to_world_size(cfg, world_size, logger, enabled=not args.no_scale)
    cfg.SEED = int(seed)
    cfg.OUTPUT_DIR = run_dir(args, seed)
    cfg.freeze()
    return cfg


def _apply_weights_option(cfg, weights: Optional[str]) -> None:
    if weights is not None:
        if weights.lower() == RANDOM_INIT:
            cfg.MODEL.WEIGHTS, cfg.OBJCROP.RANDOM_INIT = "", True
        else:
            cfg.MODEL.WEIGHTS = weights
    if not cfg.MODEL.WEIGHTS and not cfg.OBJCROP.RANDOM_INIT:
        raise ConfigError("no weights: pass --weights FILE.pkl (from `objcrop convert`), or --weights none for a "
                          "random-init baseline (MODEL.WEIGHTS is empty and OBJCROP.RANDOM_INIT is False)")
    if cfg.MODEL.WEIGHTS and cfg.OBJCROP.RANDOM_INIT:
        raise ConfigError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} but OBJCROP.RANDOM_INIT is True; pick one")
    if cfg.MODEL.WEIGHTS:
        if "://" in cfg.MODEL.WEIGHTS:
            raise CheckpointError(f"{cfg.MODEL.WEIGHTS}: objcrop never downloads weights; give a local file "
                                  "(convert torchvision's ImageNet file with `objcrop convert ... --pretrain method=supervised`)")
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise CheckpointError(f"{cfg.MODEL.WEIGHTS}: weights file not found")


def _register_dataset(name: str, strict: bool) -> None:
    from objcrop.detection.datasets import register

    register(name, strict)


def _num_classes_from_dataset(cfg) -> None:
    if not cfg.OBJCROP.NUM_CLASSES_FROM_DATASET or not cfg.DATASETS.TRAIN:
        return
    classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
    if not classes:
        return
    n = len(classes)
    if n != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        logger.info("ROI_HEADS.NUM_CLASSES %d -> %d (the classes of %s)", cfg.MODEL.ROI_HEADS.NUM_CLASSES, n,
                    cfg.DATASETS.TRAIN[0])
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = n


def run_dir(args, seed: int) -> str:
    return os.path.join(output_root(args), f"seed{seed}")


def output_root(args) -> str:
    if args.output_dir:
        return args.output_dir
    config_name = os.path.splitext(os.path.basename(args.config_file))[0]
    weights = args.weights or "config-weights"
    weights_name = os.path.splitext(os.path.basename(weights))[0] if weights.lower() != RANDOM_INIT else "random_init"
    return os.path.join("output", "detection", f"{config_name}__{weights_name}")


# ----------------------------------------------------------------------------- running


@contextlib.contextmanager
def run_logging(output_dir: str, rank: int) -> Iterator[None]:
    """Send objcrop's, detectron2's and fvcore's logs to OUTPUT_DIR/log.txt for the duration of one run."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S"))
    names = ("objcrop.detect", "detectron2", "fvcore")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def configure_console_logging(rank: int) -> None:
    d2_setup_logger(output=None, distributed_rank=rank, name="detectron2")
    d2_setup_logger(output=None, distributed_rank=rank, name="fvcore")
    d2_setup_logger(output=None, distributed_rank=rank, name="objcrop.detect", abbrev_name="objcrop")


def run_seed(args, seed: int) -> dict:
    """Train (or only evaluate) one seed; returns its results record (complete on the main process)."""
    rank, world = comm.get_rank(), comm.get_world_size()
    with run_logging(run_dir(args, seed), rank):
        cfg = setup(args, seed, world)
        results_path = os.path.join(cfg.OUTPUT_DIR, "results.json")
        source_sha = source_sha256_of_weights(cfg.MODEL.WEIGHTS)
        if args.resume and not args.eval_only and _finished(results_path):
            refuse_another_training(results_path, "a finished fine-tuning",
                                    read_results(results_path).get("source_sha256"), source_sha, cfg.MODEL.WEIGHTS)
            logger.info("seed %d: %s already holds a finished run; skipping (delete it to rerun)", seed, results_path)
            return read_results(results_path)
        logger.info("seed %d: run directory %s (world size %d, %d images per batch, %d iterations)",
                    seed, cfg.OUTPUT_DIR, world, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER)
        if comm.is_main_process():
            write_config(cfg, cfg.OUTPUT_DIR)
        seed_all_rng(seed + rank)
        provenance = provenance_of_weights(cfg)
        weights_sha = sha256_file(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else None
        start = time.time()
        status, error, iterations = "ok", None, 0
        try:
            if args.eval_only:
                eval_results, iterations = _evaluate_only(cfg)
            else:
                eval_results, iterations = _train(cfg, args.resume, source_sha)
        except FloatingPointError as e:  # detectron2's loss check: the run diverged
            status, error, eval_results = "failed", f"training diverged: {e}", {}
            logger.error("seed %d failed: %s", seed, error)
        record = results_record(cfg, eval_results or {}, status=status, seed=seed, provenance=provenance,
                                weights_sha256=weights_sha, source_sha256=source_sha,
                                iterations=iterations,
                                wall_time_s=time.time() - start, error=error)
        undefined = [f"{kind} {k}" for kind in ("box", "mask") for k, v in (record.get(kind) or {}).items() if v is None]
        if undefined and status == "ok":
            logger.warning("seed %d: undefined (NaN) metrics: %s — the model made no usable predictions "
                           "(too short a schedule?)", seed, ", ".join(undefined))
        if comm.is_main_process():
            write_results(cfg.OUTPUT_DIR, record)
            logger.info("seed %d: %s box %s%s -> %s", seed, record["task"], record["box"],
                        f" mask {record['mask']}" if "mask" in record else "", results_path)
        return record


def _finished(results_path: str) -> bool:
    return os.path.isfile(results_path) and read_results(results_path).get("status") == "ok"


def _train(cfg, resume: bool, source_sha256: Optional[str] = None):
    """Train (or resume) a seed's run; `source_sha256`, the training its weights come from, goes into every
    checkpoint, and a checkpoint of another training is not resumed."""
    trainer = Trainer(cfg)
    use_restricted_pkl_reader(trainer.checkpointer)  # detectron2 would unpickle a .pkl with plain pickle.load
    metrics_path = os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl")
    trainer.register_hooks([MetricsJsonlHook(metrics_path, cfg.OBJCROP.METRICS_PERIOD)])
    rng, started = make_resumable(trainer, source_sha256)
    resuming = resume and trainer.checkpointer.has_checkpoint()
    trainer.resume_or_load(resume=resume)
    if resuming:
        started.refuse_another(trainer.checkpointer.get_checkpoint_file(), cfg.MODEL.WEIGHTS)
        logger.info("resumed from %s at iteration %d", trainer.checkpointer.get_checkpoint_file(), trainer.start_iter)
        continue_where_stopped(trainer, rng, metrics_path, replay=cfg.OBJCROP.RESUME_REPLAY)
    elif cfg.MODEL.WEIGHTS:
        check_backbone_loaded(trainer.model, cfg.MODEL.WEIGHTS)
    trainer.train()
    results = getattr(trainer, "_last_eval_results", None)  # set by DefaultTrainer's final EvalHook
    if results is None:
        results = Trainer.test(cfg, trainer.model)
    if comm.is_main_process():
        _remove_intermediate_checkpoints(cfg.OUTPUT_DIR)
    return results, trainer.iter  # detectron2 leaves iter == max_iter after a finished run


def _remove_intermediate_checkpoints(output_dir: str) -> None:
    """Once a run has finished, its periodic checkpoints (only there to resume) give way to model_final.pth.

    detectron2 keeps every one: 18 files of ~350 MB per seed on a COCO 1x schedule.
    """
    final = os.path.join(output_dir, "model_final.pth")
    if not os.path.isfile(final):
        return
    freed = 0
    for name in os.listdir(output_dir):
        if name.startswith("model_") and name.endswith(".pth") and name != "model_final.pth":
            path = os.path.join(output_dir, name)
            freed += os.path.getsize(path)
            os.remove(path)
    if freed:
        logger.info("removed intermediate checkpoints (%.0f MB); model_final.pth stays", freed / 2**20)


def _evaluate_only(cfg):
    """Evaluate this seed's fine-tuned model (its last checkpoint) or, when there is none, MODEL.WEIGHTS as given."""
    model = Trainer.build_model(cfg)
    checkpointer = use_restricted_pkl_reader(DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR))
    if checkpointer.has_checkpoint():
        checkpoint = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        logger.info("--eval-only: evaluating %s", checkpointer.get_checkpoint_file())
    else:
        logger.warning("--eval-only: %s has no checkpoint; evaluating %s without fine-tuning", cfg.OUTPUT_DIR,
                       cfg.MODEL.WEIGHTS or "a randomly initialised model")
        checkpoint = checkpointer.load(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else {}
    iterations = int(checkpoint.get("iteration", -1)) + 1 if checkpoint else 0
    return Trainer.test(cfg, model), iterations


def main(args) -> List[dict]:
    """Entry point of every process started by `launch`: all seeds, one after another."""
    configure_console_logging(comm.get_rank())
    return [run_seed(args, seed) for seed in args.seeds]
