"""Where results go and how they are written: tables, metrics and claims.

One module decides where outputs go (:func:`resolve_output_dir`) and writes every result file
atomically (temporary file in the same folder, then :func:`os.replace`) with deterministic
formatting, so a re-run with the same inputs reproduces the committed files byte for byte.

Files of one notebook run, in ``results/<NN_name>/``:

* ``tableN_*.csv`` + ``tableN_*.md`` -- :func:`write_table`
* ``metrics.json`` -- :func:`write_metrics`
* ``claims.csv`` -- :func:`write_claims` (the claims scorecard rows; verdicts come from numbers;
  column ``kind`` tells claims, which could come out either way, from checks -- statements that
  cannot plausibly fail in our runs, such as a library constructor's parameter count, made with
  :func:`make_check` and kept out of the verdict counts)
* ``figN_*.png`` -- :func:`mtlrepro.plots.save_figure`
* ``findings.csv`` + ``findings.md`` -- :func:`write_table` of a paper's
  :func:`mtlrepro.consistency.findings` (its own numbers that disagree, grouped by cause)

``results/README.md`` (the index of every notebook's files and the claims scorecard) is built
by :mod:`mtlrepro.results_index`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import pandas as pd

from mtlrepro.config import ConfigError
from mtlrepro.files import FILE_STEM, REPO_ROOT, atomic_write_text, cpu_model

SCRATCH_DIR_NAME = ".scratch"
"""Git-ignored folder under the repo root for outputs of notebooks run with their defaults."""

METRICS_FILE = "metrics.json"
CLAIMS_FILE = "claims.csv"
CLAIMS_COMPARED = "claims_both_ways"
"""Table name of a notebook's claims decided on several runs side by side
(:func:`mtlrepro.tables.compare_claims`, e.g. from scratch and pretrained)."""
FINDINGS_FILE = "findings.csv"
"""Findings about a paper's own numbers (:func:`mtlrepro.consistency.findings`), per folder."""

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_APPLICABLE = "not applicable"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_APPLICABLE)
"""``inconclusive``: the claim compares methods and our difference is within the seed spread
(:func:`paired`)."""
PASSED = "passed"
FAILED = "failed"
CHECK_VERDICTS: tuple[str, ...] = (PASSED, FAILED, NOT_APPLICABLE)
"""Verdicts of a check (:func:`make_check`)."""
CLAIM = "claim"
CHECK = "check"
KINDS: tuple[str, ...] = (CLAIM, CHECK)
"""``claim``: a statement of the paper our runs could contradict (counted in the scorecard);
``check``: a verifiable statement that cannot plausibly fail in our runs (a parameter count of a
library constructor, arithmetic on fixed numbers), listed apart in the "Checks" table."""

_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def resolve_output_dir(path: str | Path | None, notebook: str) -> Path:
    """The folder a notebook writes its outputs to, created if missing.

    With ``path=None`` (a notebook run with its default parameters, e.g. interactively or by a
    notebook test runner) this is the git-ignored scratch folder ``<repo>/.scratch/<notebook>/``,
    so that such runs never overwrite committed results; the pipeline passes the real folder.
    A relative ``path`` is taken relative to the repository root, not the working directory,
    so the same parameter value means the same folder from JupyterLab and from the pipeline.

    Args:
        path: the output folder, or ``None`` for the scratch folder.
        notebook: the notebook's name (e.g. ``"00_baselines"``), used for the scratch folder.
    """
    if not FILE_STEM.match(notebook):
        raise ConfigError(f"notebook name {notebook!r} must be a plain file name without '/'")
    if path is None:
        folder = REPO_ROOT / SCRATCH_DIR_NAME / notebook
    else:
        folder = Path(path)
        if not folder.is_absolute():
            folder = REPO_ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_name(name: str, what: str) -> str:
    """Validate an output file stem (no folder, no extension)."""
    if not FILE_STEM.match(name) or name.endswith((".csv", ".md", ".png", ".json")):
        raise ConfigError(
            f"{what} name {name!r} must be a plain file stem without folder or extension, "
            "e.g. 'table2_nyuv2'"
        )
    return name


