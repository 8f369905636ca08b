"""``results/README.md``: the claims scorecard, the claims both ways, the findings about the
papers, and one section per notebook folder with its tables and figures.

Built from the files alone (deterministic), by the DVC stage ``report`` or from the command line:
``python -m mtlrepro.results_index results``.  Kept apart from :mod:`mtlrepro.report`, which
every notebook imports, so that a change to the index re-runs only the ``report`` stage.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mtlrepro.config import ConfigError
from mtlrepro.files import atomic_write_text
from mtlrepro.report import (
    CLAIMS_COMPARED,
    CLAIMS_FILE,
    FINDINGS_FILE,
    METRICS_FILE,
    NOT_APPLICABLE,
    PASSED,
    VERDICTS,
    checks_only,
    claims_only,
    format_value,
    read_claims,
    table_markdown,
)

BENCHMARKS_DIR = "benchmarks"
RUNS_DIR = "runs"
"""``results/runs/<notebook>/``: independent training runs a notebook reads (not a notebook)."""
INDEX_FILE = "README.md"
OURS_SUFFIX = ": ours"
"""Suffix of :func:`mtlrepro.tables.compare_claims`' value columns (the rest are verdicts)."""


def _natural_key(path: Path) -> list[Any]:
    """Sort key putting ``table2`` before ``table10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def _cell(value: Any) -> str:
    """A value for a Markdown table cell: one line, pipes escaped, floats to 4 digits."""
    text = format_value(value, digits=4) if isinstance(value, float) else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small GitHub Markdown table from already-formatted rows."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _notebook_dirs(results_root: Path) -> list[Path]:
    """Result folders of notebooks: sub-folders except hidden ones, ``benchmarks`` and
    ``runs``."""
    return sorted(
        (
            p
            for p in results_root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and p.name not in (BENCHMARKS_DIR, RUNS_DIR)
        ),
        key=_natural_key,
    )


def _scorecard(results_root: Path, folders: Sequence[Path]) -> list[str]:
    """The claims scorecard section: counts per notebook and verdict, then every claim, then
    the checks (kept out of the counts)."""
    counts: list[list[Any]] = []
    rows: list[list[Any]] = []
    check_rows: list[list[Any]] = []
    for folder in folders:
        path = folder / CLAIMS_FILE
        if not path.is_file():
            continue
        everything = read_claims(path)
        check_rows += [
            [folder.name, c.claim_id, c.claim, c.paper_value, c.our_value,
             "—" if c.verdict == NOT_APPLICABLE else ("yes" if c.verdict == PASSED else "no"),
             c.details]
            for c in checks_only(everything)
        ]
        claims = claims_only(everything)
        tally = [sum(c.verdict == v for c in claims) for v in VERDICTS]
        counts.append([f"[{folder.name}]({folder.name}/{CLAIMS_FILE})", *tally, len(claims)])
        rows += [
            [folder.name, c.claim_id, c.claim, c.paper_value, c.our_value, c.verdict,
             c.profile, c.dataset, c.details]
            for c in claims
        ]
    lines = ["## Claims scorecard", ""]
    if not counts:
        return [*lines, "No notebook has written claims yet.", ""]
    totals = [sum(row[i] for row in counts) for i in range(1, len(VERDICTS) + 2)]
    counts.append(["**all**", *totals])
    lines += [_md_table(["notebook", *VERDICTS, "claims"], counts)]
    header = ["notebook", "id", "claim", "paper", "ours", "verdict", "profile", "dataset",
              "details"]
    lines += [_md_table(header, rows)]
    if check_rows:
        lines += [
            "### Checks",
            "",
            "Statements that cannot plausibly fail in our runs (e.g. parameter counts of "
            "library constructors); they are verified, not counted as reproduced claims.",
            "",
            _md_table(["notebook", "id", "statement", "paper", "ours", "passed", "details"],
                      check_rows),
        ]
    return lines


def _both_ways_section(folders: Sequence[Path]) -> list[str]:
    """The "Claims both ways" section: every folder's claims decided on several runs (e.g. from
    scratch and pretrained, :data:`~mtlrepro.report.CLAIMS_COMPARED`), their verdicts side by
    side and whether the verdict moves."""
    rows: list[list[Any]] = []
    names: list[str] = []
    for folder in folders:
        path = folder / f"{CLAIMS_COMPARED}.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path, keep_default_na=False)
        runs = [c for c in table.columns[2:] if not c.endswith(OURS_SUFFIX)]
        if names and runs != names:
            raise ConfigError(
                f"{path} compares the runs {runs}, the other folders {names}: one table needs "
                "the same runs everywhere"
            )
        names = runs
        rows += [
            [f"[{folder.name}]({folder.name}/{CLAIMS_COMPARED}.csv)", r["claim_id"],
             *(r[n] for n in runs), "yes" if len({r[n] for n in runs}) > 1 else ""]
            for _, r in table.iterrows()
        ]
    if not rows:
        return []
    moved = sum(row[-1] == "yes" for row in rows)
    return [
        "## Claims both ways",
        "",
        f"The same claims decided on each of the runs {', '.join(names)}: {moved} of "
        f"{len(rows)} verdicts move between them (the scorecard above counts each notebook's "
        "study as configured).",
        "",
        _md_table(["notebook", "id", *names, "moves"], rows),
    ]


def _findings_section(folders: Sequence[Path]) -> list[str]:
    """The "Findings about the papers" section: every folder's ``findings.csv``, real findings
    by decreasing size first, then rounding ones."""
    frames = []
    for folder in folders:
        path = folder / FINDINGS_FILE
        if path.is_file():
            frames.append(pd.read_csv(path, keep_default_na=False).assign(notebook=folder.name))
    if not frames:
        return []
    found = pd.concat(frames, ignore_index=True)
    found = found.assign(_rounding=found["kind"] == "rounding").sort_values(
        ["_rounding", "size"], ascending=[True, False], kind="stable"
    )
    rows = [
        [r.finding, f"[{r.notebook}]({r.notebook}/{FINDINGS_FILE})", r.kind,
         float(r.size), r.cause, str(r.checks).split(":", 1)[0], r.evidence]
        for r in found.itertuples()
    ]
    return [
        "## Findings about the papers",
        "",
        "Numbers in the papers that disagree with the papers' own other numbers beyond "
        "rounding, grouped by cause: a cause (a column swap, a row from another table) is "
        "reported once when re-running the check under it makes all its numbers agree and "
        "breaks none; the rest are listed one by one. Real findings by size (points), then "
        "rounding differences (within 0.01 + the last printed digit).",
        "",
        _md_table(["id", "notebook", "kind", "size", "cause", "numbers", "evidence"], rows),
    ]


def _notebook_section(results_root: Path, folder: Path) -> list[str]:
    """The index section of one notebook folder: notebook links, tables, figures, files."""
    name = folder.name
    rel = folder.relative_to(results_root).as_posix()
    lines = [f"## {name}", ""]
    links = [
        f"[{p.name}]({rel}/{p.name})"
        for p in (folder / f"{name}.ipynb", folder / f"{name}.html")
        if p.is_file()
    ]
    lines += ["Rendered notebook: " + (", ".join(links) if links else "not run yet"), ""]
    other = [
        f"[{p.name}]({rel}/{p.name})"
        for p in (folder / METRICS_FILE, folder / CLAIMS_FILE)
        if p.is_file()
    ]
    if other:
        lines += ["Files: " + ", ".join(other), ""]
    tables = [
        p for p in sorted(folder.glob("*.md"), key=_natural_key) if p.with_suffix(".csv").is_file()
    ]
    for table in tables:
        csv_name = table.with_suffix(".csv").name
        lines += [f"### {table.stem} ([CSV]({rel}/{csv_name}))", ""]
        lines += [table.read_text(encoding="utf-8").rstrip("\n"), ""]
    for figure in sorted(folder.glob("*.png"), key=_natural_key):
        lines += [f"### {figure.stem}", "", f"![{figure.stem}]({rel}/{figure.name})", ""]
    return lines


def _benchmarks_section(results_root: Path) -> list[str]:
    """The benchmarks section: every CSV under ``results/benchmarks/`` as a table."""
    folder = results_root / BENCHMARKS_DIR
    files = sorted(folder.glob("*.csv"), key=_natural_key) if folder.is_dir() else []
    if not files:
        return []
    lines = ["## Benchmarks", ""]
    for path in files:
        lines += [f"### {path.stem} ([CSV]({BENCHMARKS_DIR}/{path.name}))", ""]
        lines += [table_markdown(pd.read_csv(path)).rstrip("\n"), ""]
    return lines


def build_results_index(results_root: str | Path) -> Path:
    """Write ``<results_root>/README.md``: the claims scorecard, the claims both ways, the
    findings about the papers (every folder's ``findings.csv``, ranked), then one section per
    notebook.

    Each notebook section links the rendered notebook (``.ipynb`` and ``.html``), embeds every
    table's Markdown (linked to its CSV) and every figure (relative links); CSVs under
    ``benchmarks/`` follow.  The output depends only on the files, so it is deterministic.

    Args:
        results_root: the results folder (``results``).
    """
    root = Path(results_root)
    if not root.is_dir():
        raise ConfigError(f"results folder {root} does not exist; run the notebooks first")
    folders = _notebook_dirs(root)
    lines = [
        "# Results",
        "",
        "<!-- Generated by `python -m mtlrepro.results_index results`; do not edit. -->",
        "",
        "Verdicts are computed from our numbers by each notebook (see its `claims.csv`); "
        "a claim that does not reproduce is a finding, not a failure.",
        "",
    ]
    lines += _scorecard(root, folders)
    lines += _both_ways_section(folders)
    lines += _findings_section(folders)
    for folder in folders:
        lines += _notebook_section(root, folder)
    lines += _benchmarks_section(root)
    text = "\n".join(lines).rstrip("\n") + "\n"
    return atomic_write_text(root / INDEX_FILE, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m mtlrepro.results_index RESULTS_ROOT``.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m mtlrepro.results_index", description=__doc__)
    parser.add_argument("results_root", type=Path, help="the results folder, e.g. results")
    args = parser.parse_args(argv)
    try:
        path = build_results_index(args.results_root)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
