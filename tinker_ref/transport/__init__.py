"""Transports: how the clients reach a Tinker service (HTTP: the real wire; gRPC: the mock's)."""
