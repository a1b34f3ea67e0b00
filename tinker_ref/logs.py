"""Logging: every logger of tinker_ref is named under `tinker_ref` (`tinker_ref.retry`,
`tinker_ref.service_client`, ...), and `TINKER_LOG` switches console output on as in the
official SDK (`tinker/_utils/_logs.py`): `TINKER_LOG=debug` or `info` sets that level and
prints in the SDK's format, `[2024-01-01 12:00:00 - tinker_ref.retry:120 - DEBUG] ...`.

Unlike the SDK, the handler goes on the `tinker_ref` logger rather than the root's
`basicConfig`: programs that import tinker_ref (the mock server does, for the shared types) keep
their own logging setup; and that logger stops propagating while it has the handler, so a
program whose root logger also prints does not see each line twice. Without `TINKER_LOG`
nothing is configured: warnings and errors reach whatever the application set up (or Python's
last-resort stderr handler); the library never prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

LOGGER_NAME = "tinker_ref"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}  # the SDK's two values
FORMAT = "[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s"  # the SDK's
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(environ: Mapping[str, str] | None = None) -> None:
    """Apply `TINKER_LOG` from `environ` (default: the process environment). Idempotent."""
    if environ is None:
        environ = os.environ
    level = LEVELS.get(environ.get("TINKER_LOG", ""))
    if level is None:
        return
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(getattr(handler, "_tinker_log", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        handler._tinker_log = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
