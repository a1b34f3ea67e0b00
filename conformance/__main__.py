"""`python -m conformance` = `tinker-conformance`."""

import sys

from conformance.cli import main

sys.exit(main())
