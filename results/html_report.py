"""One self-contained HTML page per search: plots, the front as a sortable table, failures, settings.

plotly.js is embedded once in the page, so the file opens offline and can be mailed around. A small
script records every JavaScript error into the page and marks ``#report-status`` once all plots
have drawn, which is how the headless-browser test knows the page really renders.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from string import Template
from typing import Any

import pandas as pd
import plotly.offline

from effnas.results.analysis import failure_counts, state_counts, top_trials
from effnas.results.figures import choices_figure, compare_figure, pareto_figure, reward_figure
from effnas.results.pareto import pareto_front
from effnas.results.study import block_strings, completed

_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 12px 24px 40px; color: #202124; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.sub { color: #5f6368; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #dadce0; border-radius: 8px; padding: 6px 14px; min-width: 84px; }
.card b { display: block; font-size: 1.4em; } .card span { color: #5f6368; font-size: 0.85em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.grid > div { min-width: 0; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 4px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f1f3f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th::after { content: " \\2195"; color: #aaa; }
code, .arch { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; }
.arch { white-space: normal; color: #3c4043; }
.effnas-error { color: #b00020; } #report-status { color: #5f6368; font-size: 0.8em; margin-top: 2em; }
</style>
<script>
(function () {
  var expected = $plot_count, rendered = {}, errors = [];
  function show(message) {
    var node = document.createElement("pre");
    node.className = "effnas-error";
    node.textContent = "JavaScript error: " + message;
    (document.body || document.documentElement).appendChild(node);
    var status = document.getElementById("report-status");
    if (status) { status.setAttribute("data-status", "error"); }
  }
  window.addEventListener("error", function (e) { errors.push(e.message); show(e.message); });
  window.addEventListener("unhandledrejection", function (e) {
    errors.push(String(e.reason)); show(String(e.reason));
  });
  function update() {  // runs after each plot and once the page is parsed (the status line comes last)
    var count = Object.keys(rendered).length, status = document.getElementById("report-status");
    if (status && count === expected && errors.length === 0) {
      status.setAttribute("data-status", "rendered");
      status.textContent = "All " + count + " plots rendered.";
    }
  }
  window.effnasRendered = function (id) {
    var div = document.getElementById(id);
    if (div && div.querySelector(".main-svg")) { rendered[id] = true; }
    update();
  };
  document.addEventListener("DOMContentLoaded", update);
})();
</script>
<script>$plotlyjs</script>
</head><body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
<div class="cards">$cards</div>
<h2>Pareto front</h2>
<p>Each point is one trained candidate; hover for its architecture. Blue points are not beaten on accuracy, step time
and parameters at once by any other trial; the orange line is the front of the two quantities plotted.</p>
<div class="grid"><div>$plot_time</div><div>$plot_params</div></div>
<h2>Search progress</h2>
$plot_reward
<h2>What the best architectures share</h2>
$plot_choices
<h2>The front ($front_count trials)</h2>
<p>Click a column to sort. Export one with <code>nas best RUN --trial N --out pick.json</code>.</p>
$front_table
$compare
<h2>Failed trials</h2>
$failures
<h2>Search settings</h2>
<div class="grid"><div>$settings</div><div><h3>Reference (backbone measured at the start)</h3>$reference</div></div>
<div id="report-status" data-status="pending">Plots not rendered yet.</div>
<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute("data-order") !== "asc";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("data-order"); });
      th.setAttribute("data-order", ascending ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute("data-sort"), y = b.cells[column].getAttribute("data-sort");
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>
</body></html>
""")


def _figure_html(figure: Any, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_height=figure.layout.height,
                          config={"displaylogo": False, "responsive": True},
                          post_script="window.effnasRendered('{plot_id}');")


