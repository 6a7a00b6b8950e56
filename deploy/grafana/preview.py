"""Render deploy/grafana/stitch.json's panels from a Prometheus server into one HTML page, laid
out on the dashboard's own 24-column grid (Python standard library only; no Grafana needed).

usage: python3 deploy/grafana/preview.py PROMETHEUS_URL MINUTES OUT.html [END_UNIX_TIME]

Every panel's queries run against PROMETHEUS_URL over the MINUTES minutes before END (default
now), with the
dashboard's variables set as Grafana would for "All" routes ($__rate_interval = 1m, $__range =
the window). Time series are drawn as lines, stats as numbers, bar gauges as bars and tables as
tables. Open the page in a browser, or screenshot it headless:
  chromium --headless --screenshot=stitch-dashboard.png --window-size=1400,1900 OUT.html
"""

import html
import json
import sys
import time
import urllib.parse
import urllib.request

COLS, COL_W, ROW_H, PAD = 24, 56, 30, 6
COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
          "#fade2a", "#96d98d", "#ffb357", "#ca95e5", "#ff9830"]


def query(prom, path, params):
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]["result"]


def expand(expr, window_s):
    return (expr.replace("$__rate_interval", "1m").replace("$__range", f"{window_s}s")
            .replace('"$route"', '".*"'))


def legend(fmt, metric):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(metric.items())) or "value"
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def fmt_value(v, unit):
    if v != v:  # NaN
        return "–"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.1f} s"
    if unit == "reqps":
        return f"{v:.2f} req/s"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def timeseries(p, prom, start, end, window_s, w, h):
    unit = p["fieldConfig"]["defaults"].get("unit", "short")
    series = []
    for t in p["targets"]:
        step = max(5, (end - start) // 120)
        for r in query(prom, "query_range", {"query": expand(t["expr"], window_s),
                                             "start": start, "end": end, "step": step}):
            pts = [(float(x), float(y)) for x, y in r["values"]]
            series.append((legend(t.get("legendFormat", ""), r["metric"]), pts))
    left, legend_w = 70, int(min(220, w * 0.38))
    plot_w, plot_h = w - legend_w - left - 10, h - 30
    ys = [y for _, pts in series for _, y in pts if y == y]
    top = max(ys) if ys else 1.0
    top = top * 1.1 if top > 0 else 1.0
    out = [f'<svg width="{w - legend_w}" height="{h}">']
    for i in range(5):
        y = 5 + plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.0f}" x2="{left + plot_w}" y2="{y:.0f}" '
                   'stroke="#2c3235"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.0f}" text-anchor="end">'
                   f'{html.escape(fmt_value(top * (4 - i) / 4, unit))}</text>')
    ticks = 4 if plot_w > 240 else 2
    for i in range(ticks):
        t = start + (end - start) * i / (ticks - 1)
        label = time.strftime("%H:%M", time.gmtime(t))
        anchor = "start" if i == 0 else "end" if i == ticks - 1 else "middle"
        out.append(f'<text x="{left + plot_w * i / (ticks - 1):.0f}" y="{plot_h + 20:.0f}" '
                   f'text-anchor="{anchor}">{label}</text>')
    legend_rows = []
    for n, (name, pts) in enumerate(series[:12]):
        color = COLORS[n % len(COLORS)]
        coords = " ".join(
            f"{left + plot_w * (x - start) / max(1, end - start):.1f},"
            f"{5 + plot_h * (1 - y / top):.1f}" for x, y in pts if y == y)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        last = pts[-1][1] if pts else float("nan")
        legend_rows.append(f'<div><span style="color:{color}">■</span> {html.escape(name)} '
                           f'<b>{html.escape(fmt_value(last, unit))}</b></div>')
    out.append("</svg>")
    if not series:
        legend_rows.append('<div class="none">no data</div>')
    return ('<div class="ts">' + "".join(out) + f'<div class="legend" style="width:{legend_w}px">'
            + "".join(legend_rows)
            + "</div></div>")


