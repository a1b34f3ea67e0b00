"""A client that queues sample requests and then waits to be killed (the fairness row).

    python benchmarks/backlog_client.py URL MODEL REQUESTS TOKENS

Creates a session and a sampling session of MODEL, submits REQUESTS `asample` requests (one
sample of TOKENS tokens each) over one keep-alive HTTP connection, prints `queued`, then sleeps
until killed: what a training script killed mid-rollout leaves on the server. The wire requests
are the ones the SDKs send; no SDK is used so that `queued` means the server accepted them all.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def main(url: str, model: str, requests: int, tokens: int) -> None:
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-API-Key": "tml-bench", "Content-Type": "application/json"}
        connection.request("POST", f"/api/v1/{path}", json.dumps(body), headers)
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {text[:500]!r}")
        answer: dict[str, Any] = json.loads(text)
        return answer

    session = post("create_session", {"tags": [], "user_metadata": {}})["session_id"]
    body = {"session_id": session, "sampling_session_seq_id": 0, "base_model": model}
    sampler = post("create_sampling_session", body)["sampling_session_id"]
    for seq_id in range(requests):
        params = {"max_tokens": tokens, "seed": seq_id, "temperature": 1.0, "stop": []}
        prompt = {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]}
        sample = {"prompt": prompt, "sampling_params": params, "num_samples": 1}
        post("asample", {"sampling_session_id": sampler, "seq_id": seq_id, **sample})
    print("queued", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
