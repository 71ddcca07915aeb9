"""``python -m twin_server`` is the ``twin-server`` command."""

import sys

from twin_server.cli import main

sys.exit(main())
