import sys

from objcrop.cli import main

sys.exit(main())
