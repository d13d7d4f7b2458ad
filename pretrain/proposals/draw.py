"""Drawing for `proposals show` and `views show`: boxes on images, image grids, PNG output."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from objcrop.io import write_bytes_atomic
from objcrop.errors import ObjcropError

GT_COLOUR = (255, 255, 255)


def rank_colour(rank: int, total: int) -> Tuple[int, int, int]:
    """Best-ranked boxes red, the rest fading through yellow to blue."""
    t = rank / max(total - 1, 1)
    hsv = np.uint8([[[int(120 * t), 230, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, colours: Optional[Sequence[Tuple[int, int, int]]] = None,
               thickness: int = 1) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        colour = colours[i] if colours is not None else rank_colour(i, len(boxes))
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1), colour, thickness)
    return out


def fit(rgb: np.ndarray, cell: int) -> np.ndarray:
    """Resize to fit a cell x cell square (keeping the aspect ratio), padded with dark grey."""
    h, w = rgb.shape[:2]
    scale = cell / float(max(h, w))
    small = cv2.resize(rgb, (max(1, int(round(w * scale))), max(1, int(round(h * scale)))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    canvas = np.full((cell, cell, 3), 40, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas


def grid(rows: List[List[np.ndarray]], cell: int = 160, pad: int = 4) -> np.ndarray:
    """Rows of images (any sizes) -> one RGB canvas, each image fitted into a cell."""
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (cell + pad) + pad, cols * (cell + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (cell + pad), pad + j * (cell + pad)
            canvas[y:y + cell, x:x + cell] = fit(img, cell)
    return canvas


def label(rgb: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    scale = max(0.3, out.shape[1] / 400.0)
    cv2.putText(out, text, (3, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (3, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_png(path: str, rgb: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ObjcropError(f"{path}: could not encode the PNG")
    write_bytes_atomic(path, data.tobytes())
    return path
