"""Results: figures collected by the scenarios, the text table, the JSON document, the README.

A figure is one thing measured for every tool that does the job, e.g. "first sync of the small
corpus, local target". Its `results` map a tool to {status: ok|failed, value, samples, ...};
peers also get `ratio` = ferry's value / theirs.
"""
import json
import os
import re

from common import median

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
SCENARIOS = {
    "first": "first sync into an empty destination",
    "noop": "sync when nothing changed",
    "edit": "one byte changed in the middle of a big file",
    "latency": "save-to-visible of one small file while watching",
    "burst": "many files rewritten at once (a branch switch) while watching",
    "idle": "cost of watching an idle tree",
}
LEGEND = ("peer cells: value (ferry/peer ratio, below 1 means ferry is faster or smaller); "
          "* a sample ran while other work kept the machine busy; ! the result did not match "
          "the source")


class Figure:
    """One measured quantity across tools; stored as a plain dict in the JSON."""

    def __init__(self, scenario, target, key, label, unit, corpus=None, note=None, stat_rows=None):
        self.d = {"scenario": scenario, "target": target, "key": key, "label": label, "unit": unit,
                  "corpus": corpus, "note": note, "stat_rows": stat_rows, "results": {}}

    def ok(self, tool, value, samples, **fields):
        """Record a tool's figure; fields may add stats, extra, incomplete (a mismatch note)."""
        r = {"status": "ok", "value": value, "samples": samples}
        r.update({k: v for k, v in fields.items() if v is not None})
        disturbed = sum(1 for s in samples if isinstance(s, dict) and s.get("disturbed"))
        if disturbed or (fields.get("extra") or {}).get("disturbed"):
            r["disturbed"] = disturbed or 1
        self.d["results"][tool] = r

    def ok_median(self, tool, samples, key="wall_s", **fields):
        """Record the median of samples[key] (timed runs)."""
        self.ok(tool, median([s[key] for s in samples]), samples, **fields)

    def failed(self, tool, reason, samples=()):
        self.d["results"][tool] = {"status": "failed", "reason": str(reason), "samples": list(samples)}


class Results:
    """All figures of a run, in the order the scenarios produced them."""

    def __init__(self):
        self.figures = []

    def figure(self, *args, **kw):
        f = Figure(*args, **kw)
        self.figures.append(f)
        return f

    def dicts(self):
        """The figures as dicts, with ratios ferry/peer filled in."""
        out = []
        for f in self.figures:
            d = f.d
            ferry = d["results"].get("ferry")
            for tool, r in d["results"].items():
                if tool == "ferry" or r["status"] != "ok" or not ferry or ferry["status"] != "ok":
                    continue
                if r["value"]:
                    r["ratio"] = round(ferry["value"] / r["value"], 3)
                if "stats" in r and "stats" in ferry:
                    r["stat_ratios"] = {k: round(ferry["stats"][k] / r["stats"][k], 3)
                                        for k in d["stat_rows"] or () if r["stats"][k]}
            out.append(d)
        return out


# --- formatting ------------------------------------------------------------------------------

def fmt(value, unit):
    if unit == "bytes":
        for div, suffix in ((1e9, " GB"), (1e6, " MB"), (1e3, " kB")):
            if value >= div:
                return f"{value / div:.1f}{suffix}"
        return f"{value:.0f} B"
    if unit == "ms" or unit == "MiB" or value >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}"


def tools_of(figures):
    """ferry first, then peers in order of appearance."""
    tools = ["ferry"]
    for f in figures:
        tools += [t for t in f["results"] if t not in tools]
    return tools


def rows(figure, with_corpus=True):
    """Table rows of a figure: (label, {tool: cell text}), one per stat row (latency) or one."""
    label = figure["label"] + (f" ({figure['corpus']})" if with_corpus and figure.get("corpus") else "")
    keys = figure.get("stat_rows") or [None]
    out = []
    for k in keys:
        cells = {}
        for tool, r in figure["results"].items():
            if r["status"] != "ok":
                cells[tool] = "FAILED"
                continue
            v = r["stats"][k] if k else r["value"]
            ratio = r.get("stat_ratios", {}).get(k) if k else r.get("ratio")
            mark = ("*" if r.get("disturbed") else "") + ("!" if r.get("incomplete") else "")
            cell = fmt(v, figure["unit"]) + mark
            if ratio is not None:
                cell += f" ({ratio:.3f}x)" if ratio < 0.1 else f" ({ratio:.2f}x)"
            cells[tool] = cell
        out.append((f"{label} {k}" if k else label, cells))
    return out


