"""detectron2's DefaultTrainer with objcrop's evaluator choice, plus a metrics.jsonl hook.

The trainer overrides only `build_evaluator`; everything else (optimizer,
schedule, data, checkpoints, PreciseBN, evaluation at the end) is detectron2's.
"""
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict
from typing import Dict, Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval
from detectron2.utils import comm

import objcrop.convert.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from objcrop.errors import ConfigError
from objcrop.io import append_jsonl

logger = logging.getLogger("objcrop.detect")


def compiled_coco_eval_available() -> bool:
    """Whether detectron2's compiled COCOeval (in its `_C` extension) loads.

    Imported through detectron2's own module, never `detectron2._C` directly: a
    detectron2 build without compiled ops (or one built for another torch) then
    falls back to pycocotools' pure-Python COCOeval, which gives the same numbers.
    """
    try:
        from detectron2.evaluation.fast_eval_api import COCOeval_opt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def build_evaluator_for(cfg, dataset_name: str, output_folder: Optional[str] = None):
    """COCOEvaluator or PascalVOCDetectionEvaluator, chosen by the dataset's metadata evaluator_type."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        fast = compiled_coco_eval_available()
        if not fast:
            logger.info("detectron2's compiled COCOeval is unavailable; evaluating with pycocotools' COCOeval")
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_folder, use_fast_impl=fast)
    if evaluator_type == "pascal_voc":
        return PascalVOCEvaluator(dataset_name)
    raise ConfigError(f"DATASETS.TEST {dataset_name!r}: its metadata has evaluator_type={evaluator_type!r}; "
                      "objcrop evaluates only 'coco' and 'pascal_voc' datasets")


class PascalVOCEvaluator(PascalVOCDetectionEvaluator):
    """detectron2's VOC evaluator, except that classes absent from the test split are left out of the mean.

    detectron2 averages the AP of every class; a class with no (non-difficult)
    ground truth in the test split has an undefined AP (NaN, or 0 when nothing
    was detected either), which turns the whole mean into NaN or drags it down.
    VOC07 test holds all 20 classes, so on real VOC the numbers are detectron2's;
    on small splits (the embedded dataset) the mean runs over the classes present.
    """

    def evaluate(self):
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        predictions = defaultdict(list)
        for per_rank in all_predictions:
            for cls_id, lines in per_rank.items():
                predictions[cls_id].extend(lines)
        present = self._classes_with_ground_truth()
        absent = [c for c in self._class_names if c not in present]
        if absent:
            logger.warning("%s: no ground truth for %s in this split; they are left out of the mean AP",
                           self._dataset_name, ", ".join(absent))
        aps = defaultdict(list)  # IoU threshold -> AP per present class
        with tempfile.TemporaryDirectory(prefix="pascal_voc_eval_") as dirname:
            template = os.path.join(dirname, "{}.txt")
            for cls_id, cls_name in enumerate(self._class_names):
                if cls_name not in present:
                    continue
                with open(template.format(cls_name), "w") as f:
                    f.write("\n".join(predictions.get(cls_id, [""])))
                for thresh in range(50, 100, 5):
                    _, _, ap = voc_eval(template, self._anno_file_template, self._image_set_path, cls_name,
                                        ovthresh=thresh / 100.0, use_07_metric=self._is_2007)
                    aps[thresh].append(ap * 100)
        if not aps:
            return OrderedDict(bbox={"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")})
        mean_ap = {iou: float(np.mean(x)) for iou, x in aps.items()}
        return OrderedDict(bbox={"AP": float(np.mean(list(mean_ap.values()))), "AP50": mean_ap[50],
                                 "AP75": mean_ap[75]})

    def _classes_with_ground_truth(self) -> Dict[str, int]:
        """{class name: number of non-difficult objects} over the images of the split."""
        with open(self._image_set_path) as f:
            image_ids = [line.strip() for line in f if line.strip()]
        counts: Dict[str, int] = defaultdict(int)
        for image_id in image_ids:
            for obj in parse_rec(self._anno_file_template.format(image_id)):
                if not obj["difficult"]:
                    counts[obj["name"]] += 1
        return dict(counts)


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator_for(cfg, dataset_name, output_folder)


class MetricsJsonlHook(HookBase):
    """Append the smoothed training scalars to RUN/metrics.jsonl every `period` iterations (main process).

    objcrop's run directories share this file format across stages (docs/INTERFACES.md);
    detectron2's own metrics.json is still written beside it.
    """

    def __init__(self, path: str, period: int):
        self._path = path
        self._period = max(1, int(period))

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if not comm.is_main_process():
            return
        if next_iter % self._period and next_iter != self.trainer.max_iter:
            return
        latest = self.trainer.storage.latest_with_smoothing_hint(self._period)
        line = {"iteration": next_iter}
        for name, (value, it) in latest.items():
            if it == self.trainer.iter and not name.startswith("eval/"):
                line[name] = float(value)
        if "total_loss" in line:
            line["loss"] = line.pop("total_loss")
        append_jsonl(self._path, line)
