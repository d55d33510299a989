"""Render saved results (``runs/**/result.json``) into one self-contained ``index.html``.

The page opens with a status table of all ten methods (those without experiments say "not
implemented yet"), then per method its experiments: the claim table, metrics, tables,
figures (embedded as base64 PNG), the machine and the command that reproduces it. The latest
run of each experiment is shown.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .experiment import all_methods, check_result, evidence_line, registry
from .io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "collect_results",
    "render_report",
    "write_report",
    "claim_evidence",
    "markdown_table",
    "render_doc",
    "sync_docs",
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} .holds{background:#e3f6e3} .fails{background:#fbe3e3} .inconclusive{background:#fff5d6}
.muted{color:#777} code{background:#f3f3f3;padding:1px 4px;border-radius:3px} img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.meta td:first-child{color:#555;white-space:nowrap}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def claim_statement(c: dict[str, Any]) -> str:
    return str(c.get("statement", c.get("paper", "")))


def claim_source(c: dict[str, Any]) -> str:
    src = c.get("source")
    if src is None:
        return "source not recorded (result file older than the verdict helper)"
    return "our hypothesis" if src == "ours" else f"paper ({src})"


def claim_evidence(c: dict[str, Any]) -> str:
    """``effect +/- noise unit (needs > margin)`` from a saved claim."""
    if "effect" not in c:
        return "no effect recorded (result file older than the verdict helper)"
    return evidence_line(
        c["effect"], c["noise"], c["margin"], c.get("sense", "above"), c.get("unit", "")
    )


def _measured_on(rec: dict[str, Any]) -> str:
    m = rec.get("machine", {})
    where = f"GPU ({_e(m['gpu'])})" if m.get("gpu") else "<b>CPU</b>"
    need = rec.get("needs_gpu")
    if need:
        return f"{where}; needs a GPU: {_e(need)}"
    return where + ("" if m.get("gpu") else "; nothing here needs a GPU")


def collect_results(runs: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Latest result per experiment name, and the files that could not be read."""
    latest: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for f in sorted(Path(runs).rglob("result.json")):
        try:
            rec = check_result(json.loads(f.read_text()), str(f))
            name, created = rec["name"], rec["created"]
        except ValueError as e:  # a malformed file (JSONDecodeError is a ValueError too)
            why = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"
            log.warning("skipping %s", why)
            skipped.append(why)
            continue
        except OSError as e:
            log.warning("skipping %s: %s", f, e)
            skipped.append(f"{f}: {e.strerror or e}")
            continue
        rec["_dir"] = f.parent
        cur = latest.get(name)
        if cur is None or (created, str(f.parent)) > (cur["created"], str(cur["_dir"])):
            latest[name] = rec
    return latest, skipped


def _table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    if not rows:
        return "<p class=muted>(empty)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows[:limit]
    )
    more = (
        f"<p class=muted>{len(rows) - limit} more rows in result.json</p>"
        if len(rows) > limit
        else ""
    )
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _experiment_html(rec: dict[str, Any]) -> str:
    parts = [
        f"<h3 id='{_e(rec['name'])}'>{_e(rec['name'])}</h3>",
        f"<p>{_e(rec.get('summary', ''))}</p>",
    ]
    claims = rec.get("claims", [])
    if claims:
        rows = "".join(
            f"<tr class='{_e(c['verdict'])}'><td>{_e(claim_statement(c))}"
            f"<br><span class=muted>{_e(claim_source(c))}</span></td>"
            f"<td>{_e(c['measured'])}</td><td>{_e(claim_evidence(c))}"
            f"<br><span class=muted>noise: {_e(c.get('noise_from', 'not recorded'))}</span></td>"
            f"<td><b>{_e(c['verdict'])}</b></td><td>{_e(c.get('note', ''))}</td></tr>"
            for c in claims
        )
        parts.append(
            "<table><tr><th>claim (source)</th><th>measured here</th>"
            "<th>effect &plusmn; noise vs margin</th><th>verdict</th><th>note</th></tr>"
            + rows
            + "</table>"
        )
    metrics = rec.get("metrics", {})
    if metrics:
        parts.append(_table([{"metric": k, "value": v} for k, v in metrics.items()]))
    base = Path(rec["_dir"]).resolve()
    for fig in rec.get("figures", []):
        p = (rec["_dir"] / fig).resolve()
        if not p.is_relative_to(base):  # a link out of the run folder: never embedded
            parts.append(f"<p class=muted>figure {_e(fig)} lies outside its run folder</p>")
        elif p.is_file():
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<div><img alt='{_e(fig)}' src='data:image/png;base64,{data}'></div>")
        else:
            parts.append(f"<p class=muted>figure {_e(fig)} is missing from {_e(rec['_dir'])}</p>")
    for tname, rows in rec.get("tables", {}).items():
        parts.append(f"<h4>{_e(tname)}</h4>" + _table(rows))
    if rec.get("notes"):
        parts.append(f"<p class=muted>{_e(rec['notes'])}</p>")
    m = rec.get("machine", {})
    v = rec.get("versions", {})
    meta = [
        ("command", f"<code>{_e(rec.get('command', ''))}</code>"),
        ("machine", _e(m.get("device", "?"))),
        ("measured on", _measured_on(rec)),
        ("wall time", f"{_e(rec.get('wall_time_s', '?'))} s"),
        ("preset / seed", f"{_e(rec.get('preset'))} / {_e(rec.get('seed'))}"),
        ("when", _e(rec.get("created", ""))),
        ("git commit", _e(rec.get("git_commit") or "unknown")),
        ("versions", _e(", ".join(f"{k} {val}" for k, val in v.items()))),
        ("config", f"<code>{_e(json.dumps(rec.get('config', {})))}</code>"),
    ]
    parts.append(
        "<table class=meta>"
        + "".join(f"<tr><td>{k}</td><td>{val}</td></tr>" for k, val in meta)
        + "</table>"
    )
    return "\n".join(parts)


