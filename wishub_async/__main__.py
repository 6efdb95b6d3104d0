"""``python -m wishub_async``: the ``wishub`` command."""

import sys

from ._cli import main

sys.exit(main())
