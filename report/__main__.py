"""`python -m objcrop.report RUNS… --out DIR` (the same as `objcrop report`)."""
import sys

from objcrop.cli import run_stage_main
from objcrop.report.cli import main

sys.exit(run_stage_main(main, None, "objcrop report"))
