"""Paper C: deep over-parameterised multi-task layers, ``W = U·M·V`` with task diagonals.

S. Ren & H. Shi, "Learning Compact Neural Networks with Deep Overparameterised Multitask
Learning".  A shared layer's weight is trained as a product of factors (Eq. 1), the diagonal
core is the Hadamard product of one diagonal per task (Eq. 2), the task diagonals and the shared
factors are trained in alternation (Alg. 1), and after training every product is contracted back
into the plain layer, so inference costs exactly what the un-factorised network costs.

* :class:`FactorisedLayer` -- a conv or linear layer as ``W = U·diag(M)·V`` (Eq. 1-2);
  :func:`factorise` replaces chosen layers of a model in place.
* :class:`OverparamTraining` -- the training loop's hooks for Alg. 1 (step 1 in
  :meth:`~mtlrepro.train.Hooks.before_step`, step 2 is the loop's own step) and the Frobenius
  decay (:func:`frobenius_decay_gradients`).
* The single-task over-parameterisations Table 1 compares against: :class:`RepVGGConv`
  (Ding et al. 2021) and :class:`ExpandConv` (Guo et al. 2020, "ExpandNet-CL");
  :func:`overparameterise` puts them in place.
* :func:`contract` turns every over-parameterised layer back into a plain one.

**Choices** (the paper leaves them open; the equation or section they concern is named):

* Conv layout (§2.1, "spatial SVD"): ``W`` (c_o, c_i, k_h, k_w) is permuted to
  (c_o, k_h, k_w, c_i) and read as the matrix of rows (c_o, k_h) and columns (k_w, c_i), so
  ``U`` is c_o·k_h × r and ``V`` is r × k_w·c_i (Jaderberg et al.'s vertical-then-horizontal
  filters).  The layer composes ``W`` from its factors at every forward pass and runs one
  convolution: the same function of the factors as running the two filters in sequence, and
  exactly what :func:`contract` freezes.
* Rank: ``r = min(m, n)`` by default, the smallest the paper allows (Eq. 1, r >= min(m, n)).
* Initialisation (§2.3 and §3.2): ``"layer"`` draws ``U`` and ``V`` like the layers they
  replace, Xavier-normal (the SegNet/MTAN initialisation,
  :func:`~mtlrepro.models.segnet.init_mtan`);
  ``"spectral"`` (Khodak et al. 2021) takes the SVD of the layer's current weight,
  ``W = P Σ Qᵀ``, and sets ``U = P_r √Σ_r``, ``V = √Σ_r Q_rᵀ`` -- the factorised layer then
  computes exactly what the layer did (this needs ``r = min(m, n)``).  Task diagonals start
  at the identity (§2.3).
* Variants (§3.2): ``fac`` (Alg. 1), ``fac_noiter`` (every factor trained on the summed
  loss), ``uvshare`` (the r components are split evenly across tasks, ``np.array_split``;
  task j owns its block of ``U``'s columns and ``V``'s rows and trains them in Alg. 1's step 1;
  one diagonal ``M`` is trained in step 2), ``mshare`` (one diagonal split evenly across
  tasks, task j's block trained in step 1; ``U``, ``V`` shared).
* Alg. 1, step 1 "on a small subset of the training data (~3 %)": a fixed random subset of
  ``subset_fraction`` of the training set (drawn once from the seed); each step, the tasks in
  order each draw the next ``subset_batch_size`` samples of it (cycling) and take one step of
  their own Adam (lr following the shared optimiser's, no weight decay, §3.2) on their own
  factors with their own loss ``L_j``.  BatchNorm runs in training mode there, but its running
  statistics are restored afterwards, so only step 2's batches move them.
* Frobenius decay (§2.3, rate 1e-4, as Khodak et al. implement it): ``coef·∇(½‖U·M·V‖²_F)`` is
  added to the gradients of the factors the current phase trains -- a task's own factors in
  step 1, the shared ones in step 2 -- instead of weight decay on each factor.
* RepVGG branches (Ding et al. 2021): ``k×k conv → BN`` + ``1×1 conv → BN`` + ``BN`` identity
  (when the shapes allow it), summed; merged in eval mode into one ``k×k`` conv with a bias
  (so the merged layer has ``c_o`` more parameters than a bias-free original).
* ExpandNet-CL (Guo et al. 2020): ``1×1 (c_i → E·c_i) → k×k (E·c_i → E·c_o) → 1×1 (E·c_o →
  c_o)``, linear, no bias before the last conv (a bias there would not commute with the zero
  padding), merged exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from mtlrepro.compress import conv_flops
from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.models.onednn import avoid_onednn_strided_pointwise_bug
from mtlrepro.tasks import Task
from mtlrepro.train import Hooks, TrainerState, iterate_batches

VARIANTS: tuple[str, ...] = ("fac", "fac_noiter", "uvshare", "mshare")
"""Sharing variants of §3.2 (see the module doc)."""
INITS: tuple[str, ...] = ("layer", "spectral")
"""Initialisations of the factors (see the module doc)."""
SELECTORS: tuple[str, ...] = ("shared", "all_but_last", "bottleneck_conv1")
"""Named layer selections: every conv/linear layer of the shared backbone (§3.2, SegNet), every
one but each head's final layer (§3.1, Table 1), the first conv of every ResNet bottleneck
(§3.2, DeepLabv3-ResNet50)."""
METHODS: tuple[str, ...] = ("factorisation", "repvgg", "expandnet")
"""Over-parameterisations of Table 1."""
FROBENIUS_DECAY = 1e-4
"""The paper's Frobenius decay rate (§2.3)."""

