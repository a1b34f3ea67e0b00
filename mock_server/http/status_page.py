"""`GET /`: a status page for people — sessions, models, losses, failures, checkpoints, samplers.

Plain HTML from the server's own state, rendered on the event loop (where that state lives):
the registry's sessions, training models and samplers, each model's `history` of completed
`forward_backward` / `optim_step` results, the future store's queue depth, and the HTTP front
end's `StatusBoard` (failed requests and futures, checkpoints, client-reported custom losses).
A loss curve is an inline SVG polyline per training `forward_backward` (forward-only passes are
not training and are left out), so there is no script, no asset and no front-end build;
`<meta http-equiv="refresh">` reloads the page every few seconds.

The loss shown is the one the user optimises, as far as the server can know it. A built-in loss
is labelled by its name. For a client-side custom loss (`forward_backward_custom`) the server
sees only the surrogate pass, whose `loss:sum` is not the user's loss: it is labelled "server
surrogate", and the custom loss itself is drawn when the client reports it
(`X-Tinker-Custom-Loss`, status_board.py) as "custom loss (reported by the client)"; otherwise
the page says the custom loss is not visible to the server.

Elements carry `id` / `data-*` attributes so a browser test can check the page's content.
With `--api-keys` the page shows nothing: sessions are then private to the key that made them
and a browser sends no key.
"""

from __future__ import annotations

import html
import time

from aiohttp import web

from mock_server.http.keys import BOARD_KEY, SERVICE_KEY
from mock_server.http.status_board import CUSTOM_LOSS_HEADER, StatusBoard
from mock_server.service import TinkerService
from mock_server.service.state import Model

