"""Distinctiveness pruning of a multi-task joint encoder layer (paper A).

J. Singh, "Analysing Efficiency of Deep Multi-Task Networks Using Distinctiveness Pruning"
(Australian National University; the text names no venue), §2.1 and §2.3, Eq. 3-15; after
Gedeon & Harris, "Progressive image compression", IJCNN 1992.

**Model (§2.1).** Feature extractor -> FC d->h -> BatchNorm -> σ -> joint hidden H -> one
linear decoder h->k_t per task (:class:`~mtlrepro.models.joint_encoder.JointEncoderModel`).
Paper A never names σ; sigmoid is our choice, after Gedeon & Harris, whose method it applies.

**Activation patterns (Eq. 3-4).** h_i = σ(BN(X_f w_i + b_i)) ∈ R^N over a fixed probe set of N
images, BN in eval mode (running statistics): the patterns the evaluated network computes.

**Centring (our decision).** Eq. 5 takes the angle between the patterns as they are, but
sigmoid outputs are positive, so every angle would be <= 90° and dissimilarity pruning
(∠ >= 180° - θ, Eq. 14-15) could never fire.  Gedeon & Harris measure distinctiveness on
activations normalised to [-0.5, 0.5]; we likewise take angles between centred patterns
h̃_i = h_i - c_i.  ``centring="activation"`` (default): c = the activation's midpoint (0.5 for
sigmoid, 0 for tanh and relu); ``"mean"``: c_i = mean of h_i over the probe set (the angle is
then arccos of the Pearson correlation); ``"none"``: Eq. 4-5 literally.

**Merge (Eq. 6-15 for centred patterns).** If h̃_y = α·h̃_x then h_y = α·h_x + (c_y - α·c_x),
so every decoder output o_p = Σ_i w_pi·h_i + b_p (Eq. 6) is unchanged when unit y is removed and

    w_px <- w_px + α·w_py  (Eq. 13 / 14; Eq. 15 is α = -1),   b_p <- b_p + (c_y - α·c_x)·w_py.

With the activation centre c the bias shift is (1 - α)·c·w_py: none for duplicates (α = 1),
2c·w_py for opposite units (α = -1).  ``coefficient="cosine"``: α = cos∠(h̃_x, h̃_y) (Eq. 13,
exact when ‖h̃_x‖ = ‖h̃_y‖, Eq. 7); ``"least_squares"``: α = (h̃_x·h̃_y)/‖h̃_x‖², the α minimising
‖h̃_y - α·h̃_x‖ (exact for any multiple; equals the cosine when the norms are equal).

**Greedy order (our choice; the paper gives none).**  Candidates: pairs with ∠ <= θ
(similarity) or ∠ >= 180° - θ (dissimilarity).  Most extreme first (smallest
min(∠, 180° - ∠) over the enabled kinds; ties in index order), a pair whose units are both still
present is merged, removing the unit with the smaller centred norm (the least-squares residual
‖h̃_y‖·sin∠ is then the smaller one).  Removing a unit never changes another unit's pattern
(each has its own FC row and BN entry), so one pass ends, as repeated rounds of disjoint pairs
would, with no pair within θ -- without recomputing any pattern.  No maximum per epoch:
the paper prunes whenever a pair lies within θ.

**Minimum angle (Fig. 3).** min over pairs of min(∠, 180° - ∠) of the centred patterns before
pruning: the closest pair's distance to either pruning condition (with both kinds enabled,
pruning happens iff it is <= θ).

Units are removed in place (``Parameter.data`` replaced; the parameter objects stay), so the
loop's optimiser rebuild suffices, and a pruned state dict loads into a full-size model (it
resizes itself), so a pruned checkpoint resumes into an optimiser built before the restore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.models.joint_encoder import ACTIVATIONS, JointEncoderModel
from mtlrepro.train import Hooks, TrainerState

ACTIVATION_CENTRES: dict[str, float] = {"sigmoid": 0.5, "tanh": 0.0, "relu": 0.0}
"""Midpoint of each activation's range: the centre of ``centring="activation"``."""
CENTRINGS: tuple[str, ...] = ("activation", "mean", "none")
COEFFICIENTS: tuple[str, ...] = ("cosine", "least_squares")


