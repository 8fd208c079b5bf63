"""The report's plots, as plotly figures (the same library Optuna's own visualisation uses).

Every point's hover names the trial and its architecture in block strings, so a user reading the
front can copy the design they want and ``nas best --trial N`` it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from effnas.results.analysis import choice_frequencies, running_best
from effnas.results.pareto import front_mask
from effnas.results.study import completed

TEMPLATE = "plotly_white"
GREY, BLUE, ORANGE, GREEN = "#9aa0a6", "#1f77b4", "#ff7f0e", "#2ca02c"
AXES = {"step_time_ms": "training step time (ms)", "params": "parameters (M)", "accuracy": "validation accuracy"}
KIND_TITLES = {"op": "block type", "kernel": "kernel size", "expand": "expansion ratio", "layers": "layers",
               "se": "squeeze-excitation"}


def _axis_values(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] / 1e6 if column == "params" else frame[column]


def _hover(frame: pd.DataFrame) -> tuple[list[list[Any]], str]:
    """customdata rows and the hovertemplate that shows one trial and its block strings."""
    data = [[int(row.number), row.reward, row.step_time_ms, row.params / 1e6, row.accuracy,
             "<br>".join(str(row.blocks).split())] for row in frame.itertuples()]
    template = ("<b>trial %{customdata[0]}</b><br>accuracy %{customdata[4]:.4f}<br>"
                "step time %{customdata[2]:.3f} ms<br>params %{customdata[3]:.3f} M<br>"
                "reward %{customdata[1]:.4f}<br><br>%{customdata[5]}<extra></extra>")
    return data, template


def pareto_figure(frame: pd.DataFrame, x: str, reference: dict[str, Any] | None = None) -> go.Figure:
    """Accuracy against ``x`` (step time or params): every trial, the 3-objective front, this pair's front."""
    done = completed(frame)
    on_front = front_mask(done)
    on_pair = front_mask(done, ("accuracy", x))
    figure = go.Figure()
    for subset, name, style in (
        (done[~on_front], "other trials", dict(color=GREY, size=7, opacity=0.6)),
        (done[on_front], "Pareto front (all 3 objectives)", dict(color=BLUE, size=9)),
    ):
        customdata, template = _hover(subset)
        figure.add_trace(go.Scatter(x=_axis_values(subset, x), y=subset["accuracy"], mode="markers", name=name,
                                    marker=style, customdata=customdata, hovertemplate=template))
    pair = done[on_pair].sort_values(x)
    customdata, template = _hover(pair)
    figure.add_trace(go.Scatter(
        x=_axis_values(pair, x), y=pair["accuracy"], mode="lines+markers", line_shape="vh",
        name="front of these two", line=dict(color=ORANGE, width=2),
        marker=dict(color=ORANGE, size=11, symbol="diamond-open", line=dict(width=2)),
        customdata=customdata, hovertemplate=template))
    if reference and reference.get(x) is not None and reference.get("accuracy") is not None:
        ref_x = reference[x] / 1e6 if x == "params" else reference[x]
        figure.add_trace(go.Scatter(x=[ref_x], y=[reference["accuracy"]], mode="markers", name="reference backbone",
                                    marker=dict(color=GREEN, size=15, symbol="star"),
                                    hovertemplate="reference backbone<extra></extra>"))
    figure.update_layout(template=TEMPLATE, height=460, title=f"Accuracy vs {AXES[x].split(' (')[0]}",
                         xaxis_title=AXES[x], yaxis_title=AXES["accuracy"], legend=dict(orientation="h", y=-0.18),
                         margin=dict(l=60, r=20, t=50, b=40))
    return figure


