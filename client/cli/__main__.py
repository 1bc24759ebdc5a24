"""``python -m caseline.client.cli``: how the tests and the demo run the CLI as a process."""

import sys

from caseline.client.cli import main

sys.exit(main())
