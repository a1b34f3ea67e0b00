"""`save_weights_external`: export a model's weights under `tinker://<run>/external_weights/<n>`.

The hosted service writes a HuggingFace-style export. The mock's models are tiny stand-ins with
their own parameter names, so its export is the adapter in the mock's own checkpoint layout
(`adapter.safetensors` + `metadata.json`, engine/checkpoint.py), without optimizer state. The
export is a checkpoint like the others for the REST API (listed as type `external`, deletable,
with a TTL); `GET .../external_weights_urls` answers one download URL per file, served by the
mock without a credential, as a signed URL is.

`SaveWeightsExternalOp` is a `ModelOp` (admission.py): sequenced on the model's lane by
`seq_id` like `save_state`, and journaled because it is submitted.
"""

from __future__ import annotations

from pathlib import Path

from mock_server.engine import save_checkpoint
from mock_server.service import checkpoint_meta, unsupported
from mock_server.service.admission import ModelOp
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import check_name
from mock_server.service.context import ServiceContext
from mock_server.service.errors import Conflict
from mock_server.service.requests import SaveWeightsExternal
from mock_server.service.results import SaveWeightsExternalResult
from mock_server.service.state import require_training

KIND = "external_weights"


class SaveWeightsExternalOp(ModelOp[SaveWeightsExternal]):
    """The model's adapter weights, without optimizer state, as an external export."""

    name = "training.save_weights_external"
    kind = "save_weights_external"
    _directory: Path
    _path: str  # tinker://<model>/external_weights/<name>

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        name = check_name(self.request.name, "path")
        unsupported.check_age_recipients(self.request.age_encryption_recipients)
        model_id = self.model.model_id
        self._directory = ctx.checkpoints.root / model_id.replace(":", "~") / KIND / name
        self._path = f"tinker://{model_id}/{KIND}/{name}"

    def run(self, ctx: ServiceContext) -> SaveWeightsExternalResult:
        training, directory = require_training(self.model), self._directory
        if ctx.checkpoints.exists(directory):
            raise Conflict(f"external weights {self._path} already exist", "path")
        save_checkpoint(training, directory, include_optimizer=False)
        ctx.checkpoints.saved(directory)
        checkpoint_meta.record_save(directory, self.request.ttl_seconds, None)
        size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        return SaveWeightsExternalResult(self._path, size)