REFRESH_SECONDS = 2
CURVE_WIDTH, CURVE_HEIGHT, CURVE_PAD = 360, 100, 6  # SVG user units (CSS px at 1x)
CURVE_LABEL_WIDTH = 44  # left of the plot: the max / min loss labels

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
code { font-size: 12px; }
svg.loss-curve { background: #fafafa; border: 1px solid #ddd; }
svg.loss-curve polyline { fill: none; stroke: #1f6feb; stroke-width: 1.5; }
svg.loss-curve polyline.custom { stroke: #d9480f; stroke-width: 2; }
.failed { color: #b42318; }
svg.loss-curve text { font: 10px monospace; fill: #555; }
.muted { color: #888; }
"""


async def status_page(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    board = request.app.get(BOARD_KEY) or StatusBoard()
    return web.Response(text=render(service, board), content_type="text/html", charset="utf-8")


def render(service: TinkerService, board: StatusBoard | None = None) -> str:
    """The whole page; call on the server's event loop."""
    config = service.config
    head = (
        f'<meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>tinker-mock status</title><style>{_STYLE}</style>"
    )
    board = board or StatusBoard()
    pending = service.ctx.futures.pending_count
    title = (
        f'<h1>tinker-mock</h1><p id="server" data-seed="{config.seed}" data-pending="{pending}">'
        f"seed {config.seed} · queue depth: {pending} pending ops · "
        f"rendered {time.strftime('%H:%M:%S')} · reloads every {REFRESH_SECONDS} s</p>"
    )
    if service.ctx.auth.restricted:
        body = (
            '<p id="restricted">This server runs with an API-key list: sessions are private '
            "to the key that created them, so this page shows none.</p>"
        )
    else:
        body = (
            _sessions(service)
            + _models(service, board)
            + _failures(board)
            + _checkpoints(board)
            + _samplers(service)
        )
    return f"<!doctype html><html><head>{head}</head><body>{title}{body}</body></html>"


def _sessions(service: TinkerService) -> str:
    registry = service.ctx.registry
    rows = []
    for session in registry.sessions.values():
        models = sum(m.session_id == session.session_id for m in registry.models.values())
        samplers = sum(s.session_id == session.session_id for s in registry.samplers.values())
        rows.append(
            f'<tr class="session" data-session-id="{_e(session.session_id)}">'
            f"<td><code>{_e(session.session_id)}</code></td>"
            f"<td>{_e(session.sdk_version or '?')}</td><td>{models}</td><td>{samplers}</td>"
            f"<td>{'finished' if session.finished else 'open'}</td></tr>"
        )
    return (
        f'<h2>Sessions <span class="muted">({len(rows)})</span></h2>'
        '<table id="sessions"><tr><th>session</th><th>SDK</th><th>models</th>'
        f"<th>samplers</th><th>state</th></tr>{''.join(rows)}</table>"
    )


def _models(service: TinkerService, board: StatusBoard) -> str:
    pending_ids = {record.request_id for record in service.ctx.futures.pending()}
    rows = [
        _model_row(model, board, board.pending_of(model.model_id, pending_ids))
        for model in service.ctx.registry.models.values()
    ]
    return (
        f'<h2>Training models <span class="muted">({len(rows)})</span></h2>'
        '<table id="models"><tr><th>model</th><th>base model</th><th>LoRA rank</th>'
        "<th>state</th><th>forward_backward</th><th>optimizer steps</th><th>pending</th>"
        "<th>failures</th><th>last loss</th><th>loss curve</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _model_row(model: Model, board: StatusBoard, pending: int) -> str:
    history = model.history
    passes = [e for e in history if e.op == "forward_backward"]
    surrogate = [e.metrics["loss:sum"] for e in passes if "loss:sum" in e.metrics]
    loss_fns = sorted({e.loss_fn for e in passes if e.loss_fn})
    steps = sum(
        int(e.metrics.get("optimizer_step:sum", 0)) for e in history if e.op == "optim_step"
    )
    reported = board.custom_losses.get(model.model_id, {})
    custom = [reported[seq_id] for seq_id in sorted(reported)]
    failures = board.failure_counts.get(model.model_id, 0)
    if custom:
        kind = "reported"
        last = f"{custom[-1]:.6g} (custom loss, reported by the client)"
        cell = _curve(model.model_id, custom, "custom loss (reported by the client)", "custom")
        cell += _curve(model.model_id, surrogate, "server surrogate", "surrogate")
    elif board.custom_passes.get(model.model_id):
        kind = "hidden"
        last = f"{surrogate[-1]:.6g} (server surrogate)" if surrogate else "–"
        cell = (
            '<p class="muted custom-loss-hidden">custom loss (forward_backward_custom): not '
            "visible to the server, whose loss:sum below is the surrogate's. A client may send "
            f"it in the <code>{CUSTOM_LOSS_HEADER}</code> header.</p>"
        ) + _curve(model.model_id, surrogate, "server surrogate", "surrogate")
    else:
        kind = "built-in"
        last = f"{surrogate[-1]:.6g}" if surrogate else "–"
        cell = _curve(model.model_id, surrogate, f"loss:sum ({', '.join(loss_fns)})", "loss")
    return (
        f'<tr class="model" data-model-id="{_e(model.model_id)}" data-steps="{steps}" '
        f'data-failures="{failures}" data-pending="{pending}" data-loss-kind="{kind}">'
        f"<td><code>{_e(model.model_id)}</code></td><td>{_e(model.base_model or '?')}</td>"
        f"<td>{model.lora.rank if model.lora else '?'}</td><td>{model.state.value}</td>"
        f"<td>{len(passes)}</td><td>{steps}</td><td>{pending}</td>"
        f'<td class="{"failed" if failures else ""}">{failures}</td><td>{_e(last)}</td>'
        f"<td>{cell}</td></tr>"
    )


def _curve(model_id: str, losses: list[float], label: str, series: str) -> str:
    """An SVG polyline of `losses` scaled into the plot box; max and min written at the left."""
    if not losses:
        return '<span class="muted">no training pass yet</span>'
    low, high = min(losses), max(losses)
    left, top = CURVE_PAD + CURVE_LABEL_WIDTH, CURVE_PAD + 12  # room for the labels
    inner_w, inner_h = CURVE_WIDTH - left - CURVE_PAD, CURVE_HEIGHT - top - CURVE_PAD
    count = max(len(losses) - 1, 1)
    # (high - loss) / (high - low): the highest loss at the top; a flat curve sits mid-height.
    points = " ".join(
        f"{left + inner_w * i / count:.1f},"
        f"{top + inner_h * ((high - loss) / (high - low) if high > low else 0.5):.1f}"
        for i, loss in enumerate(losses)
    )
    css = "custom" if series == "custom" else ""
    return (
        f'<svg class="loss-curve" data-model-id="{_e(model_id)}" data-series="{series}" '
        f'data-label="{_e(label)}" data-points="{len(losses)}" data-first="{losses[0]!r}" '
        f'data-last="{losses[-1]!r}" width="{CURVE_WIDTH}" '
        f'height="{CURVE_HEIGHT}" viewBox="0 0 {CURVE_WIDTH} {CURVE_HEIGHT}" role="img">'
        f"<title>{_e(label)} per training pass</title>"
        f'<polyline class="{css}" points="{points}"/>'
        f'<text x="{CURVE_PAD}" y="{top + 4}">{high:.4g}</text>'
        f'<text x="{CURVE_PAD}" y="{top + inner_h}">{low:.4g}</text>'
        f'<text x="{CURVE_WIDTH - CURVE_PAD}" y="{CURVE_PAD + 6}" text-anchor="end">'
        f"{_e(label)} · {len(losses)} passes</text></svg>"
    )


def _failures(board: StatusBoard) -> str:
    rows = [
        f'<tr class="failure" data-endpoint="{_e(f.endpoint)}" data-status="{_e(f.status)}" '
        f'data-model-id="{_e(f.model_id or "")}" data-field="{_e(f.field or "")}">'
        f"<td>{time.strftime('%H:%M:%S', time.localtime(f.at))}</td>"
        f"<td><code>{_e(f.endpoint)}</code></td><td><code>{_e(f.model_id or '–')}</code></td>"
        f'<td class="failed">{_e(f.status)}</td><td><code>{_e(f.field or "–")}</code></td>'
        f"<td>{_e(f.detail)}</td></tr>"
        for f in reversed(board.failures)
    ]
    return (
        f'<h2>Failed requests <span class="muted">({len(rows)}, newest first)</span></h2>'
        '<table id="failures"><tr><th>at</th><th>endpoint</th><th>model / session</th>'
        f"<th>status</th><th>field</th><th>detail</th></tr>{''.join(rows)}</table>"
    )


def _checkpoints(board: StatusBoard) -> str:
    rows = [
        f'<tr class="checkpoint" data-model-id="{_e(c.model_id)}" data-kind="{_e(c.kind)}" '
        f'data-outcome="{_e(c.outcome)}" data-path="{_e(c.path or "")}">'
        f"<td>{time.strftime('%H:%M:%S', time.localtime(c.at))}</td>"
        f"<td><code>{_e(c.model_id)}</code></td><td>{_e(c.kind)}</td>"
        f"<td>{_e(c.name or '(ephemeral)')}</td><td>{_e(c.outcome)}</td>"
        f"<td><code>{_e(c.path or '–')}</code></td></tr>"
        for c in reversed(board.checkpoints)
    ]
    return (
        f'<h2>Checkpoints <span class="muted">({len(rows)})</span></h2>'
        '<table id="checkpoints"><tr><th>at</th><th>model</th><th>kind</th><th>name</th>'
        f"<th>outcome</th><th>path</th></tr>{''.join(rows)}</table>"
    )


def _samplers(service: TinkerService) -> str:
    rows = [
        f'<tr class="sampler" data-sampler-id="{_e(s.sampling_session_id)}">'
        f"<td><code>{_e(s.sampling_session_id)}</code></td><td>{_e(s.base_model)}</td>"
        f"<td><code>{_e(s.model_path or '(base model)')}</code></td>"
        f"<td>{len(s.requests)}</td></tr>"
        for s in service.ctx.registry.samplers.values()
    ]
    return (
        f'<h2>Sampling clients <span class="muted">({len(rows)})</span></h2>'
        '<table id="samplers"><tr><th>sampling session</th><th>base model</th>'
        f"<th>weights</th><th>sample requests</th></tr>{''.join(rows)}</table>"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
