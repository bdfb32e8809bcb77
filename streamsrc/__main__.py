"""``python -m streamsrc`` and the ``streamsrc`` script: the command line (:mod:`streamsrc.cli`)."""

from __future__ import annotations

import sys

from streamsrc.cli import main

if __name__ == "__main__":
    sys.exit(main())
