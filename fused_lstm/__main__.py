"""python -m fused_lstm: print what this build is and what it runs on."""

import sys

from .info import main

sys.exit(main())
