"""`GET /`: a status page for people — sessions, models, step counts and loss curves.

Plain HTML from the server's own state, rendered on the event loop (where that state lives):
the registry's sessions, training models and samplers, and each model's `history` of completed
`forward_backward` / `optim_step` results. A loss curve is an inline SVG polyline of `loss:sum`
per training `forward_backward` (forward-only passes are not training and are left out), so
there is no script, no asset and no front-end build; `<meta http-equiv="refresh">` reloads the
page every few seconds. For a client-side custom loss (the SDK's `forward_backward_custom`) the
server only sees the surrogate pass, and the curve says so by naming the loss function.

Elements carry `id` / `data-*` attributes so a browser test can check the page's content.
With `--api-keys` the page shows nothing: sessions are then private to the key that made them
and a browser sends no key.
"""

from __future__ import annotations

import html
import time

from aiohttp import web

from mock_server.http.keys import SERVICE_KEY
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
svg.loss-curve text { font: 10px monospace; fill: #555; }
.muted { color: #888; }
"""


async def status_page(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.Response(text=render(service), content_type="text/html", charset="utf-8")


def render(service: TinkerService) -> str:
    """The whole page; call on the server's event loop."""
    config = service.config
    head = (
        f'<meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>tinker-mock status</title><style>{_STYLE}</style>"
    )
    title = (
        f'<h1>tinker-mock</h1><p id="server" data-seed="{config.seed}">seed {config.seed} · '
        f"rendered {time.strftime('%H:%M:%S')} · reloads every {REFRESH_SECONDS} s</p>"
    )
    if service.ctx.auth.restricted:
        body = (
            '<p id="restricted">This server runs with an API-key list: sessions are private '
            "to the key that created them, so this page shows none.</p>"
        )
    else:
        body = _sessions(service) + _models(service)
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


def _models(service: TinkerService) -> str:
    rows = [_model_row(model) for model in service.ctx.registry.models.values()]
    return (
        f'<h2>Training models <span class="muted">({len(rows)})</span></h2>'
        '<table id="models"><tr><th>model</th><th>base model</th><th>LoRA rank</th>'
        "<th>state</th><th>forward_backward</th><th>optimizer steps</th><th>last loss:sum</th>"
        f"<th>loss curve</th></tr>{''.join(rows)}</table>"
    )


def _model_row(model: Model) -> str:
    history = model.history
    losses = [
        e.metrics["loss:sum"]
        for e in history
        if e.op == "forward_backward" and "loss:sum" in e.metrics
    ]
    loss_fns = sorted({e.loss_fn for e in history if e.op == "forward_backward" and e.loss_fn})
    passes = sum(e.op == "forward_backward" for e in history)
    steps = sum(
        int(e.metrics.get("optimizer_step:sum", 0)) for e in history if e.op == "optim_step"
    )
    last = f"{losses[-1]:.6g}" if losses else "–"
    return (
        f'<tr class="model" data-model-id="{_e(model.model_id)}" data-steps="{steps}">'
        f"<td><code>{_e(model.model_id)}</code></td><td>{_e(model.base_model or '?')}</td>"
        f"<td>{model.lora.rank if model.lora else '?'}</td><td>{model.state.value}</td>"
        f"<td>{passes}</td><td>{steps}</td><td>{last}</td>"
        f"<td>{_curve(model.model_id, losses, loss_fns)}</td></tr>"
    )


def _curve(model_id: str, losses: list[float], loss_fns: list[str]) -> str:
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
    label = ", ".join(loss_fns)
    return (
        f'<svg class="loss-curve" data-model-id="{_e(model_id)}" data-points="{len(losses)}" '
        f'data-first="{losses[0]!r}" data-last="{losses[-1]!r}" width="{CURVE_WIDTH}" '
        f'height="{CURVE_HEIGHT}" viewBox="0 0 {CURVE_WIDTH} {CURVE_HEIGHT}" role="img">'
        f"<title>loss:sum per training pass ({_e(label)})</title>"
        f'<polyline points="{points}"/>'
        f'<text x="{CURVE_PAD}" y="{top + 4}">{high:.4g}</text>'
        f'<text x="{CURVE_PAD}" y="{top + inner_h}">{low:.4g}</text>'
        f'<text x="{CURVE_WIDTH - CURVE_PAD}" y="{CURVE_PAD + 6}" text-anchor="end">'
        f"{_e(label)} · {len(losses)} passes</text></svg>"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
