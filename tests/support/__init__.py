"""The test suite's helpers, in one place: data builders and losses (`training`), fixtures
shared by every directory (`fixtures`), hypothesis example counts (`profiles`), raw HTTP
(`http_api`), server state (`server_state`), conformance runs, official-SDK virtualenvs and
the subprocess drivers that run inside them."""