def notes(figure):
    """Lines explaining failures, mismatches and the figure's own note (one line per part)."""
    out = figure["note"].split("; ") if figure.get("note") else []
    for tool, r in figure["results"].items():
        if r["status"] != "ok":
            out.append(f"{tool} failed: {r['reason']}")
        elif r.get("incomplete"):
            out.append(f"{tool} result did not match: {r['incomplete']}")
    return out


def blocks(doc):
    """(title, header, rows, notes) per scenario and target, in scenario order."""
    out = []
    for scenario, title in SCENARIOS.items():
        for target in doc["parameters"]["targets"]:
            figs = [f for f in doc["figures"] if f["scenario"] == scenario and f["target"] == target]
            if not figs:
                continue
            tools = tools_of(figs)
            corpora = {f.get("corpus") for f in figs}
            one_corpus = len(corpora) == 1 and None not in corpora
            table = [(label + f" [{f['unit']}]", [cells.get(t, "-") for t in tools])
                     for f in figs for label, cells in rows(f, with_corpus=not one_corpus)]
            lines = []
            for f in figs:
                lines += [n for n in notes(f) if n not in lines]
            where = f"target {target}" + (f"; {figs[0]['corpus']}" if one_corpus else "")
            out.append((f"{scenario}: {title} ({where})", tools, table, lines))
    return out


def text_table(doc):
    """The plain-text table printed at the end of a run."""
    lines = [LEGEND, ""]
    for title, tools, table, nts in blocks(doc):
        w0 = max(len("figure"), *(len(r[0]) for r in table))
        widths = [max(len(t), *(len(r[1][i]) for r in table)) for i, t in enumerate(tools)]
        lines.append(f"== {title}")
        lines.append("  ".join(["figure".ljust(w0)] + [t.ljust(w) for t, w in zip(tools, widths)]))
        for label, cells in table:
            lines.append("  ".join([label.ljust(w0)] + [c.ljust(w) for c, w in zip(cells, widths)]))
        lines += [f"   note: {n}" for n in nts]
        lines.append("")
    return "\n".join(lines)


def markdown(doc):
    """The README's performance section."""
    m, f = doc["machine"], doc["ferry"]
    out = [f"Measured {doc['started'][:10]} by `python3 bench/run.py` on {m['cpu']} "
           f"({m['nproc']} CPUs, {m['ram_gib']} GiB RAM, Linux {m['kernel']}), ferry "
           f"{f['commit']}{' (dirty)' if f['dirty'] else ''}; {m['filesystems']}. "
           f"Every figure and sample: [bench/results/latest.json](bench/results/latest.json); "
           f"how to read it: [bench/README.md](bench/README.md). {LEGEND}.", ""]
    for title, tools, table, nts in blocks(doc):
        out += [f"**{title}**", "", "| figure | " + " | ".join(tools) + " |",
                "|---" * (len(tools) + 1) + "|"]
        out += ["| " + label + " | " + " | ".join(cells) + " |" for label, cells in table]
        out += [""] + [f"- {n}" for n in nts] + ([""] if nts else [])
    scenarios = {f["scenario"] for f in doc["figures"]}
    if "latency" in scenarios:
        out += ["![save-to-visible latency](bench/results/latency.svg)", ""]
    if scenarios & {"first", "noop"}:
        out += ["![first sync and no-op](bench/results/throughput.svg)", ""]
    return "\n".join(out).rstrip("\n")


def check_readme(path):
    """Raise SystemExit unless the README has the markers --readme rewrites between."""
    with open(path) as f:
        text = f.read()
    if README_START not in text or README_END not in text or \
            text.index(README_START) > text.index(README_END):
        raise SystemExit(f"--readme: {path} needs the markers {README_START} and {README_END} "
                         "(in that order) around its performance section")


def update_readme(path, doc):
    check_readme(path)
    with open(path) as f:
        text = f.read()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    body = README_START + "\n" + markdown(doc) + "\n" + README_END
    with open(path, "w") as f:
        f.write(pattern.sub(lambda _: body, text, count=1))


def write_json(doc, results_dir):
    """bench/results/<UTC time>.json and the copy latest.json; returns the first path."""
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, doc["started"].replace(":", "-") + ".json")
    text = json.dumps(doc, indent=1)
    for p in (path, os.path.join(results_dir, "latest.json")):
        with open(p, "w") as f:
            f.write(text + "\n")
    return path
