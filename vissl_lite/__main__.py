"""``python -m vissl_lite``: the same as the ``vissl-lite`` command."""

import sys

from vissl_lite.cli import main

sys.exit(main())
