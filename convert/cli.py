"""`objcrop convert`: a pretrained ResNet checkpoint -> detectron2 `.pkl`, verified by loading it.

    objcrop convert RUN/model_final.pth weights/moco_objobj.pkl
    objcrop convert moco_v2_200ep_pretrain.pth.tar moco.pkl                   # official MoCo layout
    objcrop convert resnet50-0676ba61.pth sup.pkl --pretrain method=supervised --pretrain dataset=imagenet
    objcrop convert --check weights/moco_objobj.pkl --config-file coco/mask_rcnn_R_50_FPN_1x.yaml
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from objcrop.cli import run_stage_main
from objcrop.checkpoints import (FORMATS, Backbone, detect_format, extract_backbone, load_checkpoint,
                                 method_of_format, resnet_stem)
from objcrop.convert.names import (describe_resnet, detectron2_resnet_depth, is_dropped, resnet_depth,
                                   torchvision_to_detectron2)
from objcrop.convert.verify import (BASIC_BLOCK_VERIFY_CONFIG, DEFAULT_VERIFY_CONFIG, verification_model_for_depth,
                                    verify_pkl)
from objcrop.convert.writer import AUTHOR, read_detectron2_pkl, to_detectron2_arrays, write_detectron2_pkl
from objcrop.errors import CheckpointError, ConfigError
from objcrop.io import sha256_file, temp_prefix
from objcrop.logger import setup_logger
from objcrop.records import PROVENANCE_FIELDS, Provenance, parse_provenance_overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objcrop convert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a pretrained ResNet checkpoint to detectron2's .pkl format and verify that a real "
                    "detectron2 model loads every backbone tensor exactly.",
        epilog=__doc__.split("\n\n", 1)[1] + "\nFormats (auto-detected):\n"
               "  objcrop            objcrop pretrain checkpoints (RUN/model_final.pth, checkpoints/ckpt_*.pth)\n"
               "  moco               {'state_dict': {'module.encoder_q.*'}} (MoCo v1/v2), 'module.base_encoder.*' (v3)\n"
               "  byol               'online_encoder.net.*' (lucidrains/byol-pytorch), "
               "{'online_network_state_dict': {'encoder.N.*'}} (sthalles/PyTorch-BYOL)\n"
               "  backbone-prefixed  'backbone.*' (mmselfsup, solo-learn)\n"
               "  torchvision        a plain torchvision ResNet state_dict (e.g. torchvision's ImageNet files)\n"
               "  lightly            'backbone.N.*' = nn.Sequential(*resnet.children()[:-1]) (lightly's examples), "
               "or that Sequential's own state_dict\n"
               "The layouts are objcrop.checkpoints'; the first that holds a ResNet stem is taken.\n",
    )
    p.add_argument("input", nargs="?", help="checkpoint to convert (read with torch.load(weights_only=True))")
    p.add_argument("output", nargs="?", help="detectron2 .pkl to write (atomically, only once verified)")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="layout of the input checkpoint (default: detect it)")
    p.add_argument("--config-file", default=None, metavar="YAML",
                   help="detection config whose model the file must load into (a path or a file in objcrop's "
                        f"eval_configs/; default: picked by the checkpoint's depth: {DEFAULT_VERIFY_CONFIG} for "
                        f"ResNet-50/101/152, {BASIC_BLOCK_VERIFY_CONFIG} for ResNet-18/34, with "
                        "MODEL.RESNETS.DEPTH set to the checkpoint's)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip building the detectron2 model and comparing tensors (not recommended)")
    p.add_argument("--check", metavar="FILE.pkl",
                   help="only verify an existing detectron2 .pkl against --config-file, write nothing")
    p.add_argument("--pretrain", action="append", default=[], metavar="KEY=VALUE",
                   help="set a field of the pretrain block stored in the .pkl (and reported with detection results), "
                        "e.g. --pretrain method=supervised --pretrain dataset=imagenet; repeatable. KEY is a field of "
                        f"objcrop.records.Provenance ({', '.join(PROVENANCE_FIELDS)}). objcrop checkpoints carry their "
                        "own block; for others this names the pretraining")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="detectron2 config overrides for the verification model, e.g. MODEL.RESNETS.DEPTH 18 "
                        "MODEL.RESNETS.RES2_OUT_CHANNELS 64 (must come last)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logger = setup_logger("objcrop.convert")
    if args.check:
        if args.input or args.output:
            raise ConfigError("--check FILE.pkl takes no input/output arguments")
        check(args.check, args.config_file, args.opts, logger)
        return 0
    if not (args.input and args.output):
        raise ConfigError("give INPUT and OUTPUT.pkl (or --check FILE.pkl); see --help")
    if not args.output.endswith(".pkl"):
        raise ConfigError(f"{args.output}: the output must end in .pkl (detectron2 reads .pkl files as its own pickle format)")
    convert(args.input, args.output, args.format, parse_provenance_overrides(args.pretrain), args.config_file, args.opts,
            verify=not args.no_verify, logger=logger)
    return 0


def convert(input_path: str, output_path: str, fmt: str = "auto", pretrain_overrides: Optional[Dict[str, object]] = None,
            config_file: Optional[str] = None, opts: Optional[List[str]] = None, verify: bool = True,
            logger: Optional[logging.Logger] = None) -> dict:
    """Convert `input_path` to `output_path`; returns a summary dict. Nothing is written unless verification passes.

    Without `config_file` the file is verified in a detection model of the checkpoint's own depth."""
    logger = logger or logging.getLogger("objcrop.convert")
    start = time.time()
    obj = load_checkpoint(input_path)
    fmt = detect_format(obj, input_path) if fmt == "auto" else fmt
    backbone = extract_backbone(obj, fmt, input_path)
    del obj
    refuse_cifar_stem(backbone, input_path)
    where = f"{input_path} {backbone.location}"
    mapping = torchvision_to_detectron2(backbone.tensors, source=where)
    arch = describe_resnet(backbone.tensors)
    dropped = [n for n in backbone.tensors if is_dropped(n)]
    logger.info("read %s: %s layout at %s, %s, %d backbone tensors (dropped %d: fc/heads and BN counters)",
                input_path, fmt, backbone.location, arch, len(mapping), len(dropped))
    config_file, opts = _verification_model(config_file, opts, resnet_depth(backbone.tensors), logger)
    pretrain = _pretrain_block(backbone, fmt, pretrain_overrides or {}, logger)
    arrays = to_detectron2_arrays(backbone.tensors, mapping)
    provenance = {"file": os.path.abspath(input_path), "sha256": sha256_file(input_path), "format": fmt,
                  "location": backbone.location, "arch": arch}

    out_dir = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(out_dir, exist_ok=True)
    # The file is written and verified in a temporary folder named as objcrop.io names its temporaries
    # (a kill leaves nothing remove_stale_temp_files does not recognise), under the output's own name:
    # DetectionCheckpointer picks its reader by extension.
    work = tempfile.mkdtemp(prefix=temp_prefix(output_path), suffix=".tmp", dir=out_dir)
    tmp = os.path.join(work, os.path.basename(output_path))
    try:
        write_detectron2_pkl(tmp, arrays, pretrain, provenance)
        if verify:
            verify_pkl(tmp, arrays, config_file, opts, name=f"{input_path} ({fmt} layout)", source_arch=arch)
        else:
            logger.warning("--no-verify: %s was NOT checked against a detectron2 model", output_path)
        _readable_like_other_files(tmp)
        os.replace(tmp, output_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"output": output_path, "format": fmt, "arch": arch, "tensors": len(arrays), "verified": verify,
               "config_file": config_file if verify else None, "sha256": sha256_file(output_path),
               "pretrain": pretrain, "seconds": round(time.time() - start, 2)}
    logger.info("wrote %s (%d tensors, author %r, matching_heuristics, sha256 %s…)%s in %.1f s", output_path,
                len(arrays), AUTHOR, summary["sha256"][:12],
                f", verified against {config_file}" if verify else "", summary["seconds"])
    return summary


