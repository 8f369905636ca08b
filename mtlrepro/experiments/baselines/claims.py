"""Claims BL1-BL4 and BL6-BL8: paper D's Table 2 pattern (single-task vs shared bottom, and
the cross-stitch and MTAN rows), decided on this run's numbers; checks BL5, BL9 and BL10: the
parameter ratios of our constructors against Table 2's (fixed by the construction, so they are
verified apart from the claims, :func:`mtlrepro.report.make_check`).

Every claim is decided seed by seed: a Δ of a seed is measured against the single-task networks
of the same seed (:func:`~mtlrepro.experiments.baselines.study.seed_deltas`), signed so that
positive agrees with the paper, and the per-seed values are read as a
:class:`~mtlrepro.report.SeedComparison` (mean against their std): ``reproduced`` beyond the
spread, ``not reproduced`` beyond it the other way, ``inconclusive`` within it.
"""

from __future__ import annotations

import math

from mtlrepro import paper_numbers
from mtlrepro.config import ConfigError
from mtlrepro.experiments.baselines.study import (
    ARCHITECTURE_ROWS,
    PAPER_TASK_ORDER,
    SHARED_BOTTOM,
    SINGLE_TASK,
    BaselinesResult,
    delta_table,
    seed_deltas,
    shared_row,
)
from mtlrepro.report import SPREAD_RULE, Claim, SeedComparison, make_check, make_claim, paired

CROSS_STITCH = ARCHITECTURE_ROWS["cross_stitch"]
MTAN = ARCHITECTURE_ROWS["mtan"]
TASK_NAMES = {"segmentation": "semantic segmentation", "normal": "surface normals",
              "depth": "depth"}

PARAMS_TOLERANCE = 0.05
"""Relative tolerance of the parameter-ratio checks: task heads make T single-task networks a
little more than T times the shared trunk, so an exact T is not expected."""


def seed_values(result: BaselinesResult) -> dict[str, list[float]]:
    """Claim id -> the per-seed quantity it is decided on, in seed order (% or points of %):
    BL1-BL3 the equal-weight shared bottom's Δ per task (paper D's column order), BL4 its Δ_T,
    BL6/BL7 the cross-stitch and MTAN networks' Δ_T, BL8 Δ_T(MTAN) − Δ_T(shared bottom); only
    the claims whose rows ran."""
    deltas = seed_deltas(result)

    def values(row: str, column: str) -> list[float]:
        return [float(v) for v in deltas.loc[deltas["method"] == row, column]]

    shared = shared_row("equal")
    rows = set(deltas["method"])
    out: dict[str, list[float]] = {}
    if shared in rows:
        tasks = [t for t in PAPER_TASK_ORDER if t in result.config.tasks]
        for i, task in enumerate(tasks):
            out[f"BL{i + 1}"] = values(shared, f"delta_{task}")
        out["BL4"] = values(shared, "delta_all")
    for claim_id, row in (("BL6", CROSS_STITCH), ("BL7", MTAN)):
        if row in rows:
            out[claim_id] = values(row, "delta_all")
    if MTAN in rows and shared in rows:
        out["BL8"] = [a - b for a, b in zip(out["BL7"], out["BL4"], strict=True)]
    return out


def _agreeing(paper: float, values: list[float]) -> SeedComparison:
    """The per-seed values signed so that positive agrees with the paper's sign."""
    sign = 1.0 if paper >= 0 else -1.0
    return paired([sign * v for v in values])


def _ours(values: list[float]) -> str:
    """Our value as mean ± std over seeds."""
    compared = paired(values)
    return f"{compared.difference:+.2f} ± {compared.spread:.2f}"


def _seeds_details(what: str, result: BaselinesResult) -> str:
    return f"{what}, per seed against the same seed's networks, {len(result.seeds)} seeds; " + (
        SPREAD_RULE
    )


