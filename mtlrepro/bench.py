"""Benchmarks: the shared training loop's overhead, the scenes generator's throughput, the
cost of the oneDNN work-around, PCGrad against torchjd and the slimmed network's inference form.

``python -m mtlrepro.bench [--out results/benchmarks] [--steps N] [--repeats R] [--quick]``
writes six CSV files (atomically) into ``--out``:

* ``train_loop.csv`` -- :func:`mtlrepro.train.fit` (progress bar on, ``"equal"`` balancer)
  against a bare hand-written PyTorch step (:func:`bare_step`) on a copy of the same model
  (same initial weights), the same batches in the same order and the same optimiser (Adam),
  interleaved step by step: a hook runs one bare step before each of ``fit``'s steps, so the
  two are timed within milliseconds of each other and a machine that slows down or speeds up
  slows both alike (timing whole loops one after the other let the ratio wander between 0.91
  and 1.09 from run to run).  A ``fit`` step is timed from the end of the bare step before it
  to the start of the next one (everything ``fit`` does per step: zero_grad, forward, loss,
  backward, Adam, logging, the progress bar); the first :data:`LOOP_WARMUP_STEPS` steps are
  left out.  Per repeat, the median step time of each; ``shared_step_ms`` and
  ``bare_step_ms`` are the medians over repeats, ``ratio`` the median of the repeats' ratios
  (target :data:`TARGET_RATIO`).  Two rows: ``clock="wall"`` (``time.perf_counter``) and
  ``clock="cpu"`` (``time.process_time``).  Torch runs on ``--threads`` threads (default 1:
  with two intra-op threads, any other busy process on a two-core machine stalls both loops
  by large, random factors).
* ``scenes_generator.csv`` -- :func:`mtlrepro.data.scenes.scenes_images_per_second` at
  64×64, median over repeats, with the target :data:`TARGET_IMAGES_PER_S`.
* ``onednn_routing.csv`` -- :func:`bench_onednn_routing`: a training step of paper A's smoke
  ResNet-18 (whose two 4-channel strided 1×1 shortcuts :mod:`mtlrepro.models.onednn` routes
  around a oneDNN heap overflow) with the routed layers against the library layers, each in
  its own process (the library layers abort on CPUs whose oneDNN takes the AVX2 kernel; the
  row then says so).  The cpu-profile networks have no such layer, so they pay nothing.

* ``pcgrad.csv`` -- :func:`bench_pcgrad`: PCGrad (Yu et al. 2020, Algorithm 1) against
  torchjd's ``PCGrad`` aggregator (the ``bench`` extra, ``pip install -e '.[bench]'``; the
  rows say so when it is missing), in the same process, interleaved rounds (the order
  alternates), medians over ``--repeats`` rounds: the aggregation alone
  (:func:`mtlrepro.balancing.pcgrad_combine`, Gram form) at T tasks × P parameters, and a
  full backward step of the SegNet of ``train_loop.csv`` on three scene tasks
  (:func:`mtlrepro.balancing.pcgrad_backward` vs torchjd's ``mtl_backward`` +
  ``jac_to_grad``); ``ratio`` = ours / torchjd (below 1: ours is faster).

* ``slimming.csv`` -- :func:`mtlrepro.slim_bench.bench_slimming`: paper B's slimmed network
  and its inference form against Torch-Pruning's pruned network (latency speed-up ÷ FLOPs
  reduction, ÷ Torch-Pruning's speed-up).

* ``threads.csv`` -- :func:`mtlrepro.thread_bench.bench_threads`: the training step of the cpu
  profile's networks with one or two torch threads (and OpenMP's passive wait), and as two
  processes of one thread side by side (the studies' independent runs), alone and beside one
  busy process, each measurement in its own processes: which setting keeps a step within 2×
  of its time alone when something else runs, losing at most 10 % alone.

Every file also records the settings and the torch thread count.  Timings vary from run to
run and machine to machine: these files describe one measurement, they are not reproducible
byte for byte.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from mtlrepro.balancing import create_balancer, pcgrad_backward, pcgrad_combine
from mtlrepro.config import check_choice, check_range
from mtlrepro.data import get_dataset
from mtlrepro.data.scenes import scenes_images_per_second
from mtlrepro.files import atomic_write_text
from mtlrepro.inference import interleaved_medians
from mtlrepro.models import count_parameters, create_model
from mtlrepro.models.backbones import create_backbone
from mtlrepro.models.onednn import SubsampledPointwiseConv2d
from mtlrepro.slim_bench import bench_slimming
from mtlrepro.tasks import Task, make_tasks
from mtlrepro.thread_bench import WORKLOADS, bench_threads
from mtlrepro.train import Hooks, TrainConfig, epoch_batches, fit

TARGET_RATIO = 1.03
"""The shared loop may take at most 3 % longer per step than the bare loop."""
LOOP_WARMUP_STEPS = 5
"""Steps of the loop benchmark left out of its timing (allocator, lazy initialisation)."""
TARGET_IMAGES_PER_S = 300.0
"""Generator target at 64×64: the ``cpu`` profile's 2,800 images in under about 10 s."""
BENCH_TASKS: tuple[str, ...] = ("segmentation", "depth", "normal")


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs.

    Attributes:
        steps: optimiser steps per timed run.
        repeats: timed runs of each loop (interleaved) and generator measurements.
        batch_size: samples per step.
        n_train: training images (``scenes``, ``smoke`` profile image size).
        widths: SegNet stage widths of the benchmarked model.
        generator_images: images per generator measurement.
        threads: ``torch.set_num_threads`` for the training-loop and PCGrad benchmarks.
        pcgrad_tasks: task counts T of the PCGrad aggregation.
        pcgrad_parameters: parameter counts P of the PCGrad aggregation.
        pcgrad_step_batch: samples of the PCGrad backward step.
        slim_fractions: fractions of zeroed input-channel groups of the slimming benchmark.
        slim_batches: its batch sizes.
        slim_threads: its torch thread counts.
        slim_profile: the profile of its SegNet (``smoke`` or ``cpu``).
        slim_rounds: interleaved timing rounds of the slimming benchmark (more than
            ``repeats``: its variants' latencies are a few ms, and the machine's noise moves a
            median of 7 rounds by several per cent).
        export_rounds: timed rounds of ``export``'s choice of form (its forms differ by 5-15 %
            at batch 16, within the spread of 7 rounds on a shared machine).
        thread_steps: timed steps per measurement of the thread benchmark.
        thread_rounds: its interleaved rounds.
        thread_workloads: its workloads (:data:`mtlrepro.thread_bench.WORKLOADS`).
    """

    steps: int = 300
    repeats: int = 7
    batch_size: int = 8
    n_train: int = 96
    widths: tuple[int, ...] = (16, 32, 64)
    generator_images: int = 128
    threads: int = 1
    pcgrad_tasks: tuple[int, ...] = (2, 3, 5)
    pcgrad_parameters: tuple[int, ...] = (10_000, 1_000_000)
    pcgrad_step_batch: int = 8
    slim_fractions: tuple[float, ...] = (0.5, 0.9)
    slim_batches: tuple[int, ...] = (1, 16)
    slim_threads: tuple[int, ...] = (1, 2)
    slim_profile: str = "cpu"
    slim_rounds: int = 15
    export_rounds: int = 15
    thread_steps: int = 5
    thread_rounds: int = 7
    thread_workloads: tuple[str, ...] = tuple(WORKLOADS)

    def __post_init__(self) -> None:
        """Check ranges (``ConfigError`` otherwise)."""
        for name in ("steps", "repeats", "batch_size", "n_train", "generator_images", "threads",
                     "pcgrad_step_batch", "thread_steps", "thread_rounds", "slim_rounds",
                     "export_rounds"):
            check_range(f"BenchSettings.{name}", getattr(self, name), 1, integer=True)
        for count in self.pcgrad_tasks:
            check_range("BenchSettings.pcgrad_tasks", count, 2, integer=True)
        for count in self.pcgrad_parameters:
            check_range("BenchSettings.pcgrad_parameters", count, 1, integer=True)
        for fraction in self.slim_fractions:
            check_range("BenchSettings.slim_fractions", fraction, 0.0, 1.0, low_inclusive=False,
                        high_inclusive=False)
        for batch in self.slim_batches:
            check_range("BenchSettings.slim_batches", batch, 1, integer=True)
        for threads in self.slim_threads:
            check_range("BenchSettings.slim_threads", threads, 1, integer=True)
        check_choice("BenchSettings.slim_profile", self.slim_profile, ("smoke", "cpu"))
        for workload in self.thread_workloads:
            check_choice("BenchSettings.thread_workloads", workload, tuple(WORKLOADS))


QUICK = BenchSettings(
    steps=6, repeats=1, batch_size=4, n_train=16, widths=(4, 8), generator_images=8,
    pcgrad_tasks=(2, 3), pcgrad_parameters=(1_000,), pcgrad_step_batch=2,
    slim_fractions=(0.5,), slim_batches=(2,), slim_threads=(1,), slim_profile="smoke",
    slim_rounds=1, export_rounds=1,
    thread_steps=1, thread_rounds=1, thread_workloads=(next(iter(WORKLOADS)),),
)
"""Seconds-long settings for the tests (the numbers mean little)."""


def bare_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tasks: Mapping[str, Task],
    batch: Mapping[str, Tensor],
) -> None:
    """The hand-written reference step: Adam on the plain sum of the tasks' mean losses.

    Args:
        model: the model to train (in place, in train mode).
        optimizer: its Adam.
        tasks: task name -> task.
        batch: the step's batch.
    """
    optimizer.zero_grad(set_to_none=True)
    preds = model(batch["image"])
    loss = sum(task.loss(preds[name], batch[name]).mean() for name, task in tasks.items())
    loss.backward()
    optimizer.step()


class _BareStepsBetween(Hooks):
    """Runs one bare step before each of ``fit``'s steps and times both (wall and CPU
    seconds); see the module doc."""

    def __init__(self, step: Callable[[int], None]) -> None:
        """Args:
        step: runs the bare loop's step ``k`` (0-based).
        """
        self.step = step
        self.fit: list[tuple[float, float]] = []
        self.bare: list[tuple[float, float]] = []
        self._end: tuple[float, float] | None = None

    def before_step(self, model: nn.Module, batch: Mapping[str, Tensor], step: int) -> None:
        """Close the timing of ``fit``'s previous step, then time one bare step."""
        start = time.perf_counter(), time.process_time()
        if self._end is not None:
            self.fit.append((start[0] - self._end[0], start[1] - self._end[1]))
        self.step(step - 1)
        self._end = time.perf_counter(), time.process_time()
        self.bare.append((self._end[0] - start[0], self._end[1] - start[1]))


