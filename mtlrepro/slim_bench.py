"""The slimming benchmark of ``make bench`` (``slimming.csv``, issue 14): paper B's compact
network and its inference form against Torch-Pruning's pruned network.

:func:`bench_slimming`: torchvision's ResNet-18 and the scene SegNet with 50 % and 90 % of
their input-channel groups zeroed (:func:`zero_random_groups`), slimmed
(:func:`mtlrepro.compress.slim`) and then exported (:func:`mtlrepro.inference.export`), beside
Torch-Pruning's pruned network (:func:`torch_pruning_slim`, the ``bench`` extra), at batch 1
and 16 on one and two threads: latency speed-up over the dense network ÷ FLOPs reduction
(``ratio``) and ÷ Torch-Pruning's speed-up (``vs_torch_pruning``); ``form`` is the form
``export`` chose (memory format, oneDNN fusion), ``merged_branches`` the groups of parallel
task-head convolutions it runs merged, ``matmul_outputs`` the output convolutions it runs as a
matrix product into the standard layout.  Each round times every variant several times in a row
(about :data:`mtlrepro.inference.ROUND_SECONDS` of the slimmed one): a single 2-ms call is
within the noise of a shared 2-core machine.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from mtlrepro.compress import conv_flops, parameter_count, slim
from mtlrepro.data import get_dataset
from mtlrepro.inference import ROUND_SECONDS, export, interleaved_medians
from mtlrepro.models import create_model


def zero_random_groups(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero a random ``fraction`` of the input-channel groups ``W[:, c]`` of every conv that
    does not read the image (paper B's groups; what its group lasso drives to 0), in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d) and layer.in_channels > 3:
                zero = torch.rand(layer.in_channels, generator=generator) < fraction
                layer.weight[:, zero] = 0
    return model.eval()


def torch_pruning_slim(dense: nn.Module, example: Tensor) -> nn.Module:
    """Torch-Pruning's version of :func:`mtlrepro.compress.slim`: on a copy of ``dense``,
    Torch-Pruning's dependency graph (DepGraph) finds every group of coupled channels, and
    removes the channels that every convolution or linear layer reading them reads with an
    all-zero input group (keeping the first when none is read, as ``slim`` does).

    Args:
        dense: a network in eval mode, with zeroed input groups.
        example: an input batch to trace it on.

    Raises:
        ImportError: without the ``bench`` extra (``pip install -e '.[bench]'``).
        RuntimeError: the pruned network no longer runs on ``example`` (the dependency graph
            misses a coupling, e.g. SegNet's max-unpooling indices, which tie each decoder
            stage's channels to an encoder stage's).
    """
    import torch_pruning as tp

    model = copy.deepcopy(dense).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    plans = []
    for group in graph.get_all_groups(root_module_types=(nn.Conv2d,)):
        readers = [item for item in group
                   if isinstance(item.dep.target.module, (nn.Conv2d, nn.Linear))
                   and graph.is_in_channel_pruning_fn(item.dep.handler)]
        if not readers:  # the network's output: nothing reads it
            continue
        root = group[0]
        used = set()
        for item in readers:
            weight = item.dep.target.module.weight
            used.update(r for i, r in zip(item.idxs, item.root_idxs, strict=True)
                        if weight[:, i].any())
        channels = sorted(set(root.root_idxs))
        remove = [c for c in channels if c not in used] if used else channels[1:]
        if remove:
            plans.append((root.dep.target.module, root.dep.handler, remove))
    for module, handler, remove in plans:
        graph.get_pruning_group(module, handler, idxs=remove).prune()
    try:
        with torch.no_grad():
            model(example)
    except RuntimeError as err:
        raise RuntimeError(f"Torch-Pruning's pruned network fails: {err}") from err
    return model


def slimming_models(
    profile: str, tasks: Sequence[str]
) -> list[tuple[str, Callable[[], nn.Module], tuple[int, int]]]:
    """(name, builder, image size) of the networks :func:`bench_slimming` prunes: a
    torchvision ResNet-18 and the scene SegNet of ``profile`` with ``tasks``' heads."""
    specs = get_dataset("scenes", "val", profile, tasks=tuple(tasks)).task_specs
    size = (48, 64) if profile == "cpu" else (24, 32)
    return [
        ("resnet18 (torchvision, 10 classes)", lambda: resnet18(num_classes=10), (64, 64)),
        (f"segnet ({profile} profile, {len(specs)} scene tasks)",
         lambda: create_model("segnet", specs, profile=profile), size),
    ]


