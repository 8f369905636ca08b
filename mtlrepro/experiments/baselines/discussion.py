"""The Discussion of the baselines notebook, written from this run's numbers (so a rerun cannot
leave stale text): the scale of the run against paper D's, the level of a constant predictor,
where the shared bottom loses most, what the seed spread settles, and for each claim that did
not reproduce what differs from the paper's setting and the likeliest cause (for an
inconclusive one, its per-seed values)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from mtlrepro.data import get_dataset
from mtlrepro.experiments.baselines.claims import seed_values
from mtlrepro.experiments.baselines.study import (
    ARCHITECTURE_ROWS,
    SHARED_BOTTOM,
    SINGLE_TASK,
    BaselinesConfig,
    BaselinesResult,
    baselines_config,
    delta_table,
    metrics_table,
    shared_row,
)
from mtlrepro.metrics import make_meter
from mtlrepro.models.segnet import segnet_config
from mtlrepro.report import (
    FAILED,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    REPRODUCED,
    Claim,
    checks_only,
    claims_only,
)

SIGN_MARGIN = 2.0
"""Δ (points of %) within which a run of one seed cannot settle a sign (it has no spread to
judge by): paper D's own gaps between baselines are 1-3 points."""
TASK_NAMES: dict[str, str] = {
    "segmentation": "segmentation",
    "depth": "depth",
    "normal": "surface normals",
}
HEADLINE_METRICS: dict[str, tuple[str, str]] = {
    "segmentation": ("miou", " % mIoU"),
    "depth": ("abs_err", " m absolute error"),
    "normal": ("mean_angle", "° mean angle"),
}
"""Task -> the metric quoted for it, and its unit."""
DELTA_T_CLAIMS: dict[str, str] = {
    "BL4": "",
    "BL6": ARCHITECTURE_ROWS["cross_stitch"],
    "BL7": ARCHITECTURE_ROWS["mtan"],
}
"""Claims on the sign of a row's Δ_T -> the row ("": the equal-weight shared bottom); their
cause is read from the row's Δ per task."""
CAUSES: dict[str, str] = {
    "BL1": "the synthetic rooms' classes follow from geometry the shared trunk learns for depth "
    "and normals too, so at this scale sharing does not cost segmentation",
    "BL2": "paper D's shared bottom is a full-width network trained long on real NYU-v2, where "
    "normals profit from the other tasks' features; here one slim trunk trained for a few "
    "epochs from scratch serves three dense tasks, and normals, which need the finest "
    "geometry, get the least of it",
    "BL3": "depth of the synthetic rooms is learnt quickly by every network, so the shared and "
    "single-task networks end close together",
    "BL5": "the task heads are large against the slim cpu trunk, so the single-task networks' "
    "three heads weigh more than paper D's",
    "BL8": "MTAN's attention starts from the shared trunk's features and needs more training "
    "than the cpu schedule gives to select them per task",
    "BL9": "the cross-stitch network is one trunk column per task with the shared network's "
    "heads, so its ratio stays near T only while the heads are small against the trunk",
    "BL10": "paper D prints the ratio of its own MTAN network without giving its layout; ours "
    "follows the MTAN code's attention blocks on the SegNet's stage widths (see the claim's "
    "details)",
}
"""Claim or check -> the likeliest cause when it does not reproduce (or fails)."""


