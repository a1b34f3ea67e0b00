"""tinker-ref: a reference client for custom-loss training on the Tinker API.

This package holds the client and everything client and server share: the public
types (`tinker_ref.types`) and the wire codecs (`tinker_ref.codec`). It never imports
`mock_server`.
"""

__version__ = "0.1.0"