def _sign_claim(
    claim_id: str, claim: str, paper: float, values: list[float], result: BaselinesResult,
    what: str,
) -> Claim:
    """A claim on the sign of a per-seed quantity (paper's sign = reproduced)."""
    return make_claim(
        claim_id,
        claim,
        paper,
        _ours(values),
        [_agreeing(paper, values)],
        profile=result.profile,
        dataset=result.config.dataset,
        details=_seeds_details(what, result),
    )


def evaluate(result: BaselinesResult) -> list[Claim]:
    """Paper D's Table 2 pattern for Single-Task vs Shared Bottom, checked on our numbers.

    BL1-BL3: the sign of the equal-weight shared-bottom network's Δ per task (paper: −7.6 sem,
    +7.5 norm, +5.2 dep); BL4: the sign of its Δ_T (+1.7); check BL5: single-task networks need
    about T times the parameters of the shared one (3.00 vs 1.00) -- a consequence of the
    constructors, so a check, not a claim.  With the architecture rows
    (:func:`architecture_claims`): BL6/BL7 the signs of the cross-stitch and MTAN networks' Δ_T,
    BL8 MTAN's Δ_T above the shared bottom's, checks BL9/BL10 their parameter ratios.  Each
    claim is decided over the seeds (module doc).
    """
    ours = delta_table(result).set_index("method")
    row = shared_row("equal")
    if row not in ours.index:
        raise ConfigError("the claims compare the equal-weight shared-bottom run; add 'equal'")
    values = seed_values(result)
    out = []
    for i, task in enumerate(t for t in PAPER_TASK_ORDER if t in result.config.tasks):
        paper = paper_numbers.value("D", "Table 2", SHARED_BOTTOM, task, "delta")
        word = "loses to" if paper < 0 else "beats"
        out.append(
            _sign_claim(
                f"BL{i + 1}",
                f"Shared bottom {word} single-task on {TASK_NAMES[task]} (sign of Δ)",
                paper,
                values[f"BL{i + 1}"],
                result,
                f"Δ_{task} in % (Eq. 10) of '{row}' vs '{SINGLE_TASK}'",
            )
        )
    paper_all = paper_numbers.value("D", "Table 2", SHARED_BOTTOM, "all", "delta")
    out.append(
        _sign_claim(
            "BL4",
            "Shared bottom beats single-task on average over tasks (sign of Δ_T)",
            paper_all,
            values["BL4"],
            result,
            "Δ_T in % (Eq. 11)",
        )
    )
    paper_ratio = paper_numbers.value(
        "D", "Table 2", SINGLE_TASK, "", "params"
    ) / paper_numbers.value("D", "Table 2", SHARED_BOTTOM, "", "params")
    measured_ratio = float(ours.loc[SINGLE_TASK, "params_rel"])
    holds = math.isclose(measured_ratio, paper_ratio, rel_tol=PARAMS_TOLERANCE)
    out.append(
        make_check(
            "BL5",
            "Single-task networks need T times the shared-bottom parameters",
            paper_ratio,
            round(measured_ratio, 3),
            holds,
            profile=result.profile,
            dataset=result.config.dataset,
            details=f"ratio of parameter counts; within {PARAMS_TOLERANCE:.0%} of the paper's",
        )
    )
    return out + architecture_claims(result)


