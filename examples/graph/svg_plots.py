"""Two dependency-free SVG charts: grouped bars and log-log lines.

matplotlib is not in the project's environment and the project's own charts are C++ PNG
writers (src/plot), so the example writes SVG text directly: it needs no rasteriser and no
font, and GitHub renders it inside the README.
"""
import math
from xml.sax.saxutils import escape

__all__ = ["bar_chart", "line_chart"]

COLORS = {"nsa": "#d62728", "full": "#1f77b4", "window": "#2ca02c", "nsa-paper": "#9467bd"}
_FALLBACK = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def _color(name, i):
    return COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def _svg(width, height, body, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def _legend(names, x, y):
    out = []
    for i, n in enumerate(names):
        out.append(f'<rect x="{x}" y="{y + 16 * i}" width="10" height="10" fill="{_color(n, i)}"/>'
                   f'<text x="{x + 14}" y="{y + 9 + 16 * i}">{escape(n)}</text>')
    return out


def bar_chart(path, groups, series, values, title, ylabel, ymin=0.0, ymax=1.0):
    """values[s][g]: one bar per series s inside each group g (None: no bar)."""
    W, H, left, right, top, bottom = 640, 360, 60, 110, 30, 50
    pw, ph = W - left - right, H - top - bottom
    y = lambda v: top + ph * (1 - (v - ymin) / (ymax - ymin))
    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
            f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    for k in range(6):
        v = ymin + (ymax - ymin) * k / 5
        body.append(f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    gw = pw / len(groups)
    bw = gw * 0.8 / len(series)
    for gi, g in enumerate(groups):
        x0 = left + gi * gw + gw * 0.1
        body.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 18}" text-anchor="middle">{escape(g)}</text>')
        for si, s in enumerate(series):
            v = values[s][gi]
            if v is None:
                continue
            yy = y(max(ymin, min(ymax, v)))
            body.append(f'<rect x="{x0 + si * bw:.1f}" y="{yy:.1f}" width="{bw * 0.92:.1f}" height="{top + ph - yy:.1f}" '
                        f'fill="{_color(s, si)}"><title>{escape(s)} {escape(g)}: {v:.4f}</title></rect>'
                        f'<text x="{x0 + si * bw + bw * 0.46:.1f}" y="{yy - 3:.1f}" text-anchor="middle" font-size="9">{v:.3f}</text>')
    body += _legend(series, left + pw + 12, top + 10)
    with open(path, "w") as f:
        f.write(_svg(W, H, body, title))


def line_chart(path, series, title, xlabel, ylabel):
    """series: {name: [(x, y), ...]} drawn on log2 x and log10 y axes."""
    pts = [p for s in series.values() for p in s if p[1] is not None and p[1] > 0]
    if not pts:
        return
    W, H, left, right, top, bottom = 640, 380, 70, 120, 30, 50
    pw, ph = W - left - right, H - top - bottom
    lx = [math.log2(p[0]) for p in pts]
    ly = [math.log10(p[1]) for p in pts]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly)) if math.ceil(max(ly)) > math.floor(min(ly)) else math.floor(min(ly)) + 1
    X = lambda v: left + pw * (math.log2(v) - x0) / (x1 - x0)
    Y = lambda v: top + ph * (1 - (math.log10(v) - y0) / (y1 - y0))
    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
            f'<text x="{left + pw / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    for e in range(y0, y1 + 1):
        yy = Y(10 ** e)
        body.append(f'<line x1="{left - 4}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    for xv in sorted({p[0] for p in pts}):
        body.append(f'<text x="{X(xv):.1f}" y="{top + ph + 16}" text-anchor="middle">{xv:g}</text>')
    for i, (name, s) in enumerate(series.items()):
        s = [p for p in s if p[1] is not None and p[1] > 0]
        if not s:
            continue
        c = _color(name, i)
        body.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                    + " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in s) + '"/>')
        body += [f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3" fill="{c}"><title>{escape(name)} {a:g}: {b:.4g}</title></circle>'
                 for a, b in s]
    body += _legend(list(series), left + pw + 12, top + 10)
    with open(path, "w") as f:
        f.write(_svg(W, H, body, title))