def bench_slimming(fractions: Sequence[float], batches: Sequence[int],
                   threads: Sequence[int], profile: str, tasks: Sequence[str], rounds: int,
                   export_rounds: int) -> pd.DataFrame:
    """Paper B's compact network at inference against Torch-Pruning's (see the module doc).

    Args:
        fractions: fractions of zeroed input-channel groups.
        batches: batch sizes.
        threads: torch thread counts.
        profile: the profile of the SegNet (``smoke`` or ``cpu``).
        tasks: the SegNet's scene tasks.
        rounds: interleaved timing rounds.
        export_rounds: ``export``'s timed rounds for its choice of form.

    Per network, fraction of zeroed input-channel groups, batch size and thread count, the
    dense network, :func:`mtlrepro.compress.slim` of it, the slimmed network's
    :func:`mtlrepro.inference.export` (BatchNorm folded, the fastest form) and
    :func:`torch_pruning_slim` are timed interleaved.  One row per variant: ``speedup`` =
    dense / variant latency, ``flops_reduction`` = dense / variant multiply-accumulates,
    ``ratio`` = speed-up ÷ FLOPs reduction (1: the latency falls as the FLOPs do) and
    ``vs_torch_pruning`` = speed-up ÷ Torch-Pruning's (NaN, with a ``status``, when it is not
    installed)."""
    previous_threads = torch.get_num_threads()
    rows = []
    try:
        for name, build, (height, width) in slimming_models(profile, tasks):
            for fraction in fractions:
                torch.manual_seed(0)
                dense = zero_random_groups(build(), fraction)
                shape = (1, 3, height, width)
                variants = {"slim": slim(dense).eval()}
                status = "ok"
                try:
                    variants["torch-pruning"] = torch_pruning_slim(dense, torch.rand(shape))
                except ImportError:
                    status = "torch-pruning not installed: pip install -e '.[bench]'"
                except RuntimeError as err:
                    status = str(err).splitlines()[0]
                dense_flops = conv_flops(dense, shape)
                flops = {k: conv_flops(net, shape) for k, net in variants.items()}
                for count, batch in itertools.product(threads, batches):
                    torch.set_num_threads(count)
                    images = torch.rand(batch, 3, height, width)
                    exported = export(variants["slim"], images, rounds=export_rounds)
                    # the slimmed network first: a timing round lasts ROUND_SECONDS of it
                    nets = {**variants, "dense": dense, "slim + export": exported}
                    with torch.inference_mode():
                        calls = {k: (lambda n=n, x=images: n(x)) for k, n in nets.items()}
                        times = interleaved_medians(calls, rounds,
                                                    min_round_seconds=ROUND_SECONDS)
                    speedups = {k: times["dense"] / times[k] for k in nets if k != "dense"}
                    reference = speedups.get("torch-pruning", math.nan)
                    for variant in ("slim", "slim + export", "torch-pruning"):
                        if variant not in speedups:
                            continue
                        net = variants.get(variant, variants["slim"])
                        reduction = dense_flops / flops.get(variant, flops["slim"])
                        rows.append({
                            "model": name, "zero_groups": fraction, "batch_size": batch,
                            "torch_threads": count, "variant": variant,
                            "form": exported.form
                            if variant == "slim + export" else "contiguous",
                            "merged_branches": exported.merged
                            if variant == "slim + export" else 0,
                            "matmul_outputs": exported.matmul_outputs
                            if variant == "slim + export" else 0,
                            "parameters": parameter_count(net),
                            "dense_parameters": parameter_count(dense),
                            "flops_reduction": reduction, "dense_ms": times["dense"] * 1e3,
                            "variant_ms": times[variant] * 1e3, "speedup": speedups[variant],
                            "ratio": speedups[variant] / reduction,
                            "vs_torch_pruning": speedups[variant] / reference,
                            "rounds": rounds, "status": status,
                        })
    finally:
        torch.set_num_threads(previous_threads)
    return pd.DataFrame(rows)