def bench_train_loop(settings: BenchSettings) -> pd.DataFrame:
    """Time :func:`~mtlrepro.train.fit` against :func:`bare_step`, step by step (see the module
    doc).

    Args:
        settings: steps, repeats and sizes.

    Returns:
        Two rows (``clock`` wall and cpu): settings, ``shared_step_ms``, ``bare_step_ms``,
        ``ratio``, ``target``.
    """
    dataset = get_dataset("scenes", "train", "smoke", n_train=settings.n_train, tasks=BENCH_TASKS)
    tasks = make_tasks(dataset.task_specs)
    torch.manual_seed(0)
    initial = create_model("segnet", dataset.task_specs, widths=settings.widths)
    config = TrainConfig(
        epochs=1,
        batch_size=settings.batch_size,
        lr=1e-3,
        seed=0,
        device="cpu",
        progress=True,
    )
    steps = settings.steps + LOOP_WARMUP_STEPS + 1  # fit's last step has no closing hook
    per_epoch = len(epoch_batches(len(dataset), config.batch_size, config.seed, 1))
    epochs = math.ceil(steps / per_epoch)
    config = dataclasses.replace(config, epochs=epochs, max_steps=steps)
    batches = [
        index
        for epoch in range(1, epochs + 1)
        for index in epoch_batches(len(dataset), config.batch_size, config.seed, epoch)
    ][:steps]

    def one_repeat() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        model = copy.deepcopy(initial).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        hook = _BareStepsBetween(
            lambda k: bare_step(model, optimizer, tasks, dataset.batch(batches[k]))
        )
        fit(copy.deepcopy(initial), tasks, dataset, None, create_balancer("equal", list(tasks)),
            config, hooks=[hook])
        return hook.fit[LOOP_WARMUP_STEPS:], hook.bare[LOOP_WARMUP_STEPS : len(hook.fit)]

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        repeats = [one_repeat() for _ in range(settings.repeats)]
    finally:
        torch.set_num_threads(previous_threads)
    rows = []
    for k, clock in enumerate(("wall", "cpu")):
        shared = [statistics.median(t[k] for t in fit_s) for fit_s, _ in repeats]
        bare = [statistics.median(t[k] for t in bare_s) for _, bare_s in repeats]
        rows.append(
            {
                "comparison": "fit (progress bar, equal balancer) vs a bare PyTorch step, "
                "interleaved step by step",
                "clock": clock,
                "model": f"segnet widths={list(settings.widths)}",
                "parameters": count_parameters(initial),
                "tasks": "+".join(tasks),
                "image_size": "x".join(str(s) for s in dataset.image_size),
                "batch_size": settings.batch_size,
                "steps": settings.steps,
                "repeats": settings.repeats,
                "torch_threads": settings.threads,
                "shared_step_ms": statistics.median(shared) * 1e3,
                "bare_step_ms": statistics.median(bare) * 1e3,
                "ratio": statistics.median(a / b for a, b in zip(shared, bare, strict=True)),
                "target": TARGET_RATIO,
            }
        )
    return pd.DataFrame(rows)


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_generator(settings: BenchSettings) -> pd.DataFrame:
    """Median images/s of the scenes generator at 64×64 over ``settings.repeats`` runs.

    Args:
        settings: images per run and repeats.
    """
    rates = [
        scenes_images_per_second(settings.generator_images, 64, 64) for _ in range(settings.repeats)
    ]
    return pd.DataFrame(
        [
            {
                "generator": "scenes",
                "image_size": "64x64",
                "images": settings.generator_images,
                "repeats": settings.repeats,
                "images_per_s": statistics.median(rates),
                "target": TARGET_IMAGES_PER_S,
            }
        ]
    )


