"""Draw docs/architecture.svg: the replay's stages beside the ledger's layers.

Run `python docs/draw_architecture.py` after changing the picture; it
writes the SVG as plain text (no dependency, the same bytes every run),
and tests/test_docs.py checks that the committed file is what this script
draws.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 980, 720
OUT = Path(__file__).resolve().parent / "architecture.svg"

PARSER = "#e8f1fb"  # the parser process (read, resolve, batch, account, report)
WRITER = "#fdf1e3"  # the process that signs, applies and journals
ENGINE = "#eef6ea"
STORE = "#f3eefa"
EDGE = "#44546a"

# The replay: (stage, module, what it gives), top to bottom.
STAGES = [
    ("read", "replay/read.py", "typed events, or BadLine; a plan in at order"),
    ("setup", "replay/setup.py", "Catalog of the file's names; first batches"),
    ("resolve", "replay/resolve.py", "Instructions, Swaps, ChainTimes (pure)"),
    ("batch", "replay/batch.py", "encoded batches of 65,536 commands"),
    ("apply", "replay/apply.py", "signed envelopes -> result codes, events"),
    ("account", "replay/account.py", "one TradeOutcome per trade; liquidity"),
    ("report", "replay/report.py", "JSON report, CSV tables (whole or absent)"),
]
WRITER_STAGES = {"apply"}

# The ledger, top to bottom: (name, module, lines of what it does, colour).
LAYERS = [
    ("callers", "engine/cli.py, engine/service/", ["an embedding program, the dvp command, dvp serve",
                                                   "(one writer thread; signed reads, events, metrics)"], ENGINE),
    ("Ledger", "engine/ledger.py", ["submit: decode, verify (pool), apply, persist;",
                                    "reads: balance, trade, repo, history"], ENGINE),
    ("Machine", "engine/machine.py", ["authorize envelopes, run commands and linked",
                                      "chains, due timers, protocols' hooks"], ENGINE),
    ("protocols", "protocols/ (entry points dvp.protocols)", ["dvp, netting, repo, collateral, prices,",
                                                              "htlc, scheduled: handlers and state"], ENGINE),
    ("State", "engine/state.py", ["balances, holds, encumbrances, freezes, timers,",
                                  "protocol state; every write undo-logged"], ENGINE),
    ("Journal", "engine/journal.py, journal_pg.py", ["SQLite (WAL) | PostgreSQL | memory: hash-chained",
                                                     "entries, one transaction each; snapshots"], STORE),
]


def text(x: float, y: float, words: str, size: int = 13, weight: str = "normal", anchor: str = "start",
         colour: str = "#1f2a36", family: str = "sans-serif") -> str:
    return (f'<text x="{x:g}" y="{y:g}" font-family="{family}" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="{anchor}" fill="{colour}">{escape(words)}</text>')


def box(x: float, y: float, w: float, h: float, fill: str, stroke: str = EDGE, dash: bool = False) -> str:
    dashes = ' stroke-dasharray="6 4"' if dash else ""
    return (f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="8" ry="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.4"{dashes}/>')


def arrow(x1: float, y1: float, x2: float, y2: float, label: str = "") -> list[str]:
    out = [f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{EDGE}" stroke-width="1.6" '
           'marker-end="url(#head)"/>']
    if label:
        out.append(text((x1 + x2) / 2 + 6, (y1 + y2) / 2 + 4, label, size=11, colour="#44546a"))
    return out


def draw() -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}">',
             '<defs><marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
             f'<path d="M0,0 L10,4 L0,8 z" fill="{EDGE}"/></marker></defs>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             text(24, 34, "dvp replay FILE: a pipeline of stages", size=17, weight="bold"),
             text(540, 34, "the ledger: layers, top to bottom", size=17, weight="bold")]
    # ------------------------------------------------------------ the replay
    x, w, h, gap, top = 24, 440, 62, 22, 56
    for i, (stage, module, gives) in enumerate(STAGES):
        y = top + i * (h + gap)
        parts.append(box(x, y, w, h, WRITER if stage in WRITER_STAGES else PARSER))
        parts.append(text(x + 14, y + 24, stage, size=15, weight="bold"))
        parts.append(text(x + 100, y + 24, module, size=12, family="monospace", colour="#44546a"))
        parts.append(text(x + 14, y + 46, "gives: " + gives, size=12))
        if i:
            parts += arrow(x + w / 2, y - gap, x + w / 2, y - 2)
    bottom = top + len(STAGES) * (h + gap) - gap
    legend = bottom + 26
    parts.append(box(x, legend - 14, 18, 14, PARSER))
    parts.append(text(x + 26, legend - 2, "parser process (forked for files of 2 MB or more)", size=12))
    parts.append(box(x, legend + 8, 18, 14, WRITER))
    parts.append(text(x + 26, legend + 20, "this process: signs, applies, journals (one ledger per chain)", size=12))
    parts.append(text(x, legend + 44, "Errors are data: a BadLine (line, reason) never stops the rest.", size=12,
                      colour="#44546a"))
    # ------------------------------------------------------------ the ledger
    lx, lw, lh, lgap = 540, 416, 70, 20
    tops = []
    for i, (name, module, lines, fill) in enumerate(LAYERS):
        y = top + i * (lh + lgap)
        tops.append(y)
        parts.append(box(lx, y, lw, lh, fill, dash=name == "callers"))
        parts.append(text(lx + 14, y + 22, name, size=15, weight="bold"))
        parts.append(text(lx + lw - 12, y + 22, module, size=11, family="monospace", anchor="end",
                          colour="#44546a"))
        for k, line in enumerate(lines):
            parts.append(text(lx + 14, y + 42 + 16 * k, line, size=12))
        if i:
            parts += arrow(lx + lw / 2, y - lgap, lx + lw / 2, y - 2)
    # apply submits to the Ledger
    apply_y = top + 4 * (h + gap) + h / 2
    ledger_y = tops[1] + lh / 2
    parts.append(f'<path d="M{x + w:g},{apply_y:g} C{x + w + 50:g},{apply_y:g} {lx - 50:g},{ledger_y:g} '
                 f'{lx - 2:g},{ledger_y:g}" fill="none" stroke="{EDGE}" stroke-width="1.6" '
                 'marker-end="url(#head)"/>')
    parts.append(text(lx - 8, ledger_y - 12, "submit", size=11, anchor="end", family="monospace",
                      colour="#44546a"))
    # beside the journal: the audits
    jy = tops[-1] + lh + 30
    parts.append(text(lx, jy, "Beside the journal: dvp verify (re-runs every entry, checks every", size=12))
    parts.append(text(lx, jy + 17, "signature and digest), dvp copy (SQLite <-> PostgreSQL, audited),", size=12))
    parts.append(text(lx, jy + 34, "Ledger.open(readonly=True) for readers.", size=12))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> int:
    OUT.write_text(draw(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