def architecture_claims(result: BaselinesResult) -> list[Claim]:
    """Claims BL6-BL8 and checks BL9-BL10 on the rows "Cross-Stitch" and "MTAN" (each only if
    its rows ran).

    * BL6, BL7: the cross-stitch (paper +1.3) and MTAN (paper +2.7) networks beat the
      single-task networks on average: the sign of their Δ_T (Eq. 11), per seed;
    * BL8: MTAN beats the shared bottom on Δ_T (paper 2.7 vs 1.7): the sign of
      Δ_T(MTAN) − Δ_T(Shared Bottom (equal)) of each seed, in points of %;
    * checks BL9, BL10: the parameters of the cross-stitch (paper 3.00) and MTAN (paper 3.11)
      networks relative to the shared bottom, within :data:`PARAMS_TOLERANCE` of the paper's
      ratio (fixed by our constructors, hence checks).
    """
    ours = delta_table(result).set_index("method")
    common = dict(profile=result.profile, dataset=result.config.dataset)
    shared = shared_row("equal")
    values = seed_values(result)
    out = []
    for claim_id, row in (("BL6", CROSS_STITCH), ("BL7", MTAN)):
        if row not in ours.index:
            continue
        paper = paper_numbers.value("D", "Table 2", row, "all", "delta")
        word = "loses to" if paper < 0 else "beats"
        out.append(
            _sign_claim(
                claim_id,
                f"{row} {word} single-task on average over tasks (sign of Δ_T)",
                paper,
                values[claim_id],
                result,
                f"Δ_T in % (Eq. 11) of '{row}' vs '{SINGLE_TASK}'",
            )
        )
    if MTAN in ours.index and shared in ours.index:
        paper_mtan = paper_numbers.value("D", "Table 2", MTAN, "all", "delta")
        paper_shared = paper_numbers.value("D", "Table 2", SHARED_BOTTOM, "all", "delta")
        paper = round(paper_mtan - paper_shared, 2)
        word = "beats" if paper > 0 else "does not beat"
        out.append(
            _sign_claim(
                "BL8",
                f"MTAN {word} the shared bottom on average over tasks (Δ_T)",
                paper,
                values["BL8"],
                result,
                f"Δ_T(MTAN) − Δ_T('{shared}') in points of % (Eq. 11): paper MTAN "
                f"{paper_mtan:g} vs shared {paper_shared:g}, ours MTAN "
                f"{float(ours.loc[MTAN, 'delta_all']):.2f} vs shared "
                f"{float(ours.loc[shared, 'delta_all']):.2f} (means)",
            )
        )
    for claim_id, row in (("BL9", CROSS_STITCH), ("BL10", MTAN)):
        if row in ours.index:
            out.append(_params_claim(claim_id, row, float(ours.loc[row, "params_rel"]), common))
    return out


_PARAMS_EXPLANATIONS = {
    CROSS_STITCH: (
        "a cross-stitch network is one column of the shared trunk per task with the shared "
        "network's heads (plus one weight per pair of tasks and unit), so its ratio is about T "
        "only where the heads are small against the trunk"
    ),
    MTAN: (
        "our MTAN follows the MTAN code (github.com/lorenmt/mtan, model_segnet_mtan.py): the "
        "shared SegNet plus per-task 1x1 attention masks and shared 3x3 blocks in every encoder "
        "and decoder stage, whose size relative to the shared SegNet is set by the stage "
        "widths; paper D prints the ratio of its own MTAN network"
    ),
}
"""Why a parameter ratio can differ from paper D's (shown in the details when it does)."""


def _params_claim(claim_id: str, row: str, measured: float, common: dict) -> Claim:
    """Check BL9/BL10: ``row``'s parameters relative to the shared bottom vs paper D's Table 2."""
    paper = paper_numbers.value("D", "Table 2", row, "", "params") / paper_numbers.value(
        "D", "Table 2", SHARED_BOTTOM, "", "params"
    )
    holds = math.isclose(measured, paper, rel_tol=PARAMS_TOLERANCE)
    details = (
        f"ratio of parameter counts '{row}' / shared bottom; within {PARAMS_TOLERANCE:.0%} of "
        f"the paper's"
    )
    if not holds:
        off = measured / paper - 1
        details += (
            f"; ours ({measured:.3f}) is {abs(off):.0%} {'below' if off < 0 else 'above'} the "
            f"paper's ({paper:.2f}): {_PARAMS_EXPLANATIONS[row]}"
        )
    return make_check(
        claim_id,
        f"{row} needs {paper:.2f} times the shared-bottom parameters",
        paper,
        round(measured, 3),
        holds,
        **common,
        details=details,
    )