Layer = nn.Conv2d | nn.Linear


# --------------------------------------------------------------------------------------------
# The factorised layer (Eq. 1-2)
# --------------------------------------------------------------------------------------------
def _check_layer(layer: nn.Module, name: str) -> None:
    """Raise ``ConfigError`` unless ``layer`` is a conv (groups 1, zero padding) or linear."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ConfigError(
                f"layer {name!r} cannot be factorised: a grouped convolution (groups="
                f"{layer.groups}); Eq. 1 factorises full convolutions only"
            )
        if layer.padding_mode != "zeros":
            raise ConfigError(
                f"layer {name!r} cannot be factorised: padding_mode {layer.padding_mode!r} "
                "(only 'zeros')"
            )
    elif not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"layer {name!r} cannot be factorised: a {type(layer).__name__}, not an nn.Conv2d "
            "or nn.Linear"
        )


def matrix_shape(layer: Layer) -> tuple[int, int]:
    """``(m, n)``: the shape of the matrix Eq. 1 factorises (conv: c_o·k_h × k_w·c_i).

    Args:
        layer: a conv or linear layer.
    """
    if isinstance(layer, nn.Conv2d):
        k_h, k_w = layer.kernel_size
        return layer.out_channels * k_h, k_w * layer.in_channels
    return layer.out_features, layer.in_features


def weight_matrix(weight: Tensor) -> Tensor:
    """A conv weight (c_o, c_i, k_h, k_w) as the (c_o·k_h) × (k_w·c_i) matrix of §2.1 (a linear
    weight is returned as it is).

    Args:
        weight: the layer's weight.
    """
    if weight.dim() == 2:
        return weight
    c_o, c_i, k_h, k_w = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(c_o * k_h, k_w * c_i)


def _component_blocks(rank: int, tasks: Sequence[str]) -> Tensor:
    """The task index owning each of ``rank`` components, split evenly (``np.array_split``)."""
    owners = np.concatenate(
        [
            np.full(len(block), j)
            for j, block in enumerate(np.array_split(np.arange(rank), len(tasks)))
        ]
    )
    return torch.as_tensor(owners, dtype=torch.long)


class FactorisedLayer(nn.Module):
    """A conv or linear layer trained as ``W = U·diag(M)·V`` (Eq. 1), ``M = M(1)∘…∘M(t)`` (Eq. 2).

    Attributes:
        U: the left factor, m × r.
        V: the right factor, r × n.
        diagonals: the diagonal cores, one vector of r per task (variants ``fac``,
            ``fac_noiter``) or a single one under the key ``"all"`` (``uvshare``, ``mshare``).
        bias: the original layer's bias (shared), or ``None``.
        variant: one of :data:`VARIANTS`.
        tasks: the task names, in order.
        component_task: for ``uvshare`` / ``mshare``, the index of the task owning each
            component (a buffer), else ``None``.
    """

    def __init__(
        self,
        layer: Layer,
        tasks: Sequence[str],
        *,
        variant: str = "fac",
        rank: int | None = None,
        init: str = "layer",
        name: str = "layer",
    ) -> None:
        """Args:
        layer: the conv or linear layer to factorise (its shape, stride, padding, dilation
            and bias are kept; with ``init="spectral"``, its weight too).
        tasks: the task names (at least one).
        variant: one of :data:`VARIANTS`.
        rank: r, at least ``min(m, n)`` (Eq. 1); ``None`` for ``min(m, n)``.
        init: one of :data:`INITS`.
        name: the layer's name in its model, for messages.
        """
        super().__init__()
        _check_layer(layer, name)
        check_choice("factorisation variant", variant, VARIANTS)
        check_choice("factor initialisation", init, INITS)
        if not tasks:
            raise ConfigError("a factorised layer needs at least one task")
        m, n = matrix_shape(layer)
        rank = min(m, n) if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < min(m, n):
            raise ConfigError(
                f"rank r={rank} of layer {name!r} is below the minimum min(m, n) = {min(m, n)} "
                f"of its {m}×{n} matrix (Eq. 1 needs r >= min(m, n))"
            )
        split = variant in ("uvshare", "mshare")
        if split and rank < len(tasks):
            raise ConfigError(
                f"{variant} splits r={rank} components across {len(tasks)} tasks: needs r >= "
                "the number of tasks"
            )
        self.variant = variant
        self.tasks = tuple(tasks)
        self.rank = rank
        self.is_conv = isinstance(layer, nn.Conv2d)
        if self.is_conv:
            self.out_channels, self.in_channels = layer.out_channels, layer.in_channels
            self.kernel_size = layer.kernel_size
            self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
            # a strided 1×1 conv reads every s-th pixel: computed as subsample-then-stride-1,
            # which keeps its weight gradient off oneDNN's faulty kernel (mtlrepro.models.onednn)
            self.subsample = (
                self.kernel_size == (1, 1) and self.padding == (0, 0) and self.stride != (1, 1)
            )
        else:
            self.out_features, self.in_features = layer.out_features, layer.in_features
        self.U = nn.Parameter(
            torch.empty(m, rank, dtype=layer.weight.dtype, device=layer.weight.device)
        )
        self.V = nn.Parameter(
            torch.empty(rank, n, dtype=layer.weight.dtype, device=layer.weight.device)
        )
        keys = ("all",) if split else self.tasks
        self.diagonals = nn.ParameterDict(
            {key: nn.Parameter(torch.ones_like(self.U[0])) for key in keys}
        )
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.register_buffer(
            "component_task", _component_blocks(rank, self.tasks) if split else None
        )
        with torch.no_grad():
            if init == "spectral":
                self._spectral(weight_matrix(layer.weight.detach()), name)
            else:
                nn.init.xavier_normal_(self.U)
                nn.init.xavier_normal_(self.V)

    def _spectral(self, matrix: Tensor, name: str) -> None:
        """``U = P_r √Σ_r``, ``V = √Σ_r Q_rᵀ`` from the SVD ``matrix = P Σ Qᵀ`` (Khodak et al.)."""
        if self.rank != min(matrix.shape):
            raise ConfigError(
                f"spectral initialisation of layer {name!r} needs rank r = min(m, n) = "
                f"{min(matrix.shape)} (the SVD has that many components); got r={self.rank}"
            )
        p, sigma, qt = torch.linalg.svd(matrix.double(), full_matrices=False)
        root = sigma.sqrt()
        self.U.copy_(p * root)
        self.V.copy_(root[:, None] * qt)

    def core(self) -> Tensor:
        """``M``: the Hadamard product of the diagonals (Eq. 2), a vector of r."""
        diagonals = list(self.diagonals.values())
        core = diagonals[0]
        for diagonal in diagonals[1:]:
            core = core * diagonal
        return core

    def matrix(self) -> Tensor:
        """``U·diag(M)·V``, m × n (Eq. 1)."""
        return (self.U * self.core()) @ self.V

    def weight(self) -> Tensor:
        """The layer's weight in the original layout (conv: c_o × c_i × k_h × k_w)."""
        matrix = self.matrix()
        if not self.is_conv:
            return matrix
        k_h, k_w = self.kernel_size
        return matrix.view(self.out_channels, k_h, k_w, self.in_channels).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """The layer with the composed weight.

        Args:
            x: input of the original layer.
        """
        if not self.is_conv:
            return F.linear(x, self.weight(), self.bias)
        if self.subsample:
            return F.conv2d(x[:, :, :: self.stride[0], :: self.stride[1]], self.weight(), self.bias)
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)

    def contracted(self) -> Layer:
        """The plain layer with weight ``U·M·V`` and the bias (:func:`contract`)."""
        with torch.no_grad():
            weight = self.weight().contiguous()
            if self.is_conv:
                layer: Layer = nn.Conv2d(
                    self.in_channels,
                    self.out_channels,
                    self.kernel_size,
                    self.stride,
                    self.padding,
                    self.dilation,
                    bias=self.bias is not None,
                )
            else:
                layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
            layer = layer.to(weight.device, weight.dtype)
            layer.weight.copy_(weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def composition_macs(self) -> int:
        """Multiply-accumulates of composing ``W`` once: Eq. 2's products, ``U·diag(M)`` and
        the matrix product."""
        m, n = self.U.shape[0], self.V.shape[1]
        return (len(self.diagonals) - 1) * self.rank + m * self.rank + m * self.rank * n

    def task_factors(self, task: str) -> list[tuple[nn.Parameter, Tensor | None]]:
        """The factors Alg. 1's step 1 trains for ``task``, each with the mask of its entries
        (``None``: all of it); empty for ``fac_noiter``.

        Args:
            task: one of :attr:`tasks`.
        """
        j = self.tasks.index(check_choice("task", task, self.tasks))
        if self.variant == "fac":
            return [(self.diagonals[task], None)]
        if self.variant == "fac_noiter":
            return []
        owned = (self.component_task == j).to(self.U.dtype)
        if self.variant == "mshare":
            return [(self.diagonals["all"], owned)]
        return [(self.U, owned[None, :]), (self.V, owned[:, None])]


def frobenius_decay_gradients(layer: FactorisedLayer) -> dict[nn.Parameter, Tensor]:
    """``∇(½‖U·diag(M)·V‖²_F)`` with respect to ``U``, ``V`` and every diagonal (§2.3).

    With ``W = U D V`` and ``D = diag(M)``: ``∇_U = W Vᵀ D``, ``∇_V = D Uᵀ W``,
    ``∇_M = diag(Uᵀ W Vᵀ)``, and a diagonal ``M(j)`` gets ``∇_M ∘ Π_{i≠j} M(i)``.

    Args:
        layer: a factorised layer.
    """
    with torch.no_grad():
        core = layer.core()
        w = (layer.U * core) @ layer.V
        grads = {layer.U: (w @ layer.V.T) * core, layer.V: core[:, None] * (layer.U.T @ w)}
        core_grad = ((layer.U.T @ w) * layer.V).sum(dim=1)
        diagonals = list(layer.diagonals.values())
        for j, diagonal in enumerate(diagonals):
            others = torch.ones_like(core)
            for i, other in enumerate(diagonals):
                if i != j:
                    others = others * other
            grads[diagonal] = core_grad * others
    return grads


# --------------------------------------------------------------------------------------------
# Single-task over-parameterisations of Table 1
# --------------------------------------------------------------------------------------------
def _fold_bn(weight: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """A bias-free conv ``weight`` followed by ``bn`` (eval mode) as one weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


class RepVGGConv(nn.Module):
    """RepVGG's training-time block around a ``k×k`` conv: ``BN(conv_k(x)) + BN(conv_1(x))
    + BN(x)`` (the identity branch only when ``c_i = c_o`` and stride 1; Ding et al. 2021).

    Attributes:
        dense, dense_bn: the ``k×k`` branch (the original conv's shape, stride, padding).
        pointwise, pointwise_bn: the ``1×1`` branch.
        identity_bn: the identity branch's BN, or ``None``.
    """

    def __init__(self, conv: nn.Conv2d, name: str = "layer") -> None:
        """Args:
        conv: a conv with an odd square kernel, padding ``k // 2``, dilation 1, groups 1 (its
            weight starts the ``k×k`` branch; a bias is dropped: the BNs carry one).
        name: its name in the model, for messages.
        """
        super().__init__()
        _check_layer(conv, name)
        k = conv.kernel_size[0]
        if not (
            isinstance(conv, nn.Conv2d)
            and conv.kernel_size == (k, k)
            and k % 2 == 1
            and conv.padding == (k // 2, k // 2)
            and conv.dilation == (1, 1)
        ):
            raise ConfigError(
                f"layer {name!r} cannot take RepVGG branches: needs a conv with an odd square "
                "kernel, padding k // 2 and dilation 1"
            )
        c_i, c_o, stride = conv.in_channels, conv.out_channels, conv.stride
        self.dense = nn.Conv2d(c_i, c_o, k, stride, k // 2, bias=False)
        with torch.no_grad():
            self.dense.weight.copy_(conv.weight)
        self.dense_bn = nn.BatchNorm2d(c_o)
        self.pointwise = nn.Conv2d(c_i, c_o, 1, stride, 0, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(c_o)
        self.identity_bn = nn.BatchNorm2d(c_o) if c_i == c_o and stride == (1, 1) else None
        avoid_onednn_strided_pointwise_bug(self)  # the strided 1×1 branch of narrow layers
        self.to(conv.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
        x: input of the original conv.
        """
        out = self.dense_bn(self.dense(x)) + self.pointwise_bn(self.pointwise(x))
        return out if self.identity_bn is None else out + self.identity_bn(x)

    def contracted(self) -> nn.Conv2d:
        """The one ``k×k`` conv (with bias) equal to the block in eval mode."""
        k = self.dense.kernel_size[0]
        with torch.no_grad():
            weight, bias = _fold_bn(self.dense.weight, self.dense_bn)
            point, point_bias = _fold_bn(self.pointwise.weight, self.pointwise_bn)
            weight = weight + F.pad(point, [k // 2] * 4)
            bias = bias + point_bias
            if self.identity_bn is not None:
                eye = torch.zeros_like(self.dense.weight)
                eye[torch.arange(eye.shape[0]), torch.arange(eye.shape[0]), k // 2, k // 2] = 1
                eye, eye_bias = _fold_bn(eye, self.identity_bn)
                weight, bias = weight + eye, bias + eye_bias
            merged = nn.Conv2d(
                self.dense.in_channels, self.dense.out_channels, k, self.dense.stride, k // 2
            ).to(weight.device)
            merged.weight.copy_(weight)
            merged.bias.copy_(bias)
        return merged


class ExpandConv(nn.Module):
    """ExpandNet-CL (Guo et al. 2020): a ``k×k`` conv as ``1×1 → k×k → 1×1``, linear, the
    channels expanded ``expansion`` times in between.

    Attributes:
        expand: ``1×1``, ``c_i → E·c_i``, no bias.
        spatial: ``k×k``, ``E·c_i → E·c_o``, no bias, the original stride, padding, dilation.
        project: ``1×1``, ``E·c_o → c_o``, with the original's bias if it had one.
    """

    def __init__(self, conv: nn.Conv2d, expansion: int = 4, name: str = "layer") -> None:
        """Args:
        conv: the conv to expand (groups 1, zero padding).
        expansion: E >= 1 (ExpandNet uses 4).
        name: its name in the model, for messages.
        """
        super().__init__()
        _check_layer(conv, name)
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError(f"layer {name!r} cannot be expanded: ExpandNet-CL expands convs")
        check_range("ExpandNet expansion", expansion, 1, integer=True)
        c_i, c_o = conv.in_channels, conv.out_channels
        self.expand = nn.Conv2d(c_i, expansion * c_i, 1, bias=False)
        self.spatial = nn.Conv2d(
            expansion * c_i,
            expansion * c_o,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=False,
        )
        self.project = nn.Conv2d(expansion * c_o, c_o, 1, bias=conv.bias is not None)
        self.to(conv.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
        x: input of the original conv.
        """
        return self.project(self.spatial(self.expand(x)))

    def contracted(self) -> nn.Conv2d:
        """The one conv equal to the three: ``W[o,i] = Σ_{b,a} W3[o,b] W2[b,a] W1[a,i]``."""
        s = self.spatial
        with torch.no_grad():
            weight = torch.einsum(
                "ob,bahw,ai->oihw",
                self.project.weight[:, :, 0, 0],
                s.weight,
                self.expand.weight[:, :, 0, 0],
            )
            merged = nn.Conv2d(
                self.expand.in_channels,
                self.project.out_channels,
                s.kernel_size,
                s.stride,
                s.padding,
                s.dilation,
                bias=self.project.bias is not None,
            ).to(weight.device)
            merged.weight.copy_(weight)
            if self.project.bias is not None:
                merged.bias.copy_(self.project.bias)
        return merged


# --------------------------------------------------------------------------------------------
# Choosing layers, replacing them, contracting them
# --------------------------------------------------------------------------------------------
def _final_layers(model: nn.Module) -> set[int]:
    """Ids of each head's last conv / linear layer (the "final layer" of §3.1)."""
    finals: set[int] = set()
    for head in getattr(model, "heads", {}).values():
        layers = [m for m in head.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        if layers:
            finals.add(id(layers[-1]))
    return finals


def select_layers(model: nn.Module, which: str | Iterable[str]) -> list[str]:
    """Names of the layers a selection picks, in model order.

    Args:
        model: a multi-task model (:mod:`mtlrepro.models`).
        which: one of :data:`SELECTORS`, or the layers' names (``model.named_modules()``).
    """
    modules = dict(model.named_modules())
    if not isinstance(which, str):
        names = list(which)
        for name in names:
            if name not in modules:
                raise ConfigError(f"model has no layer {name!r}")
            _check_layer(modules[name], name)
        return names
    check_choice("layer selection", which, SELECTORS)
    layers = {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)}
    if which == "shared":
        shared = {id(p) for p in model.shared_parameters()}
        return [n for n, m in layers.items() if id(m.weight) in shared]
    if which == "all_but_last":
        finals = _final_layers(model)
        return [n for n, m in layers.items() if id(m) not in finals]
    return [
        f"{n}.conv1"
        for n, m in modules.items()
        if type(m).__name__ == "Bottleneck" and isinstance(getattr(m, "conv1", None), nn.Conv2d)
    ]


def _replace(
    model: nn.Module, names: Sequence[str], build: Callable[[nn.Module, str], nn.Module]
) -> None:
    """Replace each named sub-module ``m`` by ``build(m, name)``, in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, build(parent.get_submodule(child), name))


def factorise(
    model: nn.Module,
    which: str | Iterable[str],
    tasks: Sequence[str],
    *,
    variant: str = "fac",
    rank: int | None = None,
    init: str = "layer",
) -> list[str]:
    """Replace the chosen conv / linear layers by :class:`FactorisedLayer` s, in place.

    Args:
        model: the model.
        which: one of :data:`SELECTORS` or layer names.
        tasks: the task names (one diagonal each).
        variant: one of :data:`VARIANTS`.
        rank: r of every layer (``None``: each layer's ``min(m, n)``).
        init: one of :data:`INITS`.

    Returns:
        The names of the factorised layers.
    """
    names = select_layers(model, which)
    if not names:
        raise ConfigError(f"layer selection {which!r} picks no layer of this model")
    _replace(
        model,
        names,
        lambda layer, name: FactorisedLayer(
            layer, tasks, variant=variant, rank=rank, init=init, name=name
        ),
    )
    return names


def overparameterise(
    model: nn.Module,
    method: str,
    which: str | Iterable[str],
    tasks: Sequence[str],
    **options: Any,
) -> list[str]:
    """Over-parameterise the chosen layers with one of Table 1's :data:`METHODS`, in place.

    Args:
        model: the model.
        method: ``factorisation`` (:func:`factorise`, ``options`` are its keywords),
            ``repvgg`` (:class:`RepVGGConv`) or ``expandnet`` (:class:`ExpandConv`; option
            ``expansion``).
        which: one of :data:`SELECTORS` or layer names.
        tasks: the task names.
        **options: the method's options.

    Returns:
        The names of the replaced layers.
    """
    check_choice("over-parameterisation", method, METHODS)
    if method == "factorisation":
        return factorise(model, which, tasks, **options)
    names = select_layers(model, which)
    if method == "repvgg":
        if options:
            raise ConfigError(f"repvgg takes no options; got {sorted(options)}")
        _replace(model, names, lambda conv, name: RepVGGConv(conv, name))
    else:
        unknown = sorted(set(options) - {"expansion"})
        if unknown:
            raise ConfigError(f"expandnet takes the option 'expansion' only; got {unknown}")
        _replace(model, names, lambda conv, name: ExpandConv(conv, name=name, **options))
    return names


OVERPARAMETERISED = (FactorisedLayer, RepVGGConv, ExpandConv)
"""The over-parameterised layer types :func:`contract` collapses."""


def overparameterised_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> layer of every over-parameterised layer of ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, OVERPARAMETERISED)}


def contract(model: nn.Module) -> nn.Module:
    """Replace every over-parameterised layer by its plain layer, in place: the network then
    has the un-factorised architecture's parameters and FLOPs (RepVGG adds a bias per layer).
    Outputs are unchanged (RepVGG: in eval mode, where its BNs are affine).

    Args:
        model: a model with over-parameterised layers.

    Returns:
        ``model``.
    """
    _replace(model, list(overparameterised_layers(model)), lambda layer, _name: layer.contracted())
    return model


def composition_macs(model: nn.Module) -> int:
    """Multiply-accumulates a factorised model spends composing its weights per forward pass
    (beside the convolutions, which equal the contracted model's)."""
    return sum(
        layer.composition_macs() for layer in model.modules() if isinstance(layer, FactorisedLayer)
    )


# --------------------------------------------------------------------------------------------
# Alg. 1 and the Frobenius decay, through the training loop's hooks
# --------------------------------------------------------------------------------------------
class OverparamTraining(Hooks):
    """Paper C's training through :func:`~mtlrepro.train.fit`'s seams (module doc, "Choices").

    * ``iterative=True`` (Alg. 1): every task's own factors (:meth:`FactorisedLayer.task_factors`)
      leave the shared optimiser (:meth:`excluded_parameters`) and are updated in
      :meth:`before_step` with the task's loss on a small subset; the loop's step then trains
      the rest on ``Σ_i α_i L_i`` with them fixed.
    * Frobenius decay on the factors each phase trains (:meth:`after_backward` for step 2).

    Args:
        tasks: task name -> :class:`~mtlrepro.tasks.Task` (the per-sample losses ``L_j``).
        train_set: the training split (the step-1 subset is drawn from it).
        lr: the initial lr of the task optimisers (then the shared optimiser's, per epoch).
        iterative: run Alg. 1 (``False``: the ``fac_noiter`` setting).
        frobenius_decay: the decay coefficient (paper: 1e-4).
        subset_fraction: share of the training set in step 1's subset (paper: ~3 %).
        subset_batch_size: samples per step-1 update.
        seed: seed of the subset and its order.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        train_set: Dataset,
        *,
        lr: float,
        iterative: bool = True,
        frobenius_decay: float = FROBENIUS_DECAY,
        subset_fraction: float = 0.03,
        subset_batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        check_range("frobenius_decay", frobenius_decay, 0.0)
        check_range("subset_fraction", subset_fraction, 0.0, 1.0, low_inclusive=False)
        check_range("subset_batch_size", subset_batch_size, 1, integer=True)
        check_range("lr", lr, 0.0, low_inclusive=False)
        self.tasks = dict(tasks)
        self.train_set = train_set
        self.lr = lr
        self.iterative = iterative
        self.frobenius_decay = frobenius_decay
        self.subset_batch_size = subset_batch_size
        size = max(subset_batch_size, round(subset_fraction * len(train_set)))
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        self.subset = order[: min(size, len(train_set))]
        self._model_id: int | None = None
        self._layers: list[FactorisedLayer] = []
        self._optimizers: dict[str, torch.optim.Adam] = {}
        self._pending: dict[str, Any] | None = None

    def _setup(self, model: nn.Module) -> None:
        """Find the factorised layers, freeze the task factors for step 2, build the task
        optimisers (once per model)."""
        if self._model_id == id(model):
            return
        self._model_id = id(model)
        self._layers = [m for m in model.modules() if isinstance(m, FactorisedLayer)]
        if not self._layers:
            raise ConfigError("OverparamTraining: the model has no factorised layer")
        unknown = sorted({t for layer in self._layers for t in layer.tasks} - set(self.tasks))
        if unknown:
            raise ConfigError(f"factorised layers name tasks {unknown} the training lacks")
        self._optimizers = {}
        if not self.iterative:
            return
        for task in self.tasks:
            params = [p for p, _ in self._task_factors(task)]
            for param in params:
                param.requires_grad_(False)
            if params:
                self._optimizers[task] = torch.optim.Adam(params, lr=self.lr, weight_decay=0.0)
        if self._pending is not None:
            for task, state in self._pending.items():
                self._optimizers[task].load_state_dict(state)
            self._pending = None

    def _task_factors(self, task: str) -> list[tuple[nn.Parameter, Tensor | None]]:
        return [
            pair
            for layer in self._layers
            if task in layer.tasks
            for pair in layer.task_factors(task)
        ]

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The task factors (Alg. 1 updates them in step 1, never in step 2)."""
        self._setup(model)
        if not self.iterative:
            return []
        unique = {id(p): p for task in self.tasks for p, _ in self._task_factors(task)}
        return list(unique.values())

    def _subset_batch(self, step: int, device: torch.device, offset: int) -> dict[str, Tensor]:
        """Step-1 batch ``offset`` of ``step``: the next samples of the subset, cycling."""
        start = ((step - 1) * len(self.tasks) + offset) * self.subset_batch_size
        positions = torch.arange(start, start + self.subset_batch_size) % len(self.subset)
        batch = next(iterate_batches(self.train_set, [self.subset[positions]]))
        return {key: value.to(device) for key, value in batch.items()}

    def before_step(self, model: nn.Module, batch: Mapping[str, Tensor], step: int) -> None:
        """Alg. 1, step 1: for each task j in order, one update of its own factors by ``L_j``
        (plus the Frobenius decay), on the subset."""
        self._setup(model)
        if not self.iterative:
            return
        device = next(model.parameters()).device
        statistics = [b.detach().clone() for b in model.buffers()]
        for offset, (task, optimizer) in enumerate(self._optimizers.items()):
            pairs = self._task_factors(task)
            params = [p for p, _ in pairs]
            for param in params:
                param.requires_grad_(True)
            sub = self._subset_batch(step, device, offset)
            loss = self.tasks[task].loss(model(sub["image"])[task], sub[task]).mean()
            grads = torch.autograd.grad(loss, params)
            decay = self._decay_gradients(set(map(id, params)))
            for (param, mask), grad in zip(pairs, grads, strict=True):
                if id(param) in decay:
                    grad = grad + decay[id(param)]
                param.grad = grad if mask is None else grad * mask
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for param in params:
                param.requires_grad_(False)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), statistics, strict=True):
                buffer.copy_(saved)

    def _decay_gradients(self, wanted: set[int]) -> dict[int, Tensor]:
        """``frobenius_decay · ∇½‖W‖²`` for the parameters (by id) in ``wanted``."""
        if self.frobenius_decay == 0:
            return {}
        out: dict[int, Tensor] = {}
        for layer in self._layers:
            for param, grad in frobenius_decay_gradients(layer).items():
                if id(param) in wanted:
                    out[id(param)] = out.get(id(param), 0) + self.frobenius_decay * grad
        return out

    def after_backward(self, model: nn.Module) -> None:
        """Step 2: the Frobenius decay on the factors the shared step trains."""
        trained = {
            id(p): p
            for layer in self._layers
            for p in (layer.U, layer.V, *layer.diagonals.values())
            if p.requires_grad
        }
        for key, grad in self._decay_gradients(set(trained)).items():
            param = trained[key]
            param.grad = grad.clone() if param.grad is None else param.grad + grad

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        """The task optimisers follow the shared optimiser's lr schedule."""
        lr = trainer_state.optimizer.param_groups[0]["lr"]
        for optimizer in self._optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        """The task optimisers' states."""
        return {"optimizers": {t: o.state_dict() for t, o in self._optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (applied when the model is first seen).

        Args:
            state: a previous :meth:`state_dict`.
        """
        self._pending = dict(state.get("optimizers", {})) or None
        if self._pending is not None and self._optimizers:
            for task, opt_state in self._pending.items():
                self._optimizers[task].load_state_dict(opt_state)
            self._pending = None


def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of an over-parameterised model: its conv and
    linear layers (RepVGG and ExpandNet branches are plain convs), each factorised layer's
    convolution with its composed weight, and the compositions (:func:`composition_macs`).

    Args:
        model: the model (not changed).
        input_shape: the input's shape, batch included.
    """
    twin = copy.deepcopy(model)
    names = [n for n, m in twin.named_modules() if isinstance(m, FactorisedLayer)]
    _replace(twin, names, lambda layer, _name: layer.contracted())
    return conv_flops(twin, input_shape) + composition_macs(model)
