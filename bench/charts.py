"""Hand-written SVG charts from a results document: latency.svg and throughput.svg."""
import math
import os
import random
from xml.sax.saxutils import escape

COLORS = {"ferry": "#d9480f", "rsync": "#1c7ed6", "rsync-pipe": "#15aabf", "unison": "#7048e8",
          "lsyncd": "#2b8a3e", "cp": "#868e96", "tar": "#495057", "docker-cp": "#e67700",
          "docker-tar": "#5c940d"}
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
WIDTH = 820


def color(tool):
    return COLORS.get(tool.split(" ")[0], "#555")


class Svg:
    """A list of SVG elements with a few drawing helpers."""

    def __init__(self):
        self.items = []

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
        self.items.append(f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
                          f"font-weight='{weight}' fill='{fill}'>{escape(str(s))}</text>")

    def line(self, x1, y1, x2, y2, stroke="#222", width=1, dash=None, opacity=1):
        d = f" stroke-dasharray='{dash}'" if dash else ""
        self.items.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                          f"stroke='{stroke}' stroke-width='{width}' opacity='{opacity}'{d}/>")

    def rect(self, x, y, w, h, fill, opacity=1):
        self.items.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(w, 0):.1f}' height='{h:.1f}' "
                          f"fill='{fill}' opacity='{opacity}'/>")

    def circle(self, x, y, r, fill, opacity=1):
        self.items.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r}' fill='{fill}' opacity='{opacity}'/>")

    def path(self, d, fill="none", stroke="#222", width=1):
        self.items.append(f"<path d='{d}' fill='{fill}' stroke='{stroke}' stroke-width='{width}'/>")

    def render(self, height):
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height:.0f}' "
                f"viewBox='0 0 {WIDTH} {height:.0f}' {FONT}>\n"
                f"<rect width='100%' height='100%' fill='white'/>\n" + "\n".join(self.items) + "\n</svg>\n")


def nice_ticks(top):
    """Round ticks from 0 to at least `top` (about 4 to 6 of them)."""
    if top <= 0:
        return [0, 1]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def tick_label(v):
    return f"{v:g}" if v >= 1 or v == 0 else f"{v:.2g}"


def log_range(vmin, vmax):
    """The 1-2-5 values just below vmin and just above vmax."""
    steps = [m * 10 ** e for e in range(-2, 7) for m in (1, 2, 5)]
    lo = max([v for v in steps if v <= max(vmin, 0.01) / 1.1], default=steps[0])
    hi = min([v for v in steps if v >= vmax * 1.1 and v > lo], default=steps[-1])
    return lo, hi


def log_ticks(lo, hi):
    """1-2-5 ticks covering [lo, hi]."""
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10 ** e for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    return out


def suffix(doc):
    """' (target)' labels only when a run measured more than one target."""
    many = len(doc["parameters"]["targets"]) > 1
    return (lambda f: f" ({f['target']})") if many else (lambda f: "")


# --- latency ---------------------------------------------------------------------------------