def reward_figure(frame: pd.DataFrame) -> go.Figure:
    """Reward of every completed trial in order, and the best so far: did the controller converge?"""
    history = running_best(frame)
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=history["number"], y=history["reward"], mode="markers", name="trial reward",
                                marker=dict(color=BLUE, size=7, opacity=0.7),
                                hovertemplate="trial %{x}<br>reward %{y:.4f}<extra></extra>"))
    figure.add_trace(go.Scatter(x=history["number"], y=history["best"], mode="lines", name="best so far",
                                line=dict(color=ORANGE, width=3, shape="hv"),
                                hovertemplate="after trial %{x}<br>best %{y:.4f}<extra></extra>"))
    figure.update_layout(template=TEMPLATE, height=380, title="Reward over trials", xaxis_title="trial",
                         yaxis_title="reward", legend=dict(orientation="h", y=-0.22),
                         margin=dict(l=60, r=20, t=50, b=40))
    return figure


def choices_figure(frame: pd.DataFrame, fraction: float = 0.1) -> go.Figure:
    """Per stage, how often each choice appears among the top trials vs all trials (one row per kind)."""
    shares = choice_frequencies(frame, fraction)
    kinds = [kind for kind in KIND_TITLES if kind in set(shares["kind"])]
    kinds += sorted(set(shares["kind"]) - set(kinds))
    rows = max(1, len(kinds))
    figure = make_subplots(rows=rows, cols=1, vertical_spacing=0.5 / rows,
                           subplot_titles=[KIND_TITLES.get(kind, kind) for kind in kinds] or ["no choices recorded"])
    top_label = f"top {fraction:.0%} by reward"
    for row, kind in enumerate(kinds, start=1):
        part = shares[shares["kind"] == kind]
        x = [[f"stage {s}" for s in part["stage"]], [f"{c:g}" if isinstance(c, float) else str(c)
                                                      for c in part["choice"]]]
        for column, name, color in (("all", "all trials", GREY), ("top", top_label, BLUE)):
            figure.add_trace(go.Bar(x=x, y=100 * part[column], name=name, marker_color=color,
                                    legendgroup=column, showlegend=row == 1,
                                    hovertemplate="%{x}<br>%{y:.0f} %<extra>" + name + "</extra>"),
                             row=row, col=1)
        figure.update_yaxes(title_text="% of trials", range=[0, 105], row=row, col=1)
    figure.update_layout(template=TEMPLATE, height=230 * rows + 80, barmode="group",
                         title="Choices per stage: top trials vs all trials",
                         legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
                         margin=dict(l=60, r=20, t=90, b=40))
    return figure


def compare_figure(curves: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Every compared network's validation accuracy and training loss per epoch (loss on a log axis, where a
    diverging run does not flatten the others into a line)."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["validation accuracy (EMA weights)", "training loss"])
    palette = [BLUE, ORANGE, GREEN, GREY, "#9334e6", "#e52592", "#12b5cb", "#7cb342"]
    for index, (name, rows) in enumerate(curves.items()):
        epochs = [row["epoch"] for row in rows]
        color = palette[index % len(palette)]
        accuracy = [row.get("ema_val_acc", row.get("val_acc")) for row in rows]
        figure.add_trace(go.Scatter(x=epochs, y=accuracy, mode="lines+markers", name=name, legendgroup=name,
                                    line=dict(color=color), hovertemplate=f"{name}<br>epoch %{{x}}<br>"
                                    "accuracy %{y:.4f}<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=epochs, y=[row["train_loss"] for row in rows], mode="lines+markers",
                                    name=name, legendgroup=name, showlegend=False, line=dict(color=color),
                                    hovertemplate=f"{name}<br>epoch %{{x}}<br>loss %{{y:.4g}}<extra></extra>"),
                         row=1, col=2)
    figure.update_xaxes(title_text="epoch", dtick=1, tick0=1)
    figure.update_yaxes(title_text="top-1", row=1, col=1)
    figure.update_yaxes(title_text="loss", type="log", row=1, col=2)
    figure.update_layout(template=TEMPLATE, height=420, title="Trained alike: the winner against the alternatives",
                         legend=dict(orientation="h", y=-0.2), margin=dict(l=60, r=20, t=70, b=40))
    return figure
