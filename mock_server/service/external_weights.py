"""`save_weights_external`: export a model's weights under `tinker://<run>/external_weights/<n>`.

The hosted service writes a HuggingFace-style export. The mock's models are tiny stand-ins with
their own parameter names, so its export is the adapter in the mock's own checkpoint layout
(`adapter.safetensors` + `metadata.json`, engine/checkpoint.py), without optimizer state. The
export is a checkpoint like the others for the REST API (listed as type `external`, deletable,
with a TTL); `GET .../external_weights_urls` answers one download URL per file, served by the
mock without a credential, as a signed URL is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mock_server.engine import save_checkpoint
from mock_server.service import checkpoint_meta, unsupported
from mock_server.service.checkpoints import check_name
from mock_server.service.context import ServiceContext
from mock_server.service.errors import Conflict
from mock_server.service.requests import SaveWeightsExternal
from mock_server.service.results import SaveWeightsExternalResult
from mock_server.service.state import Model, require_training

KIND = "external_weights"


def plan(
    ctx: ServiceContext, model: Model, req: SaveWeightsExternal
) -> tuple[Callable[[], Any], None]:
    """Validate on the loop; the returned work writes the export in the engine pool."""
    name = check_name(req.name, "path")
    unsupported.check_age_recipients(req.age_encryption_recipients)
    directory = ctx.checkpoints.root / model.model_id.replace(":", "~") / KIND / name
    path = f"tinker://{model.model_id}/{KIND}/{name}"

    def work() -> object:
        training = require_training(model)
        if ctx.checkpoints.exists(directory):
            raise Conflict(f"external weights {path} already exist", "path")
        save_checkpoint(training, directory, include_optimizer=False)
        ctx.checkpoints.saved(directory)
        checkpoint_meta.record_save(directory, req.ttl_seconds, None)
        size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        return SaveWeightsExternalResult(path, size)

    return work, None
