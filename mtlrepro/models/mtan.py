"""MTAN: a shared SegNet (the global network) with per-task soft-attention modules.

Reference: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
§3.1-3.2 (global network, task-specific attention modules) and ``model_segnet_mtan.py`` in
github.com/lorenmt/mtan, whose structure this follows.

Stage ``s`` of the shared SegNet gives ``u`` (output of its first conv block) and ``p`` (its
output).  Every task keeps its own features, refined stage by stage (§3.2):

* encoder stage ``s``: mask ``a = h(g([u; t]))`` (``t``: the task's features from stage
  ``s - 1``; stage 0 reads ``u`` alone), ``a`` a sigmoid of two 1x1 conv-BN layers
  (:class:`AttentionMask`); then ``t = pool(f(a * p))`` with ``f`` a 3x3 conv block shared by
  all tasks, mapping to the next stage's width (the last keeps ``w_{S-1}``);
* decoder stage ``s`` (deepest first; ``v`` the unpooled input of the shared decoder stage, ``q``
  its output): ``t' = f'(upsample(t))`` (bilinear, ``align_corners``, then a shared 3x3 conv
  block, in the code's order), ``a = h(g([v; t']))``, ``t = a * q``.

Dense heads read the task's last decoder features, classification heads its encoder output
(the attended bottleneck).  With every mask equal to 1 the dense tasks see the shared
decoder's output, i.e. the model is the shared-bottom ``segnet`` model.

Choices that differ from MTAN's code, as in :mod:`mtlrepro.models.segnet`: no conv bias before
BN (also in the attention layers), heads with a BN, pooling with ``ceil_mode`` and upsampling
to the exact pre-pool size (any input size), uniform ``convs_per_stage`` by default (MTAN's is
``(2, 2, 3, 3, 3)``).  A stage with one conv has ``u = p``.  Extensions (MTAN's SegNet has
dense tasks only): classification heads read the attended bottleneck, and decoder attention
exists only for dense tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrepro.models.multitask import MODELS, TaskBranchModel, TaskModuleDict, segnet_heads
from mtlrepro.models.segnet import (
    ConvBNReLU,
    PoolRecord,
    SegNet,
    init_mtan,
    pool_stage,
    segnet_config,
    unpool_stage,
)
from mtlrepro.tasks import TaskSpec


class AttentionMask(nn.Sequential):
    """conv1x1 -> BN -> ReLU -> conv1x1 -> BN -> sigmoid: a soft mask in (0, 1) (MTAN §3.2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Args:
        in_channels: channels of the concatenated input.
        out_channels: channels of the mask (and of the hidden layer, as in MTAN).
        """
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Sigmoid(),
        )


def _first_and_rest(stage: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(u, p)``: the output of a stage's first block and of the whole stage."""
    u = stage[0](x)
    p = u
    for block in list(stage)[1:]:
        p = block(p)
    return u, p


class MTANSegNet(nn.Module):
    """The shared SegNet plus the attention networks (layout in the module docstring).

    Attributes:
        shared: the global :class:`~mtlrepro.models.segnet.SegNet`.
        encoder_attention: task name -> one :class:`AttentionMask` per stage.
        encoder_blocks: the shared 3x3 conv block ``f`` after each encoder stage's mask.
        decoder_attention: dense task name -> one :class:`AttentionMask` per stage (index =
            the mirrored encoder stage), or ``None`` without dense tasks.
        decoder_blocks: the shared 3x3 conv block ``f'`` of each decoder stage, or ``None``.
        dense_tasks: names of the dense tasks, in task order.
        bottleneck_channels: channels of each task's encoder output.
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
        widths: stage widths (already scaled).
        convs_per_stage: convolutions in each stage.
        task_specs: task name -> spec, in task order (at least one).
        in_channels: channels of the input image.
        """
        super().__init__()
        self.dense_tasks = tuple(name for name, spec in task_specs.items() if spec.dense)
        self.shared = SegNet(widths, convs_per_stage, in_channels, decoder=bool(self.dense_tasks))
        stages = range(len(widths))
        # encoder: mask s reads [u_s; t] (2 w_s channels; w_0 at stage 0), f_s maps w_s -> w_{s+1}
        mask_ins = [w if s == 0 else 2 * w for s, w in enumerate(widths)]
        self.encoder_attention = TaskModuleDict(
            {
                name: nn.ModuleList(AttentionMask(mask_ins[s], widths[s]) for s in stages)
                for name in task_specs
            }
        )
        nexts = (*widths[1:], widths[-1])
        self.encoder_blocks = nn.ModuleList(
            ConvBNReLU(w, n) for w, n in zip(widths, nexts, strict=True)
        )
        self.decoder_attention: TaskModuleDict | None = None
        self.decoder_blocks: nn.ModuleList | None = None
        if self.dense_tasks:
            # decoder stage s maps w_s -> o_s (o_0 = w_0); the task features arriving there
            # have w_s channels; f'_s maps them to o_s, mask s reads [v_s; t'] (w_s + o_s)
            outs = (widths[0], *widths[:-1])
            self.decoder_attention = TaskModuleDict(
                {
                    name: nn.ModuleList(AttentionMask(widths[s] + outs[s], outs[s]) for s in stages)
                    for name in self.dense_tasks
                }
            )
            self.decoder_blocks = nn.ModuleList(
                ConvBNReLU(w, o) for w, o in zip(widths, outs, strict=True)
            )
        attention = [self.encoder_attention, self.encoder_blocks]
        attention += [self.decoder_attention, self.decoder_blocks] if self.dense_tasks else []
        for module in attention:
            init_mtan(module)
        self.bottleneck_channels = widths[-1]
        self.out_channels = widths[0]

    def encode(self, x: Tensor) -> tuple[dict[str, Tensor], tuple[Tensor, list[PoolRecord]]]:
        """Run the shared encoder and every task's encoder attention.

        Args:
            x: normalised images, shape (B, C, H, W).

        Returns:
            Task name -> attended bottleneck (B, ``bottleneck_channels``, h, w), and the shared
            bottleneck with the shared pooling records (for :meth:`decode`).
        """
        tasks: dict[str, Tensor] = {}
        pools: list[PoolRecord] = []
        for s, stage in enumerate(self.shared.encoder):
            u, p = _first_and_rest(stage, x)
            x, record = pool_stage(p)
            pools.append(record)
            for name, masks in self.encoder_attention.items():
                mask = masks[s](u if s == 0 else torch.cat([u, tasks[name]], dim=1))
                attended = self.encoder_blocks[s](mask * p)
                tasks[name] = F.max_pool2d(attended, 2, 2, ceil_mode=True)
        return tasks, (x, pools)

    def decode(
        self, bottlenecks: Mapping[str, Tensor], state: tuple[Tensor, list[PoolRecord]]
    ) -> dict[str, Tensor]:
        """Run the shared decoder and every dense task's decoder attention.

        Args:
            bottlenecks: :meth:`encode`'s task features.
            state: :meth:`encode`'s shared bottleneck and pooling records.

        Returns:
            Dense task name -> features (B, ``out_channels``, H, W).
        """
        if self.decoder_attention is None or self.decoder_blocks is None:
            raise RuntimeError("this MTAN has no dense task, hence no decoder")
        x, pools = state
        tasks = {name: bottlenecks[name] for name in self.dense_tasks}
        for s in reversed(range(len(pools))):
            unpooled = unpool_stage(x, pools[s])
            x = self.shared.decoder[s](unpooled)
            size = pools[s][1]
            for name in self.dense_tasks:
                up = F.interpolate(tasks[name], size=size, mode="bilinear", align_corners=True)
                mask = self.decoder_attention[name][s](
                    torch.cat([unpooled, self.decoder_blocks[s](up)], dim=1)
                )
                tasks[name] = mask * x
        return tasks

    def shared_parameters(self) -> list[nn.Parameter]:
        """The global SegNet's and the shared conv blocks' parameters."""
        blocks = [self.encoder_blocks, self.decoder_blocks]
        return [*self.shared.parameters()] + [
            p for module in blocks if module is not None for p in module.parameters()
        ]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters of one task's attention masks.

        Args:
            task: a task name of this network.
        """
        params = list(self.encoder_attention[task].parameters())
        if self.decoder_attention is not None and task in self.dense_tasks:
            params += self.decoder_attention[task].parameters()
        return params


@MODELS.register("mtan")
def mtan(
    task_specs: dict[str, TaskSpec], profile: str | None = None, **kwargs: Any
) -> TaskBranchModel:
    """MTAN on the ``segnet`` model's SegNet, with its heads and input normalisation.

    Args:
        task_specs: task name -> spec.
        profile: the sizes' preset (:data:`~mtlrepro.models.segnet.SEGNET_PRESETS`), or
            ``None`` for the :class:`~mtlrepro.models.segnet.SegNetConfig` defaults.
        **kwargs: :class:`~mtlrepro.models.segnet.SegNetConfig` fields overriding them.
    """
    config = segnet_config(profile, **kwargs)
    backbone = MTANSegNet(
        config.stage_widths, config.stage_convs, task_specs, in_channels=len(config.mean)
    )
    heads = segnet_heads(
        task_specs, backbone.out_channels, backbone.bottleneck_channels, config.classifier_hidden
    )
    return TaskBranchModel(
        backbone, heads, task_specs, config.mean, config.std, config.channels_last, config
    )