def _check_pruning(
    theta: Any, similarity: Any, dissimilarity: Any, coefficient: Any, centring: Any
) -> None:
    """Validate the pruning options (see :class:`DistinctivenessConfig`)."""
    check_range("theta", theta, 0.0, 90.0)
    for name, value in (("similarity", similarity), ("dissimilarity", dissimilarity)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False; got {value!r}")
    if not (similarity or dissimilarity):
        raise ConfigError("enable similarity or dissimilarity pruning (or set enabled=False)")
    check_choice("coefficient", coefficient, COEFFICIENTS)
    check_choice("centring", centring, CENTRINGS)


@dataclass(frozen=True)
class DistinctivenessConfig:
    """Paper A's settings (validated on creation; bad values raise ``ConfigError``).

    Attributes:
        hidden: initial joint hidden size h (paper: 128).
        theta: angle threshold θ in degrees, in [0, 90] (paper: 30).
        activation: σ, one of :data:`ACTIVATIONS` (our choice sigmoid, after Gedeon & Harris;
            paper A never names it).
        centring: pattern centring, one of :data:`CENTRINGS` (see the module doc).
        similarity: prune pairs with ∠ <= θ (Eq. 13).
        dissimilarity: prune pairs with ∠ >= 180° - θ (Eq. 14-15).
        coefficient: merge coefficient α, ``"cosine"`` (Eq. 13) or ``"least_squares"``.
        probe_size: number of training images in the probe set (the paper's N).
        enabled: prune at all (``False``: the unpruned baseline, still logging angles).
    """

    hidden: int = 128
    theta: float = 30.0
    activation: str = "sigmoid"
    centring: str = "activation"
    similarity: bool = True
    dissimilarity: bool = True
    coefficient: str = "cosine"
    probe_size: int = 512
    enabled: bool = True

    def __post_init__(self) -> None:
        """Check every field; raises :class:`~mtlrepro.config.ConfigError`."""
        check_range("DistinctivenessConfig.hidden", self.hidden, 1, integer=True)
        check_range("DistinctivenessConfig.probe_size", self.probe_size, 2, integer=True)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_pruning(
            self.theta, self.similarity, self.dissimilarity, self.coefficient, self.centring
        )
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"enabled must be True or False; got {self.enabled!r}")


@dataclass(frozen=True)
class PrunedPair:
    """One merge of :func:`prune_to_distinct` (unit indices before that call).

    Attributes:
        keep: the unit x that absorbed the other.
        remove: the unit y removed.
        angle: ∠(h̃_x, h̃_y) in degrees.
        kind: ``"similar"`` (Eq. 13) or ``"opposite"`` (Eq. 14-15).
        coefficient: the α used.
    """

    keep: int
    remove: int
    angle: float
    kind: str
    coefficient: float


@torch.no_grad()
def activation_patterns(
    model: JointEncoderModel, probe_images: Tensor, batch_size: int = 256
) -> Tensor:
    """Hidden activation patterns on a probe set (Eq. 3-4), eval mode, no gradient.

    Args:
        model: the model (its training mode is restored afterwards).
        probe_images: the probe images (N, ...).
        batch_size: images per forward pass.

    Returns:
        (N, h) float64 on the CPU: column i is h_i.
    """
    check_range("batch_size", batch_size, 1, integer=True)
    device = model.fc.weight.device
    was_training = model.training
    model.eval()
    try:
        chunks = [model.hidden(x.to(device)) for x in probe_images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks).double().cpu()


def centre_patterns(patterns: Tensor, centring: str, activation: str) -> tuple[Tensor, Tensor]:
    """Centred patterns h̃_i = h_i - c_i and the centres c (see the module doc).

    Args:
        patterns: (N, h) activation patterns.
        centring: one of :data:`CENTRINGS`.
        activation: σ's name (decides the centre of ``"activation"``).

    Returns:
        ``(centred (N, h), centres (h,))``.
    """
    check_choice("centring", centring, CENTRINGS)
    if centring == "mean":
        centres = patterns.mean(dim=0)
    else:
        value = ACTIVATION_CENTRES[activation] if centring == "activation" else 0.0
        centres = patterns.new_full((patterns.shape[1],), value)
    return patterns - centres, centres


