"""`python -m mock_server serve ...` — the same as the `tinker-mock` console script."""

import sys

from mock_server.cli import main

sys.exit(main())