def collect_failures(runs: Path) -> list[str]:
    """One line per run that failed or was interrupted (its ``failure.json``)."""
    out = []
    for f in sorted(Path(runs).rglob("failure.json")):
        if (f.parent / "result.json").exists():
            continue
        try:
            rec = json.loads(f.read_text())
            out.append(
                f"{rec['name']} ({rec['status']}, {rec['created']}): {rec['error']} [{f.parent}]"
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            out.append(f"{f}: unreadable failure record: {e}")
    return out


def render_report(
    results: dict[str, dict[str, Any]],
    skipped: list[str] | None = None,
    failures: list[str] | None = None,
) -> str:
    reg = registry()
    by_method: dict[str, list[dict[str, Any]]] = {}
    for rec in results.values():
        by_method.setdefault(rec.get("method", rec["name"].split("/")[0]), []).append(rec)
    rows = []
    table = [m for m, _ in all_methods()]
    for m in table:
        exps = [e for e in reg.values() if e.method == m.key]
        recs = by_method.get(m.key, [])
        if not exps and not recs:
            status = "<span class=muted>not implemented yet</span>"
        else:
            verdicts = Counter(c["verdict"] for r in recs for c in r.get("claims", []))
            ran = f"{len(recs)}/{len(exps) or len(recs)} experiments run"
            status = ran + (
                "; claims: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
                if verdicts
                else ""
            )
        paper = f"arXiv {m.arxiv}" if m.arxiv else ""
        link = f"<a href='#{m.key}'>{_e(m.key)}</a>" if recs else _e(m.key)
        doc = f"<code>{_e(m.doc)}</code>" if exps or recs else "<span class=muted>&mdash;</span>"
        rows.append(
            f"<tr><td>{link}</td><td>{_e(m.title)}<br><span class=muted>{_e(m.gives)}</span></td>"
            f"<td>{_e(paper)}</td><td>{status}</td><td>{doc}</td></tr>"
        )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tenfold report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>tenfold report</h1>",
        f"<p class=muted>generated {now}. Every number below was measured by this code on the machine named "
        "with it; a claim that does not hold at this scale is reported as such.</p>",
        "<table><tr><th>method</th><th>what</th><th>paper</th><th>status</th><th>doc</th></tr>"
        + "".join(rows)
        + "</table>",
    ]
    for m in table:
        recs = sorted(by_method.get(m.key, []), key=lambda r: r["name"])
        if not recs:
            continue
        out.append(f"<h2 id='{m.key}'>{_e(m.key)}: {_e(m.title)}</h2>")
        out.extend(_experiment_html(r) for r in recs)
    if failures:
        out.append(
            "<h2>failed or interrupted runs</h2><ul>"
            + "".join(f"<li>{_e(s)}</li>" for s in failures)
            + "</ul>"
        )
    if skipped:
        out.append(
            "<h2>unreadable result files</h2><ul>"
            + "".join(f"<li>{_e(s)}</li>" for s in skipped)
            + "</ul>"
        )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(runs: Path, out_dir: Path) -> Path:
    results, skipped = collect_results(runs)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"the report folder {out_dir} is a file; give a folder with -o")
    path = out_dir / "index.html"
    atomic_write_text(path, render_report(results, skipped, collect_failures(runs)))
    return path


# ------------------------------------------------------------------ docs tables
# A doc marks a generated block with
#   <!-- results: <file> claims|table=<name>|metrics|csv [cols=a,b,...] [where=col:value] -->
#   ...generated markdown...
#   <!-- /results -->
# where <file> is a result.json under results/ (or a benchmark CSV), relative to the
# repository root. `tenfold docs` rewrites every block from its file; `tenfold docs --check`
# (run by the tests) fails when a block was edited by hand or its file changed.
_BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
    re.S,
)


