"""``python -m mattekit.inference.worker <args>`` is ``mattekit worker <args>``."""
from __future__ import annotations

import sys

from mattekit.inference.worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
