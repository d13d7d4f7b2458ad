"""`python -m objcrop.pretrain.probe`: the same as `objcrop probe`."""
import sys

from objcrop.cli import run_stage_main
from objcrop.pretrain.probe import main

if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop probe"))
