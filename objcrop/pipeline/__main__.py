"""`python -m objcrop.pipeline`: the same as `objcrop pipeline`."""
import sys

from objcrop.cli import run_stage_main
from objcrop.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop pipeline"))
