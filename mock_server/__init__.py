"""mock_server: a deterministic, offline Tinker backend (engine + HTTP/gRPC front ends)."""