def refuse_cifar_stem(backbone: Backbone, input_path: str) -> None:
    """A CheckpointError for a CIFAR-stem backbone (PRETRAIN.STEM cifar: 3x3 stride-1 conv1, no max-pool):
    detectron2's ResNet stem is a 7x7 stride-2 conv1 and a max-pool, so the file cannot be held by it,
    and saying so here beats a shape error from the verification model later."""
    if resnet_stem(backbone.tensors) == "cifar":
        raise CheckpointError(f"{input_path}: a CIFAR-stem ResNet (3x3 conv1, no max-pool) cannot be converted: "
                              "detectron2's stem is a 7x7 stride-2 conv1 with a max-pool; detection needs a "
                              "backbone pretrained with PRETRAIN.STEM imagenet")


def check(pkl_path: str, config_file: Optional[str] = None, opts: Optional[List[str]] = None,
          logger: Optional[logging.Logger] = None):
    """Verify an existing .pkl: it must be a non-Caffe2 detectron2 file whose every tensor loads."""
    logger = logger or logging.getLogger("objcrop.convert")
    data = read_detectron2_pkl(pkl_path)
    author = data.get("__author__")
    if author is None or author == "Caffe2":
        raise CheckpointError(f"{pkl_path}: __author__ is {author!r}, so detectron2 renames its keys with the Caffe2 "
                              "rules (and such files expect BGR input); convert the original checkpoint with "
                              "`objcrop convert` instead")
    if not data.get("matching_heuristics"):
        logger.warning("%s: matching_heuristics is off; names must equal the model's exactly", pkl_path)
    config_file, opts = _verification_model(config_file, opts, detectron2_resnet_depth(data["model"]), logger)
    result = verify_pkl(pkl_path, data["model"], config_file, opts)
    logger.info("OK: %s loads into %s: %s", pkl_path, config_file, result.describe())
    return result


def _verification_model(config_file: Optional[str], opts: Optional[List[str]], depth: int,
                        logger: logging.Logger) -> Tuple[str, List[str]]:
    """The model to verify in: the one asked for, else one of the checkpoint's depth (the user's --opts last)."""
    if config_file:
        return config_file, list(opts or [])
    config_file, depth_opts = verification_model_for_depth(depth)
    logger.info("verifying in %s%s (picked for a %s; --config-file picks another)", config_file,
                f" with {' '.join(depth_opts)}" if depth_opts else "", f"ResNet-{depth}" if depth else "ResNet")
    return config_file, depth_opts + list(opts or [])


def _readable_like_other_files(path: str) -> None:
    """mkstemp makes files private (0600); a weights file should get the usual permissions under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _pretrain_block(backbone: Backbone, fmt: str, overrides: Dict[str, object], logger: logging.Logger) -> dict:
    """The checkpoint's own provenance, or one describing a foreign checkpoint, with --pretrain applied."""
    provenance = backbone.provenance
    if provenance is None:
        depth = resnet_depth(backbone.tensors)
        provenance = Provenance(method=method_of_format(fmt),
                                arch=f"resnet{depth}" if depth else "unknown")
        if not overrides:
            logger.warning("%s checkpoints carry no description of their pretraining; detection results will report "
                           "method=%r. Name it with --pretrain method=... (e.g. supervised) --pretrain dataset=...",
                           fmt, provenance.method)
    return provenance.replace(**overrides).to_dict()


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop convert"))