def latency_svg(doc):
    figs = [f for f in doc["figures"] if f["scenario"] == "latency"]
    if not figs:
        return None
    tgt = suffix(doc)
    values = [x for f in figs for r in f["results"].values() if r["status"] == "ok" for x in r["samples"]]
    lo, hi = log_range(min(values, default=1), max(values, default=10))
    x0, x1 = 190, WIDTH - 120
    xs = lambda v: x0 + (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (x1 - x0)
    s = Svg()
    s.text(20, 26, "Save-to-visible latency of one small file while watching", 16, weight="bold")
    s.text(20, 46, f"{figs[0]['corpus']}; {doc['parameters']['samples']} samples per tool and "
                   "direction; log scale", 12, fill="#555")
    legend(s, 20, 70)
    rows_top = 96
    bottom = rows_top + sum(28 + 26 * len(f["results"]) for f in figs)
    for t in log_ticks(lo, hi):
        s.line(xs(t), rows_top, xs(t), bottom, "#e5e5e5")
        s.text(xs(t), bottom + 16, tick_label(t), 11, "middle", fill="#555")
    s.line(x0, bottom, x1, bottom, "#888")
    s.text((x0 + x1) / 2, bottom + 34, "milliseconds from the write to the file complete on the "
           "other side (log scale)", 12, "middle")
    y = rows_top
    for f in figs:
        s.text(20, y + 14, f["label"].replace("save-to-visible ", "") + tgt(f), 13, weight="bold")
        y += 22
        for tool, r in f["results"].items():
            s.text(30, y + 13, tool, 12, fill=color(tool))
            if r["status"] != "ok":
                s.text(x0, y + 13, "failed: " + r["reason"][:80], 11, fill="#c92a2a")
            else:
                latency_row(s, r, xs, y + 9, color(tool))
            y += 26
        y += 6
    return s.render(bottom + 50)


def latency_row(s, r, xs, yc, c):
    """Samples as jittered dots, percentiles as ticks, p50 written at the right."""
    rnd = random.Random(0)
    for v in r["samples"]:
        s.circle(xs(v), yc + rnd.uniform(-6, 6), 2.2, c, 0.45)
    st = r["stats"]
    s.line(xs(st["p50"]), yc - 10, xs(st["p50"]), yc + 10, "#111", 3)
    s.line(xs(st["p90"]), yc - 8, xs(st["p90"]), yc + 8, "#111", 1.5)
    s.line(xs(st["p99"]), yc - 8, xs(st["p99"]), yc + 8, "#111", 1.5, dash="2,2")
    mx = xs(st["max"])
    s.path(f"M{mx - 4:.1f},{yc - 4:.1f} L{mx + 4:.1f},{yc + 4:.1f} M{mx - 4:.1f},{yc + 4:.1f} "
           f"L{mx + 4:.1f},{yc - 4:.1f}", stroke="#111", width=1.5)
    s.text(WIDTH - 110, yc + 4, f"p50 {st['p50']:.1f} ms", 11, fill="#333")


def legend(s, x, y):
    s.circle(x + 4, y - 4, 2.5, "#555", 0.5)
    s.text(x + 12, y, "one sample", 11)
    x += 90
    for label, width, dash in (("p50", 3, None), ("p90", 1.5, None), ("p99", 1.5, "2,2")):
        s.line(x, y - 10, x, y + 2, "#111", width, dash=dash)
        s.text(x + 6, y, label, 11)
        x += 50
    s.path(f"M{x - 4},{y - 8} L{x + 4},{y} M{x - 4},{y} L{x + 4},{y - 8}", stroke="#111", width=1.5)
    s.text(x + 8, y, "max", 11)


# --- throughput ------------------------------------------------------------------------------

def throughput_panels(doc):
    """(title, [(label, tool, value or None, mark or failure)]) for first sync and no-op figures."""
    tgt = suffix(doc)
    panels = []
    for f in doc["figures"]:
        if f["scenario"] == "first" and f["key"] == "first":
            bars = [(t, t, r) for t, r in f["results"].items()]
            panels.append((f"First sync, {f['corpus']}{tgt(f)}", bars))
    noops = {}
    for f in doc["figures"]:
        if f["scenario"] == "noop":
            kind = {"noop-after-copy": "ferry, first restart after copy", "noop": None,
                    "noop-rescan": "ferry, rescan in session"}[f["key"]]
            bars = noops.setdefault((f["corpus"], tgt(f)), [])
            for t, r in f["results"].items():
                bars.append((kind or (t + (", restart" if t == "ferry" else "")), t, r))
    ferry_order = ["ferry, restart", "ferry, first restart after copy", "ferry, rescan in session"]
    for (corpus, t), bars in noops.items():
        order = lambda b: ferry_order.index(b[0]) if b[0] in ferry_order else len(ferry_order)
        panels.append((f"No-op sync (nothing changed), {corpus}{t}", sorted(bars, key=order)))
    return panels


def throughput_svg(doc):
    panels = throughput_panels(doc)
    if not panels:
        return None
    s = Svg()
    s.text(20, 26, "First sync and no-op sync, seconds (lower is better)", 16, weight="bold")
    s.text(20, 46, "destinations on tmpfs; median of the repeated runs; * some runs disturbed by "
                   "other work on the machine", 12, fill="#555")
    y = 70
    x0, x1 = 230, WIDTH - 90
    for title, bars in panels:
        s.text(20, y + 14, title, 13, weight="bold")
        y += 24
        top = max([r["value"] for _, _, r in bars if r["status"] == "ok"], default=1)
        ticks = nice_ticks(top)
        xs = lambda v: x0 + v / ticks[-1] * (x1 - x0)
        bottom = y + 20 * len(bars) + 2
        for t in ticks:
            s.line(xs(t), y, xs(t), bottom, "#e5e5e5")
            s.text(xs(t), bottom + 13, tick_label(t), 10, "middle", fill="#555")
        s.line(x0, bottom, x1, bottom, "#888")
        s.line(x0, y, x0, bottom, "#888")
        for label, tool, r in bars:
            s.text(x0 - 8, y + 13, label, 12, "end", fill=color(tool))
            if r["status"] == "ok":
                s.rect(x0, y + 2, xs(r["value"]) - x0, 15, color(tool), 0.85)
                mark = "*" if r.get("disturbed") else ""
                s.text(xs(r["value"]) + 5, y + 14, f"{r['value']:.3g} s{mark}", 11)
            else:
                s.text(x0 + 4, y + 14, "failed: " + r["reason"][:70], 11, fill="#c92a2a")
            y += 20
        y += 34
    return s.render(y)


def write_charts(doc, results_dir):
    """Write latency.svg and throughput.svg; a chart the document has no figures for is removed,
    so that no chart older than latest.json is left beside it. Returns (written, removed)."""
    written, removed = [], []
    for name, make in (("latency.svg", latency_svg), ("throughput.svg", throughput_svg)):
        svg = make(doc)
        path = os.path.join(results_dir, name)
        if svg:
            with open(path, "w") as f:
                f.write(svg)
            written.append(path)
        elif os.path.exists(path):
            os.remove(path)
            removed.append(path)
    return written, removed
