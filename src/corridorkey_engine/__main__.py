"""``python -m corridorkey_engine``: the ``corridorkey`` command line."""

import sys

from corridorkey_engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
