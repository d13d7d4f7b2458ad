"""Reading images with errors that name the file."""
import os
from typing import Tuple

import numpy as np

from objcrop.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; a missing, truncated or corrupt file raises DatasetError."""
    from PIL import Image

    # PIL's default (ImageFile.LOAD_TRUNCATED_IMAGES False) makes a truncated file fail in load().
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file not found")
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            # Rotate as the EXIF orientation says, like detectron2's read_image, so that boxes line up.
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise DatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return np.asarray(rgb, dtype=np.uint8)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of the image as read_image returns it, from the file header without decoding pixels."""
    from PIL import Image

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            # EXIF orientations 5-8 turn the image by 90 degrees: read_image returns it transposed.
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    return height, width


def verify_image(path: str) -> Tuple[int, int]:
    """(height, width) of an image whose structure PIL verifies; raises DatasetError otherwise.

    Cheaper than decoding: it checks the header and the chunk structure, which
    catches files that are not images or are cut off inside their header.
    """
    from PIL import Image

    height, width = image_size(path)
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        raise DatasetError(f"{path}: corrupt image ({type(e).__name__}: {e})") from e
    return height, width
