"""The HTTP front end of the mock server (aiohttp): a thin translator over `mock_server.service`.

`app` (factory and runner), `routes` (one handler per endpoint), `middleware` (records, auth,
error mapping), `bodies` (limits, zstd, content types), `parse` (JSON -> typed requests),
`encode` (typed results -> JSON or protobuf), `keys` (typed app/request keys).
"""

from mock_server.http.app import SERVER_KWARGS, create_app, start_http
from mock_server.http.keys import CONFIG_KEY, SERVICE_KEY

__all__ = ["CONFIG_KEY", "SERVER_KWARGS", "SERVICE_KEY", "create_app", "start_http"]