def _cell(value: Any, digits: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return '<td class="num" data-sort="">-</td>'
    if isinstance(value, (int, float)):
        return f'<td class="num" data-sort="{float(value)!r}">{format(value, digits)}</td>'
    return f'<td data-sort="{html.escape(str(value))}">{html.escape(str(value))}</td>'


def _front_table(front: pd.DataFrame) -> str:
    head = ("<tr><th>trial</th><th>accuracy</th><th>step time (ms)</th><th>params (M)</th><th>MACs (M)</th>"
            "<th>reward</th><th>architecture (block strings)</th></tr>")
    rows = []
    for row in front.itertuples():
        step = _cell(row.step_time_ms, ".3f")
        if getattr(row, "unsteady", False) == True:  # noqa: E712 - numpy bool, or NaN in a foreign table
            step = step.replace("</td>", ' <span class="unsteady" title="step time too unsteady to rank: spread '
                                f'{row.step_time_spread:.2f} (p90 - p10 over the median)">&#9888; unsteady</span></td>')
        rows.append("<tr>" + _cell(int(row.number)) + _cell(row.accuracy, ".4f") + step
                    + _cell(row.params / 1e6, ".3f") + _cell(row.macs / 1e6, ".2f") + _cell(row.reward, ".4f")
                    + f'<td class="arch" data-sort="{html.escape(row.blocks)}">{html.escape(row.blocks)}</td></tr>')
    return f'<table class="sortable" id="front-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``trial.epochs``); a stored spec as its block strings."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "stages" in value:
            flat[name] = block_strings(value) or json.dumps(value)
        elif isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key_values(data: dict[str, Any]) -> str:
    if not data:
        return "<p>(not recorded)</p>"
    rows = []
    for key, value in _flatten(data).items():
        text = value if isinstance(value, str) else f"{value:.6g}" if isinstance(value, float) else json.dumps(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td><code>{html.escape(str(text))}</code></td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _cards(frame: pd.DataFrame, front_count: int) -> str:
    done, counts = completed(frame), state_counts(frame)
    items = [(str(len(frame)), "trials")] + [(str(n), state) for state, n in counts.items()
                                               if n or state in ("completed", "failed")]
    items.append((str(front_count), "on the Pareto front"))
    if not done.empty:
        best = top_trials(frame, 0.0).iloc[0]
        items.append((f"{best['reward']:.4f}", f"best reward (trial {int(best['number'])})"))
        items.append((f"{done['accuracy'].max():.4f}", "best accuracy"))
    return "".join(f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for v, k in items)


def _compare_html(compare: dict[str, Any], figure_html: str) -> str:
    """``nas compare``'s table and curves: the searched network against what the user could use instead."""
    columns = [("model", "model", ""), ("kind", "kind", ""), ("test_top1", "test top-1", ".4f"),
               ("top1", "validation top-1", ".4f"), ("params", "params", ",.0f"), ("macs", "MACs", ",.0f"),
               ("train_seconds", "training time (s)", ".1f"), ("epochs", "epochs", ".2f"),
               ("images_per_second", "images/s", ",.0f"), ("step_time_ms", "step time (ms)", ".2f")]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(key), digits) for key, _, digits in columns) + "</tr>"
                   for row in compare.get("rows", []))
    table = f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return ("<h2>Against the alternatives</h2><p>Every network trained with the same recipe, data split, training "
            "time (or epochs), image size and device (<code>nas compare</code>); classical baselines on the "
            "flattened pixels of the same split. Test top-1 is on the data's own test split, which neither the "
            f"search nor the training read.</p>{table}<div>{figure_html}</div>")


def render_html(frame: pd.DataFrame, info: dict[str, Any], source: str, compare: dict[str, Any] | None = None) -> str:
    """The whole report page for a trials table and its ``study_info`` (and ``nas compare``'s results, if any)."""
    settings, reference = dict(info.get("settings") or {}), dict(info.get("reference") or {})
    figures = {"plot_time": pareto_figure(frame, "step_time_ms", reference),
               "plot_params": pareto_figure(frame, "params", reference),
               "plot_reward": reward_figure(frame), "plot_choices": choices_figure(frame)}
    compare_section = ""
    if compare and compare.get("rows"):
        figures["plot_compare"] = compare_figure(compare.get("curves") or {})
        compare_section = _compare_html(compare, _figure_html(figures["plot_compare"], "plot-compare"))
    front = pareto_front(frame)
    failures = failure_counts(frame)
    failure_rows = "".join(f"<tr><td>{html.escape(r.reason)}</td><td class='num'>{r.trials}</td></tr>"
                           for r in failures.itertuples())
    failure_html = (f"<table><tr><th>reason</th><th>trials</th></tr>{failure_rows}</table>" if len(failures)
                    else "<p>No trial failed.</p>")
    controller = info.get("controller") or "unknown controller"
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    subtitle = (f"{html.escape(str(controller))} search, study <code>{html.escape(info.get('study_name', ''))}</code> "
                f"in <code>{html.escape(source)}</code>, "
                f"directions {html.escape(', '.join(info.get('directions', [])))}; "
                f"generated {generated} by effnas. The same study opens in "
                f"<code>optuna-dashboard</code>.")
    return _PAGE.substitute(
        title=html.escape(f"effnas report: {settings.get('name') or source}"),
        subtitle=subtitle, cards=_cards(frame, len(front)), plot_count=len(figures),
        plotlyjs=plotly.offline.get_plotlyjs(),
        **{name: _figure_html(figure, name.replace("_", "-")) for name, figure in figures.items()
           if name != "plot_compare"},
        compare=compare_section,
        front_count=len(front), front_table=_front_table(front), failures=failure_html,
        settings=_key_values(settings), reference=_key_values(reference))
