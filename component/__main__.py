"""``python -m component`` is the ``mft`` command."""

import sys

from component.cli import main

sys.exit(main())
