"""``python -m aegiskv``: the same as the ``aegis`` command."""

import sys

from aegiskv.admin.main import main

sys.exit(main())
