"""Cross-stitch SegNet: one SegNet column per task, linked by cross-stitch units.

References: Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task
Learning", CVPR 2016 (the unit, §3 Eq. 1; the initialisation, §4); its SegNet form is the
cross-stitch baseline of MTAN (Liu, Johns & Davison, CVPR 2019, §4.1, ``model_segnet_cross.py``
in github.com/lorenmt/mtan).

Layout (``S`` stages, ``T`` tasks of which ``D`` are dense): every task has a full
:class:`~mtlrepro.models.segnet.SegNet` column with the shared-bottom model's widths (dense
tasks with a decoder, classification tasks encoder only).  A unit follows the pooling of every
encoder stage (``S`` units over all ``T`` columns; the last one mixes the bottlenecks) and
every decoder stage but the last (``S - 1`` units over the ``D`` dense columns), where MTAN's
code puts them.  Each column unpools with its own pooling indices; heads read their own
column, as the shared-bottom model's heads read its backbone.

A unit is one learnable ``n x n`` matrix ``alpha`` of scalars, ``x~_i = sum_j alpha_ij x_j``
(Eq. 1): one weight per pair of tasks and unit, not per channel.  MTAN's code keeps only one
weight per source task and unit (every column receives the same mixture) and starts them at 1;
here ``alpha`` is the full matrix of Eq. 1, started near the identity, diagonal 0.9 and
off-diagonal ``0.1 / (n - 1)`` (rows sum to 1: §4's convex initialisation, with its
``(alpha_S, alpha_D) = (0.9, 0.1)`` for two tasks; ``[[1.0]]`` for one task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlrepro.models.multitask import MODELS, TaskBranchModel, TaskModuleDict, segnet_heads
from mtlrepro.models.segnet import PoolRecord, SegNet, pool_stage, segnet_config, unpool_stage
from mtlrepro.tasks import TaskSpec

SAME_TASK_ALPHA = 0.9
"""Initial diagonal of a cross-stitch unit with two or more tasks (Misra et al., §4)."""


def near_identity_alpha(n: int, same: float = SAME_TASK_ALPHA) -> Tensor:
    """Initial ``n x n`` unit: ``same`` on the diagonal, ``(1 - same) / (n - 1)`` elsewhere.

    Args:
        n: number of columns the unit mixes (>= 1); one column gives ``[[1.0]]``.
        same: diagonal for ``n >= 2``.
    """
    if n == 1:
        return torch.ones(1, 1)
    alpha = torch.full((n, n), (1.0 - same) / (n - 1))
    alpha.fill_diagonal_(same)
    return alpha


def stitch(alpha: Tensor, xs: Sequence[Tensor]) -> list[Tensor]:
    """Apply one cross-stitch unit: ``out[i] = sum_j alpha[i, j] * xs[j]`` (Misra et al., Eq. 1).

    Args:
        alpha: the unit, shape ``(n, n)``.
        xs: ``n`` feature maps of equal shape, one per column.
    """
    return [sum(alpha[i, j] * x for j, x in enumerate(xs)) for i in range(len(xs))]


class CrossStitchSegNet(nn.Module):
    """One SegNet column per task with cross-stitch units (layout in the module docstring).

    Attributes:
        columns: task name -> :class:`~mtlrepro.models.segnet.SegNet` (a :class:`TaskModuleDict`).
        encoder_alpha: the ``S`` encoder units, shape ``(S, T, T)``.
        decoder_alpha: the ``S - 1`` decoder units, shape ``(S - 1, D, D)``, or ``None`` when
            there are none (no dense task, or one stage).
        dense_tasks: names of the dense tasks, in task order.
        bottleneck_channels: channels of each task's bottleneck.
        out_channels: channels of each dense task's features.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        convs_per_stage: tuple[int, ...],
        task_specs: Mapping[str, TaskSpec],
        in_channels: int = 3,
    ) -> None:
        """Args:
        widths: stage widths of every column (already scaled).
        convs_per_stage: convolutions in each stage.
        task_specs: task name -> spec, in column order (at least one).
        in_channels: channels of the input image.
        """
        super().__init__()
        self.columns = TaskModuleDict(
            {
                name: SegNet(widths, convs_per_stage, in_channels, decoder=spec.dense)
                for name, spec in task_specs.items()
            }
        )
        self.dense_tasks = tuple(name for name, spec in task_specs.items() if spec.dense)
        stages, tasks, dense = len(widths), len(task_specs), len(self.dense_tasks)
        self.encoder_alpha = nn.Parameter(near_identity_alpha(tasks).repeat(stages, 1, 1))
        self.decoder_alpha = (
            nn.Parameter(near_identity_alpha(dense).repeat(stages - 1, 1, 1))
            if dense and stages > 1
            else None
        )
        self.bottleneck_channels = widths[-1]
        self.out_channels = widths[0]

    def encode(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, list[PoolRecord]]]:
        """Run the encoders, stitching after every stage.

        Args:
            x: normalised images, shape (B, C, H, W), read by every column.

        Returns:
            Task name -> stitched bottleneck, and task name -> that column's pooling records.
        """
        names = list(self.columns)
        xs = [x] * len(names)
        pools: dict[str, list[PoolRecord]] = {name: [] for name in names}
        for s in range(len(self.encoder_alpha)):
            outs = []
            for name, column_input in zip(names, xs, strict=True):
                out, record = pool_stage(self.columns[name].encoder[s](column_input))
                pools[name].append(record)
                outs.append(out)
            xs = stitch(self.encoder_alpha[s], outs)
        return dict(zip(names, xs, strict=True)), pools

    def decode(
        self, bottlenecks: Mapping[str, Tensor], pools: Mapping[str, list[PoolRecord]]
    ) -> dict[str, Tensor]:
        """Run the dense columns' decoders, stitching after every stage but the last.

        Args:
            bottlenecks: :meth:`encode`'s stitched bottlenecks.
            pools: :meth:`encode`'s pooling records.

        Returns:
            Dense task name -> features (B, ``out_channels``, H, W).
        """
        xs = [bottlenecks[name] for name in self.dense_tasks]
        stages = len(self.encoder_alpha)
        for k, s in enumerate(reversed(range(stages))):
            if k > 0:
                xs = stitch(self.decoder_alpha[k - 1], xs)
            xs = [
                self.columns[name].decoder[s](unpool_stage(x, pools[name][s]))
                for name, x in zip(self.dense_tasks, xs, strict=True)
            ]
        return dict(zip(self.dense_tasks, xs, strict=True))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter: through the units, each task's output depends on every column."""
        return list(self.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """None: no backbone parameter serves one task only (see :meth:`shared_parameters`).

        Args:
            task: a task name of this network.
        """
        return []


@MODELS.register("cross_stitch")
def cross_stitch(
    task_specs: dict[str, TaskSpec], profile: str | None = None, **kwargs: Any
) -> TaskBranchModel:
    """Cross-stitch SegNet: one column per task with the ``segnet`` model's widths, heads and
    input normalisation.

    Args:
        task_specs: task name -> spec.
        profile: the sizes' preset (:data:`~mtlrepro.models.segnet.SEGNET_PRESETS`), or
            ``None`` for the :class:`~mtlrepro.models.segnet.SegNetConfig` defaults.
        **kwargs: :class:`~mtlrepro.models.segnet.SegNetConfig` fields overriding them.
    """
    config = segnet_config(profile, **kwargs)
    backbone = CrossStitchSegNet(
        config.stage_widths, config.stage_convs, task_specs, in_channels=len(config.mean)
    )
    heads = segnet_heads(
        task_specs, backbone.out_channels, backbone.bottleneck_channels, config.classifier_hidden
    )
    return TaskBranchModel(
        backbone, heads, task_specs, config.mean, config.std, config.channels_last, config
    )
