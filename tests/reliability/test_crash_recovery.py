"""Kill -9 mid-run and restart on the same data dir: the run completes bit-identically.

The server runs as `tinker-mock serve --data-dir DIR` (crash safety on: service/journal.py); the
client is `tinker_ref`, unmodified, whose ordinary retries carry the run across each restart.
Three kill points in one run: during a forward (a 64x128 batch, killed the moment its POST was
accepted), between a backward and its optim_step, and during a save_state. The final weights
equal an undisturbed run's bit for bit, the journal shows no (model_id, seq_id) accepted twice,
and every replay reproduced every journaled outcome. The checkpoint whose save was killed,
loaded with its optimizer state into a new model (create_training_client_from_state_with_
optimizer), continues to the same bits as the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tinker_ref
from mock_server.service.journal import read_journal
from tests.reliability.crashing import (
    CrashableServer,
    accepted_twice,
    request_of,
    training_ops,
)
from tests.reliability.runs import (
    ADAM,
    BASE_MODEL,
    LORA_SEED,
    batch,
    checkpoint_dir,
    pairwise_loss,
    reference_digest,
    train_steps,
    weights_digest,
)


@pytest.mark.spec("DET-5")
@pytest.mark.timeout(240)
def test_run_killed_during_forward_between_backward_and_step_and_during_save_is_bit_identical(
    tmp_path: Path,
) -> None:
    steps = [batch(0), batch(1, size=64, length=128), batch(2), batch(3)]
    expected = reference_digest(steps, tmp_path)

    server = CrashableServer(tmp_path / "data")
    server.start()
    client = tinker_ref.ServiceClient(base_url=server.url, api_key="tml-crash")
    try:
        training = client.create_lora_training_client(
            base_model=BASE_MODEL, rank=4, seed=LORA_SEED
        ).result(timeout=60)
        train_steps(training, steps[:1])

        # 1. During a forward: killed once the big forward is accepted, before its backward.
        pending = training.forward_backward_custom(steps[1], pairwise_loss)
        at_kill = server.kill_when(lambda r: len(training_ops(r, "forward_backward")) >= 3)
        last = training_ops(at_kill, "forward_backward")[-1]
        assert request_of(last)["forward_only"] is True
        assert len(training_ops(at_kill, "forward_backward")) == 3  # no backward yet
        replayed, diverged = server.replayed(server.start())
        assert (replayed, diverged) == (len(at_kill), 0)
        pending.result(timeout=120)
        training.optim_step(ADAM).result(timeout=120)

        # 2. Between a backward and its optim_step: the accumulated gradient must survive.
        training.forward_backward_custom(steps[2], pairwise_loss).result(timeout=120)
        at_kill = server.kill()
        assert not training_ops(at_kill, "optim_step")[2:]  # two steps so far, the third not
        assert server.replayed(server.start())[1] == 0
        training.optim_step(ADAM).result(timeout=120)

        # 3. During a save: killed once save_state was accepted.
        saving = training.save_state("mid")
        at_kill = server.kill_when(lambda r: bool(training_ops(r, "save_weights")))
        assert server.replayed(server.start())[1] == 0
        mid_path = saving.result(timeout=120).path
        assert (checkpoint_dir(server.data_dir, mid_path) / "adapter.safetensors").is_file()

        train_steps(training, steps[3:])
        final_path = training.save_state("final").result(timeout=120).path
        # The checkpoint whose save was killed, resumed with its Adam state in a new model.
        resumed = client.create_training_client_from_state_with_optimizer(mid_path)
        train_steps(resumed, steps[3:])
        resumed_path = resumed.save_state("resumed").result(timeout=120).path
    finally:
        client.close()
        server.stop()

    assert server.starts == 4
    assert weights_digest(checkpoint_dir(server.data_dir, final_path)) == expected
    assert weights_digest(checkpoint_dir(server.data_dir, resumed_path)) == expected
    journal = read_journal(server.data_dir)
    assert accepted_twice(journal) == []
    # 4 custom steps x (fwd + bwd) + optim_step, and the resumed model's one step.
    assert len(training_ops(journal, "forward_backward")) == 10
    assert len(training_ops(journal, "optim_step")) == 5
