"""`objcrop doctor`: is this environment able to run objcrop?

Prints versions of Python, torch, torchvision, detectron2 and OpenCV (with the
contrib modules the proposals and saliency need), whether detectron2's
compiled ops load, the CUDA devices, and the dataset root with the built-in
datasets found there. Exits 1 with one line per missing required piece;
missing datasets and CUDA are information, not failures.
"""
import argparse
import importlib
import os
import platform
import sys
from typing import List, Optional, Tuple

from objcrop.cli import run_stage_main
from objcrop.io import write_json_atomic

MIN_PYTHON = (3, 10)


class Report:
    """Rows of (status, component, detail); status is ok, warn, info or FAIL."""

    def __init__(self) -> None:
        self.rows: List[Tuple[str, str, str]] = []

    def add(self, status: str, component: str, detail: str) -> None:
        self.rows.append((status, component, detail))

    @property
    def failures(self) -> List[Tuple[str, str, str]]:
        return [r for r in self.rows if r[0] == "FAIL"]


def _import(module: str):
    try:
        return importlib.import_module(module), None
    except Exception as e:  # a broken install raises more than ImportError (OSError for a bad .so, ...)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _version(mod) -> str:
    version = getattr(mod, "__version__", None)
    if version is None:
        from importlib import metadata

        for dist in (mod.__name__, mod.__name__.replace("_", "-")):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return str(version or "unknown version")


def check_python(r: Report) -> None:
    v = sys.version_info
    status = "ok" if v[:2] >= MIN_PYTHON else "FAIL"
    r.add(status, "python", f"{platform.python_version()} ({sys.executable})"
          + ("" if status == "ok" else f"; objcrop needs >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}"))


def check_package(r: Report, module: str, component: str, required: bool, hint: str) -> Optional[object]:
    mod, err = _import(module)
    if mod is None:
        r.add("FAIL" if required else "info", component, f"not importable ({err}); {hint}")
    else:
        r.add("ok", component, _version(mod))
    return mod


def check_user_package(r: Report, module: str, required: bool) -> Optional[object]:
    """torch, torchvision, detectron2: not installed by pip (objcrop/requirements.py), so checked here."""
    from objcrop.requirements import check

    problem = check(module)
    if problem:
        r.add("FAIL" if required else "info", module, problem)
        return None
    return check_package(r, module, module, required, "")


def check_torch(r: Report, require_cuda: bool) -> None:
    torch = check_user_package(r, "torch", True)
    check_user_package(r, "torchvision", True)
    if torch is None:
        return
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        r.add("ok", "cuda", f"{len(names)} device(s): {', '.join(names)} (CUDA {torch.version.cuda})")
    else:
        r.add("FAIL" if require_cuda else "info", "cuda",
              f"no CUDA device (torch built for CUDA {torch.version.cuda or 'none'}); running on CPU")
    r.add("info", "cpu", f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads")


def check_detectron2(r: Report, required: bool) -> None:
    d2 = check_user_package(r, "detectron2", required)
    if d2 is None:
        return
    # The one place objcrop imports the compiled extension: everything else uses detectron2's public ops,
    # which fall back to torchvision where `_C` is missing.
    try:
        importlib.import_module("detectron2._C")  # i.e. `from detectron2 import _C`
        r.add("ok", "detectron2 ops", "compiled detectron2._C loads")
    except Exception as e:
        r.add("warn", "detectron2 ops", f"compiled detectron2._C does not load ({type(e).__name__}); "
              "falling back to torchvision's nms/roi_align (deformable conv unavailable)")
    check_package(r, "pycocotools", "pycocotools", required, "pip install pycocotools")


def check_opencv(r: Report) -> None:
    cv2, err = _import("cv2")
    if cv2 is None:
        r.add("FAIL", "opencv", f"not importable ({err}); pip install opencv-contrib-python-headless==4.11.0.86")
        return
    selective = _import("cv2.ximgproc.segmentation")[0] is not None and hasattr(
        cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation")
    saliency = hasattr(cv2, "saliency") and hasattr(cv2.saliency, "StaticSaliencySpectralResidual_create")
    detail = f"{cv2.__version__}; contrib ximgproc.segmentation {'yes' if selective else 'NO'}, saliency {'yes' if saliency else 'NO'}"
    if selective and saliency:
        r.add("ok", "opencv", detail)
    else:
        r.add("FAIL", "opencv", detail + " (selective-search proposals and saliency need "
              "opencv-contrib-python-headless; uninstall plain opencv-python first)")


def check_datasets(r: Report) -> None:
    from objcrop.datasets.catalog import builtin_available, builtin_specs, dataset_root

    root = os.path.abspath(dataset_root())
    specs = builtin_specs()
    found = [name for name, spec in specs.items() if builtin_available(spec)]
    origin = "$DETECTRON2_DATASETS" if os.environ.get("DETECTRON2_DATASETS") else "default ./datasets; set $DETECTRON2_DATASETS"
    r.add("info", "dataset root", f"{root} ({origin}){'' if os.path.isdir(root) else ' - does not exist'}")
    r.add("info", "datasets", f"found {', '.join(found)}" if found else
          "no built-in dataset found (make one with `objcrop data synth --out DATASET_ROOT/objcrop_synth`)")


def run_checks(require_cuda: bool = False, pretrain_only: bool = False) -> Report:
    r = Report()
    check_python(r)
    check_package(r, "numpy", "numpy", True, "install the pinned set with `make setup`")
    check_torch(r, require_cuda)
    check_detectron2(r, required=not pretrain_only)
    check_opencv(r)
    check_package(r, "skimage", "scikit-image", True, "pip install scikit-image")
    check_package(r, "sklearn", "scikit-learn", True, "pip install scikit-learn")
    check_datasets(r)
    return r


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--require-cuda", action="store_true", help="a missing CUDA device is a failure (for GPU machines)")
    p.add_argument("--pretrain-only", action="store_true",
                   help="check only what pretraining and the probe need: detectron2 and pycocotools become optional")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report to this json file")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    report = run_checks(require_cuda=args.require_cuda, pretrain_only=args.pretrain_only)
    width = max(len(c) for _, c, _ in report.rows)
    for status, component, detail in report.rows:
        print(f"  {status:<5} {component:<{width}}  {detail}")
    if args.json:
        write_json_atomic(args.json, {"ok": not report.failures,
                                      "checks": [{"status": s, "component": c, "detail": d} for s, c, d in report.rows]})
    for _, component, detail in report.failures:
        print(f"objcrop doctor: missing: {component}: {detail}", file=sys.stderr)
    if report.failures:
        return 1
    print("objcrop doctor: all required pieces present")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop doctor"))
