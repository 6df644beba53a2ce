"""The batching sweep's chart and table, rendered on the server (SVG and HTML, no script, no CDN):
throughput per configuration as bars with the min–max of its repeats as whiskers (left axis), p99 as
dots with their min–max (right axis) against the SLO line, the chosen configuration marked. Every
text that comes from data is escaped."""

from __future__ import annotations

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from .tuning import config_label  # noqa: F401 - the admin names configurations as the points do

WIDTH, HEIGHT = 820, 360
LEFT, RIGHT, TOP, BOTTOM = 60, 70, 20, 110
TP_COLOUR, P99_COLOUR, CHOSEN_COLOUR, SLO_COLOUR = "#4a7ab5", "#c0504d", "#2e8b57", "#c0504d"


def _nice(value: float) -> float:
    """An axis maximum a little above `value`: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value)))
    power = power / 10 if power > value else power
    for step in (1, 2, 5, 10):
        if step * power / 10 >= value:
            return step * power / 10
    return value


def chart(points: list[dict], slo_p99_ms: float, chosen: dict | None) -> SafeString:
    """An SVG chart of the measured points ('' when none is measured yet)."""
    measured = [p for p in points if "error" not in p]
    if not measured:
        return mark_safe("")
    text = {
        "aria": gettext("throughput and p99 per configuration"),
        "throughput": gettext("throughput (calls/s)"),
        "p99": gettext("p99 (ms)"),
        "slo": gettext("SLO p99 %(ms)s ms") % {"ms": f"{slo_p99_ms:g}"},
    }
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    tp_max = _nice(max(p["throughput"]["max"] for p in measured) * 1.1)
    p99_max = _nice(max(max(p["p99_ms"]["max"] for p in measured), slo_p99_ms) * 1.1)
    slot = plot_w / len(points)
    bar = max(4.0, slot * 0.5)

    def y_tp(v: float) -> float:
        return TOP + plot_h - v / tp_max * plot_h

    def y_p99(v: float) -> float:
        return TOP + plot_h - v / p99_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(text["aria"])}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):  # grid lines and both axes' ticks
        frac = i / 4
        y = TOP + plot_h - frac * plot_h
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{tp_max * frac:g}</text>')
        parts.append(f'<text x="{LEFT + plot_w + 4}" y="{y + 4:.1f}">{p99_max * frac:g}</text>')
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" transform="rotate(-90 14 {TOP + plot_h / 2:.0f})" '
        f'text-anchor="middle" fill="{TP_COLOUR}">{escape(text["throughput"])}</text>'
    )
    x_right = WIDTH - 14
    parts.append(
        f'<text x="{x_right}" y="{TOP + plot_h / 2:.0f}" transform="rotate(90 {x_right} {TOP + plot_h / 2:.0f})" '
        f'text-anchor="middle" fill="{P99_COLOUR}">{escape(text["p99"])}</text>'
    )
    y_slo = y_p99(slo_p99_ms)
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y_slo:.1f}" y2="{y_slo:.1f}" stroke="{SLO_COLOUR}" '
        f'stroke-dasharray="6 4"/><text x="{LEFT + 4}" y="{y_slo - 4:.1f}" fill="{SLO_COLOUR}">'
        f"{escape(text['slo'])}</text>"
    )
    for index, point in enumerate(points):
        cx = LEFT + slot * (index + 0.5)
        label = escape(point.get("label", ""))
        parts.append(
            f'<text x="{cx:.1f}" y="{TOP + plot_h + 10}" transform="rotate(45 {cx:.1f} {TOP + plot_h + 10})">'
            f"{label}</text>"
        )
        if "error" in point:
            parts.append(f'<text x="{cx:.1f}" y="{TOP + plot_h - 6}" text-anchor="middle" fill="#999">✗</text>')
            continue
        tp, p99 = point["throughput"], point["p99_ms"]
        is_chosen = chosen is not None and point.get("config") == chosen
        fill = CHOSEN_COLOUR if is_chosen else TP_COLOUR
        top = y_tp(tp["mean"])
        parts.append(
            f'<rect x="{cx - bar / 2:.1f}" y="{top:.1f}" width="{bar:.1f}" height="{TOP + plot_h - top:.1f}" '
            f'fill="{fill}" fill-opacity="0.75"><title>{label}: {tp["mean"]:g} ± {tp["stdev"]:g} calls/s</title></rect>'
        )
        parts.append(_whisker(cx, y_tp(tp["min"]), y_tp(tp["max"]), "#333"))
        parts.append(_whisker(cx + bar / 4, y_p99(p99["min"]), y_p99(p99["max"]), P99_COLOUR))
        parts.append(
            f'<circle cx="{cx + bar / 4:.1f}" cy="{y_p99(p99["mean"]):.1f}" r="3.5" fill="{P99_COLOUR}">'
            f"<title>{label}: p99 {p99['mean']:g} ms (min {p99['min']:g}, max {p99['max']:g})</title></circle>"
        )
        if is_chosen:
            parts.append(f'<text x="{cx:.1f}" y="{top - 6:.1f}" text-anchor="middle" fill="{CHOSEN_COLOUR}">★</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers we formatted and escaped labels only


def _whisker(x: float, y_low: float, y_high: float, colour: str) -> str:
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_low:.1f}" y2="{y_high:.1f}" stroke="{colour}"/>'
        f'<line x1="{x - 3:.1f}" x2="{x + 3:.1f}" y1="{y_low:.1f}" y2="{y_low:.1f}" stroke="{colour}"/>'
        f'<line x1="{x - 3:.1f}" x2="{x + 3:.1f}" y1="{y_high:.1f}" y2="{y_high:.1f}" stroke="{colour}"/>'
    )


def _spread(figure: dict) -> str:
    return f"{figure['mean']:g} ± {figure['stdev']:g} ({figure['min']:g}–{figure['max']:g})"


def table(points: list[dict], chosen: dict | None) -> SafeString:
    """The points as an HTML table: mean ± stdev (min–max) of the repeats."""
    headings = (
        gettext("configuration"),
        gettext("throughput (calls/s)"),
        gettext("p99 (ms)"),
        gettext("p50 (ms)"),
        gettext("errors / sent"),
        gettext("generator lag (ms)"),
        gettext("generator CPU per call (ms)"),
        "",
    )
    head = format_html("<tr>{}</tr>", format_html_join("", "<th>{}</th>", ((h,) for h in headings)))

    def row(point: dict):
        if "error" in point:
            return (
                point.get("label", ""),
                format_html('<td colspan="6">{} {}</td>', gettext("not loaded:"), point["error"]),
                "",
            )
        cells = format_html(
            "<td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td>",
            _spread(point["throughput"]), _spread(point["p99_ms"]), _spread(point["p50_ms"]), point["errors"],
            point["sent"], f"{point['lag_ms_max']:g}", f"{point['cpu_ms_per_call']:g}",
        )  # fmt: skip
        return (
            point.get("label", ""),
            cells,
            gettext("chosen") if chosen is not None and point["config"] == chosen else "",
        )

    body = format_html_join("", "<tr><td>{}</td>{}<td>{}</td></tr>", (row(p) for p in points))
    return format_html('<table class="sweep-points">{}{}</table>', head, body)
