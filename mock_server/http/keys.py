"""Typed keys for what the HTTP front end stores on the application and on each request."""

from __future__ import annotations

from aiohttp import web

from mock_server.http.status_board import StatusBoard
from mock_server.service import ServerConfig, TinkerService
from mock_server.service.auth import Principal
from mock_server.service.records import RequestRecord

CONFIG_KEY = web.AppKey("config", ServerConfig)
SERVICE_KEY = web.AppKey("service", TinkerService)
BOARD_KEY = web.AppKey("status_board", StatusBoard)  # what the status page shows
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
RECORD_KEY = web.RequestKey("record", RequestRecord)