def smoke_resnet_step_seconds(routed: bool, steps: int, repeats: int) -> list[float]:
    """Median seconds per training step of paper A's smoke ResNet-18, per repeat.

    Backbone + linear head, Adam, batch 16 of 32×32 channels-last images, one thread, after
    two untimed warm-up steps.

    Args:
        routed: keep :mod:`mtlrepro.models.onednn`'s routing (``False``: the library layers).
        steps: timed steps per repeat.
        repeats: repeats.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", "smoke").to(memory_format=torch.channels_last)
    if not routed:
        for layer in backbone.modules():
            if isinstance(layer, SubsampledPointwiseConv2d):
                layer.__class__ = nn.Conv2d
    model = nn.Sequential(backbone, nn.Linear(backbone.out_features, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(images).square().mean().backward()
        optimizer.step()

    step(), step()
    medians = []
    for _ in range(repeats):
        times = [_timed(step)[0] for _ in range(steps)]
        medians.append(statistics.median(times))
    return medians


def bench_onednn_routing(settings: BenchSettings) -> pd.DataFrame:
    """Step time with and without the oneDNN routing, each variant in its own process,
    alternating, ``settings.repeats`` rounds of ``settings.steps`` steps (capped at 100).

    Args:
        settings: steps and repeats.

    Returns:
        One row per variant: median step ms, and ``status`` (``ok``, or how the process died).
    """
    steps = min(settings.steps, 100)
    samples: dict[str, list[float]] = {"routed": [], "library": []}
    status = {"routed": "ok", "library": "ok"}
    for repeat in range(settings.repeats):
        order = ("routed", "library") if repeat % 2 == 0 else ("library", "routed")
        for variant in order:
            if status[variant] != "ok":
                continue
            code = textwrap.dedent(
                f"""
                import json
                from mtlrepro.bench import smoke_resnet_step_seconds
                print(json.dumps(smoke_resnet_step_seconds({variant == "routed"}, {steps}, 1)))
                """
            )
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                status[variant] = f"died (exit {done.returncode}: {last})"
                continue
            samples[variant].extend(json.loads(done.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(
        [
            {
                "model": "paper A smoke resnet18 + linear head, channels-last",
                "variant": variant,
                "batch_size": 16,
                "image_size": "32x32",
                "torch_threads": 1,
                "steps": steps,
                "repeats": len(samples[variant]),
                "step_ms": statistics.median(samples[variant]) * 1e3
                if samples[variant]
                else math.nan,
                "status": status[variant],
            }
            for variant in ("routed", "library")
        ]
    )


def _conflicting_gradients(tasks: int, parameters: int) -> Tensor:
    """Random float32 gradients where every odd task points roughly against task 0 (so
    PCGrad projects), seeded."""
    generator = torch.Generator().manual_seed(tasks * 1_000_003 + parameters)
    grads = torch.randn(tasks, parameters, generator=generator)
    grads[1::2] = -grads[0] + 0.5 * grads[1::2]
    return grads


def _scene_step_problem(
    settings: BenchSettings,
) -> tuple[nn.Module, Callable[[], tuple[Tensor, list[Tensor]]]]:
    """The SegNet of :func:`bench_train_loop` and a function computing, on one fixed batch,
    its shared decoder features and each task's mean loss."""
    dataset = get_dataset("scenes", "train", "smoke", n_train=settings.n_train, tasks=BENCH_TASKS)
    tasks = make_tasks(dataset.task_specs)
    torch.manual_seed(0)
    model = create_model("segnet", dataset.task_specs, widths=settings.widths)
    batch = dataset.batch(torch.arange(min(settings.pcgrad_step_batch, len(dataset))))

    def forward() -> tuple[Tensor, list[Tensor]]:
        bottleneck, state = model.backbone.encode(model.normalise(batch["image"]))
        features = model.backbone.decode(bottleneck, state)
        losses = [task.loss(model.heads[name](features), batch[name]).mean()
                  for name, task in tasks.items()]
        return features, losses

    return model, forward