def _md(x: Any) -> str:
    return _fmt(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(_md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_md(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def markdown_claims(rec: dict[str, Any]) -> str:
    rows = [
        {
            "claim": claim_statement(c),
            "source": claim_source(c),
            "measured": c.get("measured", ""),
            "effect +/- noise (margin)": claim_evidence(c),
            "verdict": f"**{c['verdict']}**",
        }
        for c in rec.get("claims", [])
    ]
    return markdown_table(rows)


def _provenance(rec: dict[str, Any], path: str) -> str:
    m = rec.get("machine", {})
    return (
        f"<sub>`{rec.get('command', '?')}` on {m.get('device', '?')}, "
        f"torch {rec.get('versions', {}).get('torch', '?')}, {str(rec.get('created', '?'))[:10]}, "
        f"{rec.get('wall_time_s', '?')} s, commit {str(rec.get('git_commit') or '?')[:12]}; "
        f"`{path}`</sub>"
    )


def _where(rows: list[dict[str, Any]], cond: str | None, spec: str) -> list[dict[str, Any]]:
    if not cond:
        return rows
    col, _, val = cond.partition(":")
    if not any(col in r for r in rows):
        raise ValueError(f"results block {spec!r}: no column {col!r} to select on")
    return [r for r in rows if str(r.get(col)) == val]


def render_block(spec: str, root: Path) -> str:
    """The markdown of one ``<!-- results: ... -->`` block (paths relative to ``root``)."""
    import csv
    import io
    import shlex

    words = shlex.split(spec)
    if len(words) < 2:
        raise ValueError(f"results block {spec!r}: give a result file and what to show")
    path, what = words[0], words[1]
    opts = dict(w.split("=", 1) for w in words[2:] if "=" in w)
    f = Path(root) / path
    try:
        text = f.read_text()
        rec = None if what == "csv" else check_result(json.loads(text), path)
    except (OSError, ValueError) as e:
        raise ValueError(f"results block {spec!r}: cannot read {f}: {e}") from None
    cols = opts["cols"].split(",") if "cols" in opts else None

    def checked(rows, name):
        rows = _where(rows, opts.get("where"), spec)
        if cols and (bad := [c for c in cols if not any(c in r for r in rows)]):
            raise ValueError(f"results block {spec!r}: {name} has no column {bad}")
        return markdown_table(rows, cols)

    if what == "csv":
        return checked(list(csv.DictReader(io.StringIO(text))), path) + f"\n\n<sub>`{path}`</sub>\n"
    if what == "claims":
        body = markdown_claims(rec)
    elif what.startswith("table="):
        name = what.split("=", 1)[1]
        if name not in rec.get("tables", {}):
            raise ValueError(
                f"results block {spec!r}: {path} has no table {name!r}; tables: "
                + ", ".join(rec.get("tables", {}))
            )
        body = checked(rec["tables"][name], f"table {name!r}")
    elif what == "metrics":
        keys = cols or list(rec.get("metrics", {}))
        missing = [k for k in keys if k not in rec.get("metrics", {})]
        if missing:
            raise ValueError(f"results block {spec!r}: {path} has no metric {missing}")
        body = markdown_table([{"metric": k, "value": rec["metrics"][k]} for k in keys])
    else:
        raise ValueError(
            f"results block {spec!r}: show 'claims', 'table=<name>', 'metrics' or 'csv'"
        )
    return body + "\n\n" + _provenance(rec, path) + "\n"


def render_doc(text: str, root: Path, errors: list[str] | None = None) -> str:
    """``text`` with every results block regenerated. With ``errors``, a block that cannot
    be rendered is left as it is and its problem appended there; without, it raises."""

    def one(m):
        try:
            return m["open"] + render_block(m["spec"], root) + m["close"]
        except ValueError as e:
            if errors is None:
                raise
            errors.append(str(e))
            return m[0]

    return _BLOCK.sub(one, text)


def sync_docs(docs: Path, root: Path, check: bool = False) -> list[str]:
    """Regenerate (or, with ``check``, compare) the results blocks of every ``docs/*.md``
    (file paths in the blocks are relative to ``root``); returns the problems: a file that
    was (or, with ``check``, would be) changed, or a block that cannot be rendered (its
    result file is missing, or lacks the table). Blocks that render are regenerated even
    when another block of the same doc cannot be."""
    problems = []
    for f in sorted(Path(docs).glob("*.md")):
        text = f.read_text()
        errors: list[str] = []
        new = render_doc(text, root, errors)
        problems += [f"{f}: {e}" for e in errors]
        if new != text:
            problems.append(f"{f}: differs from its result files" if check else f"{f}: regenerated")
            if not check:
                atomic_write_text(f, new)
    return problems
