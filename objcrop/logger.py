"""One logging setup for every stage: console plus an optional log file."""
import logging
import os
import sys
from typing import Optional


def setup_logger(name: str = "objcrop", output_dir: Optional[str] = None, rank: int = 0,
                 filename: str = "log.txt") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = logging.Formatter(f"[%(asctime)s {name}{'' if rank == 0 else f' r{rank}'}] %(message)s", "%H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        log_file = os.path.join(output_dir, filename if rank == 0 else f"{filename}.rank{rank}")
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
