"""``python -m component`` is the ``mft`` command."""

import sys

from .cli import main

sys.exit(main())
