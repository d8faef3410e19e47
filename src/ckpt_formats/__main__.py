"""``python -m ckpt_formats``: the ``ckpt-formats`` command line."""

import sys

from ckpt_formats.cli import main

if __name__ == "__main__":
    sys.exit(main())
