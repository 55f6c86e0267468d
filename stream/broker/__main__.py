"""``python -m stream.broker fetch|run|check``: see :mod:`stream.broker.cli`."""

import sys

from stream.broker.cli import main

if __name__ == "__main__":
    sys.exit(main())
