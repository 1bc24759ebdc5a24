"""``python -m caseline.server.cli``: what tests and benches run, the same as ``caseline-server``."""

import sys

from caseline.server.cli import main

sys.exit(main())