def _cosines(patterns: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise cosines of the columns (Eq. 5; 0 for a zero column) and the column norms."""
    norms = patterns.norm(dim=0)
    unit = patterns / norms.clamp_min(torch.finfo(patterns.dtype).tiny)
    return (unit.T @ unit).clamp(-1.0, 1.0), norms


def pairwise_angles(patterns: Tensor) -> Tensor:
    """Angles ∠(h_i, h_j) in degrees between the columns of ``patterns`` (Eq. 5).

    A zero column has angle 90° to every column.

    Args:
        patterns: (N, h) patterns, centred by the caller (:func:`centre_patterns`).

    Returns:
        (h, h) symmetric matrix of angles in [0, 180].
    """
    return torch.rad2deg(torch.arccos(_cosines(patterns)[0]))


def min_distinctiveness_angle(angles: Tensor) -> float:
    """min over pairs i < j of min(∠_ij, 180° - ∠_ij) (Fig. 3); NaN for fewer than 2 units.

    Args:
        angles: (h, h) matrix from :func:`pairwise_angles`.
    """
    i, j = torch.triu_indices(*angles.shape, offset=1)
    if i.numel() == 0:
        return math.nan
    pair = angles[i, j]
    return float(torch.minimum(pair, 180.0 - pair).min())


def _fold(model: JointEncoderModel, keep: int, remove: int, alpha: float, shift: float) -> None:
    """Fold unit ``remove``'s decoder weights into ``keep`` (Eq. 13-15) and its constant part
    into the biases; unit ``remove`` itself stays until :meth:`JointEncoderModel.select_units`."""
    with torch.no_grad():
        for decoder in model.decoders.values():
            column = decoder.weight[:, remove]
            decoder.bias += shift * column
            decoder.weight[:, keep] += alpha * column


def prune_pair(
    model: JointEncoderModel, keep: int, remove: int, coefficient: float, bias_shift: float = 0.0
) -> None:
    """Remove hidden unit y = ``remove``, folding it into x = ``keep`` (Eq. 12-15).

    For every task m and output p: w_px <- w_px + α·w_py and b_p <- b_p + s·w_py; then row y of
    ``fc``, entry y of ``bn`` and column y of every decoder are removed (units after y shift
    down by one).  Exact when h_y = α·h_x + s on the probe set.

    Args:
        model: the model (changed in place).
        keep: index of x.
        remove: index of y (``!= keep``).
        coefficient: α (paper: cos∠(h_x, h_y)).
        bias_shift: s = c_y - α·c_x for centred patterns (see the module doc).
    """
    check_range("keep", keep, 0, model.hidden_size - 1, integer=True)
    check_range("remove", remove, 0, model.hidden_size - 1, integer=True)
    if keep == remove:
        raise ConfigError(f"cannot fold unit {keep} into itself")
    _fold(model, keep, remove, coefficient, bias_shift)
    model.select_units([u for u in range(model.hidden_size) if u != remove])


def _prune_centred(
    model: JointEncoderModel,
    centred: Tensor,
    centres: Tensor,
    theta: float,
    similarity: bool,
    dissimilarity: bool,
    coefficient: str,
) -> list[PrunedPair]:
    """Greedy similarity / dissimilarity pruning on centred patterns (see the module doc)."""
    cosines, norms = _cosines(centred)
    angles = torch.rad2deg(torch.arccos(cosines))
    i, j = torch.triu_indices(*angles.shape, offset=1)
    pair = angles[i, j]
    inf = torch.full_like(pair, math.inf)
    extremeness = torch.minimum(
        torch.where(pair <= theta, pair, inf) if similarity else inf,
        torch.where(pair >= 180.0 - theta, 180.0 - pair, inf) if dissimilarity else inf,
    )
    order = torch.sort(extremeness, stable=True).indices
    order = order[torch.isfinite(extremeness[order])]
    removed: set[int] = set()
    pairs: list[PrunedPair] = []
    for k in order.tolist():
        a, b = int(i[k]), int(j[k])
        if a in removed or b in removed:
            continue
        x, y = (a, b) if norms[b] <= norms[a] else (b, a)
        cos = float(cosines[x, y])
        alpha = cos
        if coefficient == "least_squares":
            alpha = cos * float(norms[y] / norms[x]) if norms[x] > 0 else 0.0
        _fold(model, x, y, alpha, float(centres[y] - alpha * centres[x]))
        removed.add(y)
        kind = "similar" if extremeness[k] == pair[k] else "opposite"
        pairs.append(PrunedPair(x, y, float(pair[k]), kind, alpha))
    if removed:
        model.select_units([u for u in range(model.hidden_size) if u not in removed])
    return pairs


def prune_to_distinct(
    model: JointEncoderModel,
    probe_images: Tensor,
    theta: float = 30.0,
    *,
    similarity: bool = True,
    dissimilarity: bool = True,
    coefficient: str = "cosine",
    centring: str = "activation",
    batch_size: int = 256,
) -> list[PrunedPair]:
    """Prune until no pair of hidden units lies within θ (§2.3; order in the module doc).

    Args:
        model: the model (changed in place).
        probe_images: the probe set X.
        theta: threshold θ in degrees.
        similarity: merge pairs with ∠ <= θ (Eq. 13).
        dissimilarity: merge pairs with ∠ >= 180° - θ (Eq. 14-15).
        coefficient: ``"cosine"`` (Eq. 13) or ``"least_squares"``.
        centring: one of :data:`CENTRINGS`.
        batch_size: probe images per forward pass.

    Returns:
        The merges, in the order made ([] when no pair lies within θ: the model is untouched).
    """
    _check_pruning(theta, similarity, dissimilarity, coefficient, centring)
    patterns = activation_patterns(model, probe_images, batch_size)
    centred, centres = centre_patterns(patterns, centring, model.activation)
    return _prune_centred(model, centred, centres, theta, similarity, dissimilarity, coefficient)


class DistinctivenessPruning(Hooks):
    """End-of-epoch distinctiveness pruning (§2.3, §5.1: after every epoch, θ = 30°).

    Logs per epoch (task ``"all"``, split ``"train"``): ``min_angle`` (before pruning, see the
    module doc), ``hidden_size`` (after pruning) and ``pruned`` (units removed), and asks the
    loop to rebuild its optimiser when units were removed.
    """

    def __init__(
        self,
        probe_images: Tensor,
        theta: float = 30.0,
        *,
        similarity: bool = True,
        dissimilarity: bool = True,
        coefficient: str = "cosine",
        centring: str = "activation",
        enabled: bool = True,
        batch_size: int = 256,
    ) -> None:
        """Args:
        probe_images: fixed probe set X (N >= 2 images, e.g. the first training images).
        theta: threshold θ in degrees, in [0, 90].
        similarity: merge pairs with ∠ <= θ (Eq. 13).
        dissimilarity: merge pairs with ∠ >= 180° - θ (Eq. 14-15).
        coefficient: ``"cosine"`` (Eq. 13) or ``"least_squares"``.
        centring: one of :data:`CENTRINGS`.
        enabled: prune (``False``: only log the angle and size, for the baseline).
        batch_size: probe images per forward pass.
        """
        _check_pruning(theta, similarity, dissimilarity, coefficient, centring)
        if not isinstance(enabled, bool):
            raise ConfigError(f"enabled must be True or False; got {enabled!r}")
        if not isinstance(probe_images, Tensor) or len(probe_images) < 2:
            raise ConfigError("probe_images must be a tensor of at least 2 images")
        check_range("batch_size", batch_size, 1, integer=True)
        self.probe_images = probe_images
        self.theta = theta
        self.similarity = similarity
        self.dissimilarity = dissimilarity
        self.coefficient = coefficient
        self.centring = centring
        self.enabled = enabled
        self.batch_size = batch_size

    @classmethod
    def from_config(
        cls, config: DistinctivenessConfig, probe_images: Tensor
    ) -> DistinctivenessPruning:
        """The hook with a config's pruning settings.

        Args:
            config: the settings.
            probe_images: fixed probe set (``config.probe_size`` images, chosen by the caller).
        """
        return cls(
            probe_images,
            config.theta,
            similarity=config.similarity,
            dissimilarity=config.dissimilarity,
            coefficient=config.coefficient,
            centring=config.centring,
            enabled=config.enabled,
        )

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        """Measure the angles, prune, log, and request an optimiser rebuild if pruned.

        Args:
            model: a :class:`JointEncoderModel`.
            epoch: the epoch just completed.
            trainer_state: the loop's state (logging, ``rebuild_optimizer``).
        """
        if not isinstance(model, JointEncoderModel):
            raise TypeError(f"DistinctivenessPruning needs a JointEncoderModel; got {type(model)}")
        patterns = activation_patterns(model, self.probe_images, self.batch_size)
        centred, centres = centre_patterns(patterns, self.centring, model.activation)
        trainer_state.log("min_angle", min_distinctiveness_angle(pairwise_angles(centred)))
        pairs: list[PrunedPair] = []
        if self.enabled:
            pairs = _prune_centred(
                model,
                centred,
                centres,
                self.theta,
                self.similarity,
                self.dissimilarity,
                self.coefficient,
            )
        if pairs:
            trainer_state.rebuild_optimizer = True
        trainer_state.log("hidden_size", model.hidden_size)
        trainer_state.log("pruned", len(pairs))


def compression(initial: float, final: float) -> float:
    """Compression % = 100·(h_initial - h_final)/h_initial (paper A, Tables 2-3).

    Args:
        initial: initial hidden size (> 0).
        final: final hidden size.
    """
    check_range("initial", initial, 0.0, low_inclusive=False)
    return 100.0 * (initial - final) / initial


def utilisation(initial: float, final: float) -> float:
    """Feature utilisation % = 100·h_final/h_initial = 100 - compression (paper A, Table 2).

    Args:
        initial: initial hidden size (> 0).
        final: final hidden size.
    """
    check_range("initial", initial, 0.0, low_inclusive=False)
    return 100.0 * final / initial
