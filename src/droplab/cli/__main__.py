"""``python -m droplab.cli``: the ``droplab`` command."""

import sys

from droplab.cli import main

sys.exit(main())