# --------------------------------------------------------------------------- tables, metrics


def _markdown_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` ready for tabulate: ``None`` for missing values, ``|`` escaped."""
    out = df.astype(object)
    for column in out.columns:
        escaped = [v.replace("|", "\\|") if isinstance(v, str) else v for v in out[column]]
        out[column] = pd.Series(escaped, index=out.index, dtype=object)
    return out.where(df.notna(), None)


def table_markdown(df: pd.DataFrame, *, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub Markdown table (missing values as ``—``), ending in a newline.

    Args:
        df: the table; a non-default index is written as leading column(s).
        floatfmt: format spec for floats (``".4g"``: four significant digits).
    """
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    text = _markdown_frame(df).to_markdown(index=False, floatfmt=floatfmt, missingval="—")
    return text + "\n"


def write_table(
    df: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    floatfmt: str = ".4g",
    csv_float_format: str = "%.6g",
) -> dict[str, Path]:
    """Write a table as ``<name>.csv`` and ``<name>.md`` (atomically, deterministic formatting).

    Display the DataFrame in the notebook yourself; this only writes the files.

    Args:
        df: the table; a non-default index is written as leading column(s).
        out_dir: the output folder (see :func:`resolve_output_dir`).
        name: file stem named after the paper item, e.g. ``"table2_nyuv2"``.
        floatfmt: float format spec for the Markdown file (``".4g"``: 4 significant digits).
        csv_float_format: printf-style float format for the CSV (``"%.6g"`` keeps 6
            significant digits, which hides last-bit noise of floating-point sums).

    Returns:
        ``{"csv": path, "md": path}``.
    """
    _check_name(name, "table")
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"write_table needs a pandas DataFrame; got {type(df).__name__}")
    frame = df if isinstance(df.index, pd.RangeIndex) else df.reset_index()
    out = Path(out_dir)
    csv_text = frame.to_csv(index=False, float_format=csv_float_format, lineterminator="\n")
    paths = {
        "csv": atomic_write_text(out / f"{name}.csv", csv_text),
        "md": atomic_write_text(out / f"{name}.md", table_markdown(frame, floatfmt=floatfmt)),
    }
    return paths


def _jsonable(value: Any, digits: int, where: str) -> Any:
    """``value`` with floats rounded to ``digits`` significant digits and only JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, digits, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, digits, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool):
        return value
    if type(value).__name__ == "bool_":  # numpy bool
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):
            return None
        rounded = float(f"{number:.{digits}g}")
        return 0.0 if rounded == 0 else rounded
    raise ConfigError(
        f"metrics value at {where} has type {type(value).__name__}; allowed: numbers, strings, "
        "booleans, None, and lists/dicts of them"
    )


CPU_MODEL_KEY = "cpu_model"
"""Key of :func:`cpu_model` in ``metrics.json`` (added by :func:`write_metrics`)."""


def write_metrics(metrics: Mapping[str, Any], out_dir: str | Path, *, digits: int = 6) -> Path:
    """Write ``metrics.json``: sorted keys, floats rounded to ``digits`` significant digits.

    Non-finite floats are written as ``null``.  Include what makes the file self-describing
    (profile, dataset, seed, config) in ``metrics`` itself; the CPU model (:func:`cpu_model`)
    is added under :data:`CPU_MODEL_KEY` unless ``metrics`` already has that key.

    Args:
        metrics: nested mapping of JSON-able values (numpy scalars are accepted).
        out_dir: the output folder.
        digits: significant digits kept for floats.
    """
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"metrics must be a mapping; got {type(metrics).__name__}")
    metrics = {CPU_MODEL_KEY: cpu_model(), **metrics}
    data = _jsonable(metrics, digits, "metrics")
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(Path(out_dir) / METRICS_FILE, text + "\n")


# --------------------------------------------------------------------------- claims


def verdict(holds: bool | None) -> str:
    """The verdict word for a claim check.

    Args:
        holds: ``True`` if our numbers support the claim, ``False`` if they do not, ``None`` if
            the claim cannot be tested at this profile (e.g. it needs the paper's dataset).
    """
    if holds is None:
        return NOT_APPLICABLE
    if not isinstance(holds, bool):
        raise ConfigError(f"holds must be True, False or None; got {holds!r}")
    return REPRODUCED if holds else NOT_REPRODUCED


@dataclass(frozen=True)
class Claim:
    """One row of a paper's claims scorecard (``claims.csv``): a claim or a check.

    Attributes:
        claim_id: short id, unique within the paper, e.g. ``"A1"``.
        claim: the claim in words.
        paper_value: the paper's number (or a short description), from the paper-number files.
        our_value: our measured number (or a short description).
        verdict: one of :data:`VERDICTS`; build claims with :func:`make_claim` so it is computed.
        profile: the profile the numbers come from.
        dataset: the dataset the numbers come from.
        details: how the verdict was decided (tolerance, compared quantities) or why n/a.
        kind: :data:`CLAIM` (counted in the scorecard; verdict one of :data:`VERDICTS`) or
            :data:`CHECK` (listed apart; verdict one of :data:`CHECK_VERDICTS`).
    """

    claim_id: str
    claim: str
    paper_value: str | float
    our_value: str | float
    verdict: str
    profile: str
    dataset: str
    details: str = ""
    kind: str = CLAIM

    def __post_init__(self) -> None:
        """Validate the kind, the verdict and the id."""
        if not self.claim_id or not isinstance(self.claim_id, str):
            raise ConfigError(f"claim_id must be a non-empty string; got {self.claim_id!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        allowed_verdicts = VERDICTS if self.kind == CLAIM else CHECK_VERDICTS
        if self.verdict not in allowed_verdicts:
            allowed = ", ".join(repr(v) for v in allowed_verdicts)
            raise ConfigError(
                f"unknown verdict {self.verdict!r} for a {self.kind}; allowed: {allowed}"
            )

    @property
    def is_check(self) -> bool:
        """Whether this row is a check (kept out of the scorecard's verdict counts)."""
        return self.kind == CHECK


CLAIM_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Claim))


def make_claim(
    claim_id: str,
    claim: str,
    paper_value: str | float,
    our_value: str | float,
    holds: bool | None | Sequence[SeedComparison],
    *,
    profile: str,
    dataset: str,
    details: str = "",
) -> Claim:
    """Build a :class:`Claim` whose verdict is computed: :func:`verdict` of ``holds``, or
    :func:`comparison_verdict` when ``holds`` is a list of :class:`SeedComparison`.

    Args:
        claim_id: short id, unique within the paper.
        claim: the claim in words.
        paper_value: the paper's number or description.
        our_value: our number or description.
        holds: result of a comparison helper (:func:`same_sign`, :func:`at_least`, ...),
            ``None`` when the claim is not testable at this profile, or the claim's
            comparisons over seeds (:func:`paired`).
        profile: the profile the numbers come from.
        dataset: the dataset the numbers come from.
        details: how the verdict was decided, or why it is not applicable.
    """
    if holds is None or isinstance(holds, bool):
        decided = verdict(holds)
    else:
        decided = comparison_verdict(holds)
    return Claim(claim_id, claim, paper_value, our_value, decided, profile, dataset, details)


def make_check(
    check_id: str,
    statement: str,
    paper_value: str | float,
    our_value: str | float,
    passed: bool | None,
    *,
    profile: str,
    dataset: str,
    details: str = "",
) -> Claim:
    """Build a check: a verifiable statement that cannot plausibly fail in our runs (e.g. the
    parameter count of a library constructor against the paper's table).  It is written to
    ``claims.csv`` with ``kind = check`` and shown in the results index's "Checks" table, out of
    the reproduced / not-reproduced counts.

    Args:
        check_id: short id, unique within the paper (claims and checks share the id space).
        statement: what is checked, in words.
        paper_value: the paper's number or description.
        our_value: our number or description.
        passed: whether it holds; ``None`` when it cannot be checked here.
        profile: the profile the numbers come from.
        dataset: where the numbers come from.
        details: how it was decided.
    """
    if passed is None:
        decided = NOT_APPLICABLE
    elif isinstance(passed, bool):
        decided = PASSED if passed else FAILED
    else:
        raise ConfigError(f"passed must be True, False or None; got {passed!r}")
    return Claim(
        check_id, statement, paper_value, our_value, decided, profile, dataset, details, CHECK
    )


def claims_only(rows: Sequence[Claim]) -> list[Claim]:
    """The rows of ``rows`` that are claims (not checks)."""
    return [c for c in rows if not c.is_check]


def checks_only(rows: Sequence[Claim]) -> list[Claim]:
    """The rows of ``rows`` that are checks."""
    return [c for c in rows if c.is_check]


@dataclass(frozen=True)
class SeedComparison:
    """Two methods compared over seeds (:func:`paired`).

    Attributes:
        difference: how much better the first method is than the second (the mean over seeds
            of its value minus the other's, negated when lower is better).
        spread: the seed spread of that difference (its sample std over seeds; 0 for one).
    """

    difference: float
    spread: float

    @property
    def outcome(self) -> int:
        """+1 better beyond the spread, -1 worse beyond it, 0 within it."""
        return _sign(self.difference, self.spread)


SPREAD_RULE = (
    "mean of the per-seed differences ± their std (the seed spread); reproduced if better "
    "beyond the spread in every comparison, not reproduced if worse beyond it in any, "
    "else inconclusive"
)
"""How :func:`comparison_verdict` reads :func:`paired` comparisons, for a claim's details."""


def paired(differences: Sequence[float]) -> SeedComparison:
    """The comparison of per-seed differences (method minus other; positive = better): their
    mean against their sample std (0 for one seed).  Both networks of a seed share the data
    order (and often the initialisation), so a claim that one beats the other compares them
    seed by seed.

    Args:
        differences: one difference per seed (at least one).
    """
    values = [_number(f"differences[{i}]", v) for i, v in enumerate(differences)]
    if not values:
        raise ConfigError("paired needs at least one per-seed difference")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedComparison(statistics.fmean(values), spread)


def describe(comparisons: Sequence[tuple[str, SeedComparison]], unit: str) -> str:
    """``'a vs b: +1.2 ± 0.8 unit'`` per comparison (mean difference ± seed spread)."""
    return "; ".join(
        f"{label}: {c.difference:+.2f} ± {c.spread:.2f}{unit}" for label, c in comparisons
    )


def comparison_verdict(comparisons: Sequence[SeedComparison]) -> str:
    """The verdict of a claim that a method beats others: ``reproduced`` when it is better
    beyond the seed spread in every comparison, ``not reproduced`` when it is worse beyond it
    in any, else ``inconclusive``.

    Args:
        comparisons: the claim's comparisons (at least one).
    """
    if not comparisons:
        raise ConfigError("comparison_verdict needs at least one comparison")
    outcomes = {c.outcome for c in comparisons}
    if -1 in outcomes:
        return NOT_REPRODUCED
    return REPRODUCED if outcomes == {1} else INCONCLUSIVE


def _number(name: str, value: Any) -> float:
    """``value`` as a finite float; anything else (bool, str, NaN, None) is an error."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number; got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    return number


def _sign(value: float, tol: float) -> int:
    """-1, 0 or +1, with ``|value| <= tol`` counted as 0."""
    return 0 if abs(value) <= tol else (1 if value > 0 else -1)


def same_sign(paper: float, ours: float, *, tol: float = 0.0) -> bool:
    """Whether our effect has the paper's sign (values within ``±tol`` count as zero).

    Args:
        paper: the paper's effect, e.g. a Δ% or a difference between two methods.
        ours: our measured effect.
        tol: dead zone around zero (same units as the values), >= 0.
    """
    tol = _number("tol", tol)
    if tol < 0:
        raise ConfigError(f"tol must be >= 0; got {tol}")
    return _sign(_number("paper", paper), tol) == _sign(_number("ours", ours), tol)


def at_least(ours: float, ref: float, tol: float = 0.0) -> bool:
    """Whether ``ours >= ref - tol`` (e.g. "the pruned model keeps the accuracy").

    Args:
        ours: our measured value.
        ref: the value it must reach.
        tol: allowed shortfall, >= 0.
    """
    tol = _number("tol", tol)
    if tol < 0:
        raise ConfigError(f"tol must be >= 0; got {tol}")
    return _number("ours", ours) >= _number("ref", ref) - tol


def at_most(ours: float, ref: float, tol: float = 0.0) -> bool:
    """Whether ``ours <= ref + tol`` (e.g. "the error does not grow").

    Args:
        ours: our measured value.
        ref: the value it must not exceed.
        tol: allowed excess, >= 0.
    """
    tol = _number("tol", tol)
    if tol < 0:
        raise ConfigError(f"tol must be >= 0; got {tol}")
    return _number("ours", ours) <= _number("ref", ref) + tol


def ordering_matches(
    paper_values: Mapping[str, float], our_values: Mapping[str, float], *, tol: float = 0.0
) -> bool:
    """Whether our values rank the items as the paper's do (every pair compared).

    For every pair of items, the sign of the difference must agree, with differences within
    ``±tol`` counted as ties (on both sides).

    Args:
        paper_values: item (method, task, ...) -> the paper's value.
        our_values: item -> our value; must have the same items.
        tol: differences this small count as ties, >= 0.
    """
    if set(paper_values) != set(our_values):
        raise ConfigError(
            f"ordering_matches needs the same items; paper: {sorted(paper_values)}, "
            f"ours: {sorted(our_values)}"
        )
    if len(paper_values) < 2:
        raise ConfigError("ordering_matches needs at least two items")
    tol = _number("tol", tol)
    items = sorted(paper_values)
    paper = {k: _number(f"paper_values[{k!r}]", paper_values[k]) for k in items}
    ours = {k: _number(f"our_values[{k!r}]", our_values[k]) for k in items}
    return all(
        _sign(paper[a] - paper[b], tol) == _sign(ours[a] - ours[b], tol)
        for i, a in enumerate(items)
        for b in items[i + 1 :]
    )


def format_value(value: Any, digits: int = 6) -> str:
    """A claim value as text: floats with ``digits`` significant digits, others via ``str``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _parse_value(text: str) -> str | float:
    """Inverse of :func:`format_value` for the value columns: numbers become floats."""
    return float(text) if _NUMBER_RE.match(text.strip()) else text


def write_claims(claims: Sequence[Claim], out_dir: str | Path) -> Path:
    """Write ``claims.csv`` (columns :data:`CLAIM_COLUMNS`, in the given order).

    Args:
        claims: the paper's claims and checks (:func:`make_check`); ids must be unique.
        out_dir: the output folder.
    """
    ids = [c.claim_id for c in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"duplicate claim ids: {', '.join(duplicates)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLAIM_COLUMNS)
    for claim in claims:
        writer.writerow([format_value(v) for v in astuple(claim)])
    return atomic_write_text(Path(out_dir) / CLAIMS_FILE, buffer.getvalue())


def read_claims(path: str | Path) -> list[Claim]:
    """Read a ``claims.csv`` written by :func:`write_claims`.

    A file of an earlier version without the ``kind`` column is read as claims only.

    Args:
        path: the CSV file.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(reader.fieldnames or ())
        if columns not in (CLAIM_COLUMNS, CLAIM_COLUMNS[:-1]):
            raise ConfigError(
                f"{path}: columns {reader.fieldnames} do not match {list(CLAIM_COLUMNS)}"
            )
        claims = []
        for row in reader:
            row["paper_value"] = _parse_value(row["paper_value"])
            row["our_value"] = _parse_value(row["our_value"])
            claims.append(Claim(**row))
    return claims
