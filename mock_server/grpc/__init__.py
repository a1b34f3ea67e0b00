"""The gRPC front end of the mock server (`tinker_ref.training.v1.TrainingService`).

`start_grpc(service, host, port)` serves an existing `TinkerService` — the one the HTTP front
end uses, so both transports see the same sessions, models and futures — and returns the
`grpc.aio` server and its bound port; `stop_grpc` shuts it down gracefully. Modules: `server`
(the servicer and the per-call wrapper), `convert` (messages <-> typed requests and results),
`errors` (ServiceError -> gRPC status and trailing metadata).
"""

from mock_server.grpc.server import SERVICE_NAME, start_grpc, stop_grpc

__all__ = ["SERVICE_NAME", "start_grpc", "stop_grpc"]