def instant(p, prom, end, window_s):
    rows = []
    for t in p["targets"]:
        for r in query(prom, "query", {"query": expand(t["expr"], window_s), "time": end}):
            rows.append((legend(t.get("legendFormat", ""), r["metric"]), float(r["value"][1])))
    return rows


def render(dash, prom, minutes, end):
    start = end - 60 * minutes
    window_s = end - start
    cells = []
    height = 0
    for p in dash["panels"]:
        g = p["gridPos"]
        x, y, w, h = g["x"] * COL_W, g["y"] * ROW_H, g["w"] * COL_W - PAD, g["h"] * ROW_H - PAD
        height = max(height, y + h + PAD)
        style = f"left:{x}px;top:{y}px;width:{w}px;height:{h}px"
        if p["type"] == "row":
            cells.append(f'<div class="row" style="{style}">{html.escape(p["title"])}</div>')
            continue
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        if p["type"] == "timeseries":
            body = timeseries(p, prom, start, end, window_s, w - 12, h - 34)
        elif p["type"] == "stat":
            rows = instant(p, prom, end, window_s)
            body = "".join(f'<div class="stat">{html.escape(fmt_value(v, unit))}'
                           f'<small>{html.escape(n)}</small></div>' for n, v in rows) or "no data"
        elif p["type"] == "bargauge":
            rows = instant(p, prom, end, window_s)
            top = max([v for _, v in rows] + [1])
            body = "".join(
                f'<div class="bar"><span>{html.escape(n)}</span><i style="width:{60 * v / top:.0f}%">'
                f'</i><b>{fmt_value(v, unit)}</b></div>' for n, v in rows) or "no data"
        else:
            rows = instant(p, prom, end, window_s)
            body = ('<table><tr><th>series</th><th>value</th></tr>' + "".join(
                f"<tr><td>{html.escape(n)}</td><td>{fmt_value(v, unit)}</td></tr>" for n, v in rows)
                + "</table>")
        cells.append(f'<div class="panel" style="{style}"><h3>{html.escape(p["title"])}</h3>'
                     f"{body}</div>")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(dash['title'])}</title>
<style>
body{{background:#111217;color:#ccccdc;font:12px system-ui,sans-serif;margin:10px}}
h1{{font-size:16px;margin:0 0 8px}} h3{{font-size:12px;margin:0 0 4px;font-weight:600}}
.grid{{position:relative;width:{COLS * COL_W}px;height:{height}px}}
.panel{{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px;box-sizing:border-box;overflow:hidden}}
.row{{position:absolute;font-size:14px;font-weight:600;padding-top:6px}}
svg text{{fill:#8e8e8e;font-size:10px}} .ts{{display:flex}} .legend{{overflow:hidden;font-size:11px;white-space:nowrap}}
.stat{{font-size:30px;color:#73bf69;font-weight:600}} .stat small{{display:block;font-size:11px;color:#8e8e8e;font-weight:400}}
.bar{{display:flex;align-items:center;gap:6px;margin:3px 0}} .bar span{{width:30%;overflow:hidden}} .bar i{{display:block;height:12px;background:#73bf69}}
table{{border-collapse:collapse;width:100%}} td,th{{text-align:left;padding:2px 4px;border-bottom:1px solid #2c3235}}
.none{{color:#8e8e8e}}
</style></head><body><h1>{html.escape(dash['title'])} — last {minutes} min, {when}, route = All (rendered by deploy/grafana/preview.py)</h1>
<div class="grid">{''.join(cells)}</div></body></html>
"""


def main():
    prom, minutes, out = sys.argv[1].rstrip("/"), int(sys.argv[2]), sys.argv[3]
    end = int(sys.argv[4]) if len(sys.argv) > 4 else int(time.time())
    path = __file__.rsplit("/", 1)[0] + "/stitch.json"
    with open(path) as f:
        dash = json.load(f)
    with open(out, "w") as f:
        f.write(render(dash, prom, minutes, end))


if __name__ == "__main__":
    main()