def constant_predictor(config: BaselinesConfig) -> dict[str, dict[str, float]]:
    """Test metrics of predicting one constant per task at every pixel, fitted on the training
    split: its most frequent class (segmentation), its mean valid depth (depth) and its mean
    normal direction (normals).  The level the Table 11 numbers are read against.

    Args:
        config: the experiment settings (the data).
    """
    train = get_dataset(config.dataset, "train", config.profile, tasks=config.tasks)
    test = get_dataset(config.dataset, "test", config.profile, tasks=config.tasks)
    specs = {task: train.task_specs[task] for task in config.tasks}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for batch in _chunks(train):  # the training split's class counts, depth and normal sums
        for task, spec in specs.items():
            y = batch[task]
            if spec.kind == "segmentation":
                total = torch.bincount(y[y >= 0].flatten(), minlength=spec.num_classes)
                sums[task] = sums.get(task, 0) + total
            else:
                valid = (y > 0) if spec.kind == "depth" else (y != 0).any(dim=1, keepdim=True)
                sums[task] = sums.get(task, 0) + (y * valid).sum(dim=(0, 2, 3))
                counts[task] = counts.get(task, 0) + valid.sum()
    meters = {task: make_meter(spec.kind, spec.num_classes) for task, spec in specs.items()}
    for batch in _chunks(test):
        for task, spec in specs.items():
            t = batch[task]
            if spec.kind == "segmentation":
                constant = torch.full_like(t, int(sums[task].argmax()))
            else:  # the mean valid depth, or the mean normal (normalised by the meter)
                mean = sums[task] / counts[task]
                constant = mean.view(1, -1, 1, 1).expand_as(t).clone()
            meters[task].update(constant, t)
    return {task: meter.compute() for task, meter in meters.items()}


