"""``python -m aegiskv``: the same as the ``aegis`` command."""

import sys

from aegiskv.server.cli import main

sys.exit(main())
