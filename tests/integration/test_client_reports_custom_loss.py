"""tinker_ref reports each custom-loss call's loss to the server (`X-Tinker-Custom-Loss` on the
call's first backward request), so the mock's status page can show the loss the user optimises
beside the server's surrogate (the page itself: test_status_page.py); a chunked call reports it
once."""

from __future__ import annotations

import pytest

import tinker_ref
from mock_server.embedded import serve
from tests.support.training import datum, token_mean_nll
from tinker_ref.types import Datum

TOKENS = list(b"the cat sat on the mat")


def _datum(shift: int) -> Datum:
    return datum(TOKENS[shift:] + TOKENS[:shift])


@pytest.mark.parametrize("chunk_len", [1024, 2])
def test_each_custom_loss_call_reports_its_loss_once_on_its_first_backward(chunk_len: int) -> None:
    with serve(client_config_overrides={"fwdbwd_max_chunk_len": chunk_len}) as mock:
        service = tinker_ref.ServiceClient(base_url=mock.url, api_key="tml-test")
        training = service.create_lora_training_client("tinker-ref/tiny-bytes", rank=4).result()
        data = [_datum(shift) for shift in range(3)]
        losses = []
        for _ in range(2):
            result = training.forward_backward_custom(data, token_mean_nll).result()
            losses.append(result.metrics["loss:sum"])
            training.optim_step(tinker_ref.types.AdamParams(learning_rate=1e-2)).result()
        records = mock.call(mock.service.records.records)
        service.close()
    reported = {r.seq_id: r.extra["custom_loss"] for r in records if "custom_loss" in r.extra}
    # One report per call, on its first backward seq_id, equal to the loss the client computed.
    chunks = 1 if chunk_len == 1024 else 2
    first_backward = [1 + chunks, 1 + 2 * chunks + 1 + chunks]
    assert sorted(reported) == first_backward
    assert [reported[s] for s in first_backward] == pytest.approx(losses, rel=1e-6)