def _chunks(dataset: Any, size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    """The dataset's samples in batches of ``size`` (the paper profile's splits are large)."""
    for start in range(0, len(dataset), size):
        yield dataset.batch(torch.arange(start, min(start + size, len(dataset))))


def _scale(config: BaselinesConfig, result: BaselinesResult) -> str:
    train = get_dataset(config.dataset, "train", config.profile, tasks=config.tasks)
    height, width = train[0]["image"].shape[-2:]
    segnet = segnet_config(config.profile)
    widths = "/".join(str(max(1, round(w * segnet.width_mult))) for w in segnet.widths)
    paper = baselines_config("paper")
    seeds = (
        f"seed {config.seeds[0]} only"
        if len(config.seeds) == 1
        else f"{len(config.seeds)} seeds ({', '.join(map(str, config.seeds))}; tables: means "
        "over seeds)"
    )
    return (
        f"This run: profile `{config.profile}`, data `{config.dataset}` ({len(train)} training "
        f"images of {height}×{width} pixels), {seeds}, {config.epochs} epochs "
        f"from scratch (batch {config.batch_size}, lr {config.lr:g}), every network a SegNet of "
        f"stage widths {widths} (shared bottom {result.shared_parameters / 1e6:.2f} M "
        f"parameters). Paper D trains on NYU-v2 (795 images at 288×384); the paper profile runs "
        f"MTAN's full-width SegNet for {paper.epochs} epochs (batch {paper.batch_size}, lr "
        f"{paper.lr:g})."
    )


def _constant_sentence(config: BaselinesConfig, table11: pd.DataFrame) -> str:
    constant = constant_predictor(config)
    single = table11.loc[SINGLE_TASK]
    quoted = {
        "segmentation": lambda s: f"{s['miou']:.2f} % mIoU, {s['pixel_acc']:.2f} % pixel accuracy",
        "depth": lambda s: f"absolute error {s['abs_err']:.3f}, δ1 {s['delta1']:.2f} %",
        "normal": lambda s: f"mean angle {s['mean_angle']:.2f}°, {s['within_11_25']:.2f} % "
        "within 11.25°",
    }
    parts = [
        f"{TASK_NAMES[task]} {quoted[task](constant[task])} (single-task "
        f"{quoted[task]({m: single[f'{task}/{m}'] for m in constant[task]})})"
        for task in config.tasks
    ]
    return (
        "For scale, a constant predictor fitted on the training split (its most frequent class, "
        "mean depth, mean normal) scores on this test split: " + "; ".join(parts) + "."
    )


def _worst_task_sentence(result: BaselinesResult, table11: pd.DataFrame,
                         table2: pd.DataFrame) -> str | None:
    """Where the equal-weight shared bottom loses most against single task, and how the other
    balancers and architectures fare on that task (``None`` if it loses nowhere)."""
    shared = shared_row("equal")
    if shared not in table2.index:
        return None
    deltas = {t: float(table2.loc[shared, f"delta_{t}"]) for t in result.config.tasks}
    worst = min(deltas, key=lambda t: deltas[t])
    if deltas[worst] >= 0:
        return None
    metric, unit = HEADLINE_METRICS[worst]
    text = (
        f"The equal-weight shared bottom loses most on {TASK_NAMES[worst]}: Δ "
        f"{deltas[worst]:+.2f} % ({table11.loc[shared, f'{worst}/{metric}']:.2f}{unit} against "
        f"single-task {table11.loc[SINGLE_TASK, f'{worst}/{metric}']:.2f}{unit})."
    )
    others = {r: float(table2.loc[r, f"delta_{worst}"])
              for r in table2.index if r not in (SINGLE_TASK, shared)}
    if others:
        text += " On that task: " + "; ".join(f"{r} {d:+.2f} %" for r, d in others.items()) + "."
    balancers = [r for r in others if r.startswith(SHARED_BOTTOM)]
    separate = [r for r in others if not r.startswith(SHARED_BOTTOM)]
    rescaled = any(others[r] > deltas[worst] for r in balancers)
    if rescaled:
        text += " Another loss balancer recovers part of it, so how the losses share the trunk is "
        text += "one cause."
    if separate and all(others[r] > max(deltas[worst], *(others[b] for b in balancers))
                        for r in separate):
        text += (
            f" The networks with per-task features ({', '.join(separate)}) lose least, so the "
            f"capacity of the single slim trunk is {'another' if rescaled else 'one'}."
        )
    return text


def _seed_sentence(
    config: BaselinesConfig,
    table2: pd.DataFrame,
    verdicts: Sequence[Claim],
    values: Mapping[str, Sequence[float]],
) -> str:
    """What the seeds settle: with one seed, the signs within :data:`SIGN_MARGIN` of zero;
    with several, the spread of Δ_T and the claims within it (inconclusive).  ``values``:
    :func:`~mtlrepro.experiments.baselines.claims.seed_values`."""
    if len(config.seeds) == 1:
        close = [
            f"{c.claim_id} ({c.our_value})"
            for c in verdicts
            if abs(statistics.fmean(values[c.claim_id])) < SIGN_MARGIN
        ]
        text = (
            f"Every row comes from one seed ({config.seeds[0]}), so no seed spread is measured "
            "here (the cpu profile runs three)."
        )
        if close:
            text += (
                f" Within ±{SIGN_MARGIN:g} points of zero, where another seed could flip the "
                f"sign: {', '.join(close)}."
            )
        return text
    rows = [r for r in table2.index if r != SINGLE_TASK]
    spreads = [float(table2.loc[r, "delta_all_std"]) for r in rows]
    text = (
        f"Every row is the mean of {len(config.seeds)} seeds, each seed's Δ measured against "
        "the same seed's single-task networks; the seed spread (std) of Δ_T is "
        f"{min(spreads):.2f}–{max(spreads):.2f} points across the multi-task rows."
    )
    within = [f"{c.claim_id} ({c.our_value})" for c in verdicts if c.verdict == INCONCLUSIVE]
    if within:
        text += f" Within the spread, hence inconclusive: {', '.join(within)}."
    else:
        text += " Every claim's mean lies beyond its spread."
    return text


def _delta_t_cause(row: str, table2: pd.DataFrame, tasks: Sequence[str], seeds: int) -> str:
    """Why a row's Δ_T has the sign it has: its Δ per task, the one that pulls hardest, and
    whether the seeds settle it."""
    deltas = {t: float(table2.loc[row, f"delta_{t}"]) for t in tasks}
    total = float(table2.loc[row, "delta_all"])
    spread = float(table2.loc[row, "delta_all_std"])
    pull = (min if total < 0 else max)(deltas, key=lambda t: deltas[t])
    text = (
        "Δ_T is the mean of the tasks' Δ ("
        + ", ".join(f"{TASK_NAMES[t]} {d:+.2f} %" for t, d in deltas.items())
        + f"), and the {TASK_NAMES[pull]} term decides its sign"
    )
    if seeds > 1 and abs(total) <= spread:
        text += f"; at {total:+.2f} ± {spread:.2f} it is within its seed spread"
    elif seeds == 1 and abs(total) < SIGN_MARGIN:
        text += f"; at {total:+.2f} it is within ±{SIGN_MARGIN:g} points of zero, which one seed "
        text += "cannot settle"
    return text


def _claim_sentences(result: BaselinesResult, table2: pd.DataFrame,
                     verdicts: Sequence[Claim],
                     values: Mapping[str, Sequence[float]]) -> list[str]:
    """One sentence per claim that did not reproduce, quoting ours and the paper's value: for
    a Δ_T claim its Δ per task, for another inconclusive claim its per-seed values, else the
    likeliest cause (:data:`CAUSES`)."""
    seeds = len(result.seeds)
    out = []
    for c in verdicts:
        if c.verdict in (REPRODUCED, NOT_APPLICABLE):
            continue
        row = DELTA_T_CLAIMS.get(c.claim_id)
        if row is not None and (row or shared_row("equal")) in table2.index:
            cause = _delta_t_cause(row or shared_row("equal"), table2, result.config.tasks, seeds)
        elif c.verdict == INCONCLUSIVE:
            cause = (
                "per seed " + ", ".join(f"{v:+.2f}" for v in values[c.claim_id])
                + ", so its mean is within the seed spread and more seeds or a longer schedule "
                "would be needed to settle it"
            )
        else:
            cause = CAUSES.get(c.claim_id, "see the claim details")
        out.append(f"{c.claim_id} is {c.verdict} (ours {c.our_value}, paper {c.paper_value}): "
                   f"{cause}.")
    return out


def discussion(result: BaselinesResult, verdicts: Sequence[Claim]) -> str:
    """The body of the notebook's Discussion as Markdown (the notebook holds its heading).

    Args:
        result: :func:`~mtlrepro.experiments.baselines.study.result_from_runs`.
        verdicts: :func:`~mtlrepro.experiments.baselines.claims.evaluate` (its checks are
            not counted as claims; a failed one gets a sentence of its own).
    """
    config = result.config
    failed_checks = [c for c in checks_only(verdicts) if c.verdict == FAILED]
    verdicts = claims_only(verdicts)
    table11 = metrics_table(result).set_index("method")
    table2 = delta_table(result).set_index("method")
    values = seed_values(result)
    reproduced = [c.claim_id for c in verdicts if c.verdict == REPRODUCED]
    worst = _worst_task_sentence(result, table11, table2)
    architectures = [ARCHITECTURE_ROWS[a] for a in config.architectures]
    lines = [
        _scale(config, result),
        "",
        f"* {_constant_sentence(config, table11)}",
        *([f"* {worst}"] if worst else []),
        f"* {_seed_sentence(config, table2, verdicts, values)}",
        f"* Reproduced: {', '.join(reproduced) or 'none'}.",
        *(f"* {s}" for s in _claim_sentences(result, table2, verdicts, values)),
        *(f"* Check {c.claim_id} failed (ours {c.our_value}, paper {c.paper_value}): "
          f"{CAUSES.get(c.claim_id, 'see the check details')}." for c in failed_checks),
        "* At the paper profile (NYU-v2 at 288×384, MTAN's full-width SegNet with VGG-16's "
        "layout, paper C's schedule of the first line) the same code trains "
        f"{', '.join([SINGLE_TASK, 'Shared Bottom', *architectures])} on the real data; it "
        "needs the data and a GPU. The networks still start from scratch there (no pretrained "
        "weights), so the longer schedule and the full widths are what would change the "
        "numbers above.",
    ]
    return "\n".join(lines)