def bench_pcgrad(settings: BenchSettings) -> pd.DataFrame:
    """PCGrad, ours against torchjd's (see the module doc), on ``settings.threads`` threads.

    Args:
        settings: task and parameter counts, rounds (``repeats``), threads.

    Returns:
        One row per comparison: ``operation`` (``aggregation`` or ``backward step``), tasks,
        parameters, ``ours_ms``, ``torchjd_ms``, ``ratio``, ``status``.
    """
    try:
        from torchjd.aggregation import PCGrad
        from torchjd.autojac import jac_to_grad, mtl_backward
    except ImportError:
        missing = "torchjd not installed: pip install -e '.[bench]'"
        return pd.DataFrame([{"operation": "aggregation", "ours_ms": math.nan,
                              "torchjd_ms": math.nan, "ratio": math.nan, "status": missing}])
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    rows = []
    try:
        aggregator = PCGrad()
        for parameters in settings.pcgrad_parameters:
            for tasks in settings.pcgrad_tasks:
                grads = _conflicting_gradients(tasks, parameters)
                generator = torch.Generator().manual_seed(0)
                calls = max(1, round(2e6 / (tasks * parameters)))
                times = interleaved_medians(
                    {"ours": lambda g=grads, r=generator: pcgrad_combine(g, r),
                     "torchjd": lambda g=grads: aggregator(g)},
                    settings.repeats, calls,
                )
                rows.append({"operation": "aggregation", "tasks": tasks,
                             "parameters": parameters, "calls_per_round": calls, **times})
        model, forward = _scene_step_problem(settings)
        shared = model.shared_parameters()
        heads = [p for name in model.task_names for p in model.task_parameters(name)]
        generator = torch.Generator().manual_seed(0)

        def ours() -> None:
            model.zero_grad(set_to_none=True)
            _, losses = forward()
            pcgrad_backward(dict(enumerate(losses)), shared, heads, generator)

        def theirs() -> None:
            model.zero_grad(set_to_none=True)
            features, losses = forward()
            mtl_backward(losses, features=features)
            jac_to_grad(shared, aggregator)

        times = interleaved_medians({"ours": ours, "torchjd": theirs}, settings.repeats, 1)
        rows.append({"operation": "backward step", "tasks": len(BENCH_TASKS),
                     "parameters": count_parameters(model.backbone), "calls_per_round": 1,
                     **times})
    finally:
        torch.set_num_threads(previous_threads)
    frame = pd.DataFrame(rows)
    frame["ours_ms"] = frame.pop("ours") * 1e3
    frame["torchjd_ms"] = frame.pop("torchjd") * 1e3
    frame["ratio"] = frame["ours_ms"] / frame["torchjd_ms"]
    frame["rounds"] = settings.repeats
    frame["torch_threads"] = settings.threads
    frame["status"] = "ok"
    return frame


def run(out: str | Path, settings: BenchSettings) -> dict[str, pd.DataFrame]:
    """Run the benchmarks and write ``train_loop.csv``, ``scenes_generator.csv``,
    ``onednn_routing.csv``, ``pcgrad.csv``, ``slimming.csv`` and ``threads.csv``.

    Args:
        out: output folder.
        settings: what to run.

    Returns:
        File stem -> the table written.
    """
    tables = {
        "train_loop": bench_train_loop(settings),
        "scenes_generator": bench_generator(settings),
        "onednn_routing": bench_onednn_routing(settings),
        "pcgrad": bench_pcgrad(settings),
        "slimming": bench_slimming(
            settings.slim_fractions, settings.slim_batches, settings.slim_threads,
            settings.slim_profile, BENCH_TASKS, settings.slim_rounds, settings.export_rounds,
        ),
        "threads": bench_threads(
            settings.thread_steps, settings.thread_rounds, settings.thread_workloads
        ),
    }
    for stem, frame in tables.items():
        atomic_write_text(Path(out) / f"{stem}.csv", frame.to_csv(index=False))
    return tables


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m mtlrepro.bench --help``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m mtlrepro.bench", description=__doc__)
    parser.add_argument("--out", default="results/benchmarks", help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each loop")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke settings")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else BenchSettings()
    given = (("steps", args.steps), ("repeats", args.repeats), ("threads", args.threads))
    overrides = {k: v for k, v in given if v is not None}
    settings = dataclasses.replace(base, **overrides)
    tables = run(args.out, settings)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for stem, frame in tables.items():
            print(f"{stem}:\n{frame.to_string(index=False)}\n")


if __name__ == "__main__":
    main()
