"""Thread settings under load: the training step of the cpu profile's networks with one or two
torch intra-op threads (and OpenMP's passive wait policy), alone and beside one busy process.

A user's machine always runs something else.  With two intra-op threads on two cores, a single
competing process can stall a step by large factors (OpenMP threads spin-wait for each other at
every parallel region, and one of them has lost its core).  :func:`bench_threads` measures it:

* workloads (:data:`WORKLOADS`): a training step (forward, backward, Adam) of the cpu profile's
  SegNet on three scene tasks (notebook 00 and paper C's base network), paper A's ResNet-50
  extractor with a linear head on 48 px vehicles (channels-last, as its studies run it) and
  paper B's dilated ResNet on scenes, on random inputs of the profile's sizes (a step's cost
  does not depend on the pixel values);
* variants (:data:`VARIANTS`): one thread; two threads; two threads with
  ``OMP_WAIT_POLICY=PASSIVE``; and two processes side by side at one thread each, the way the
  pipeline runs independent runs (``threads: 1``, ``workers: 2`` in the studies' presets);
* load: none, or one process spinning on a core (``while True: pass``) for the whole
  measurement.

Every measurement is its own process (the wait policy is read when OpenMP starts), run in
``rounds`` interleaved rounds (the order alternates) of ``steps`` timed steps after two
untimed ones.  The processes of one measurement start their timed steps together: each waits
after its warm-up until all are ready (otherwise, with steps of 7-15 ms, the timed steps of two
processes that started a few hundred ms apart need not overlap at all, and the measurement
was not of two processes side by side: one run measured the dilated ResNet's two processes
beside a busy one at 2.13× their time alone, the next at 0.98×); ``step_ms`` is the median
over rounds of each round's median step, divided by the number of processes stepping side by
side (the wall time of one step's work: two processes finishing a step each in 80 ms do one
step per 40 ms).  Per workload and variant, ``loaded_ratio`` is loaded ÷ unloaded and
``unloaded_ratio`` is unloaded ÷ the fastest unloaded variant; a variant ``meets`` the goal
when ``loaded_ratio`` <= :data:`MAX_LOADED_RATIO` and ``unloaded_ratio`` <=
:data:`MAX_UNLOADED_RATIO`.

Command line (the worker of one measurement): ``python -m mtlrepro.thread_bench WORKLOAD
THREADS STEPS`` warms up, prints :data:`READY`, waits for a line on its standard input, then
prints the step seconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from mtlrepro.config import check_choice, check_range
from mtlrepro.data.scenes import scenes_task_specs
from mtlrepro.models import create_model
from mtlrepro.models.backbones import create_backbone
from mtlrepro.models.deeplab import deeplab_config

MAX_LOADED_RATIO = 2.0
"""A default must keep a step beside one busy process within 2× of its time alone..."""
MAX_UNLOADED_RATIO = 1.1
"""...and lose at most 10 % alone against the fastest variant."""
WARMUP_STEPS = 2
"""Untimed steps before a measurement (allocator, oneDNN kernel choice)."""
BUSY_CODE = "while True: pass"
"""The competing process: one core spinning in Python."""
READY = "ready"
"""What a worker prints when it has warmed up (it then waits for a line on its input)."""


@dataclass(frozen=True)
class Variant:
    """A thread setting: torch intra-op threads, the OpenMP wait policy (``None``: the
    runtime's default, spinning for a while before sleeping) and how many processes train side
    by side (independent runs)."""

    name: str
    threads: int
    wait_policy: str | None = None
    processes: int = 1


VARIANTS: tuple[Variant, ...] = (
    Variant("1 thread", 1),
    Variant("2 threads", 2),
    Variant("2 threads, passive wait", 2, "PASSIVE"),
    Variant("2 processes × 1 thread", 1, processes=2),
)
"""The thread settings compared."""
LOADS: tuple[str, ...] = ("alone", "beside a busy process")
"""Without and with one competing busy process."""


def _segnet_step() -> tuple[nn.Module, Tensor]:
    """Notebook 00's (and paper C's base) cpu SegNet on three scene tasks, batch 8 of 48×64."""
    model = create_model("segnet", scenes_task_specs(), profile="cpu")
    return model, torch.rand(8, 3, 48, 64)


def _resnet50_step() -> tuple[nn.Module, Tensor]:
    """Paper A's cpu ResNet-50 extractor and a linear head, batch 64 of 48×48, channels-last."""
    backbone = create_backbone("resnet50", "cpu").to(memory_format=torch.channels_last)
    model = nn.Sequential(backbone, nn.Linear(backbone.out_features, 128))
    images = torch.rand(64, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    return model, images


def _dilated_resnet_step() -> tuple[nn.Module, Tensor]:
    """Paper B's cpu dilated ResNet (its backbone; the heads are small), batch 16 of 48×64."""
    return deeplab_config("cpu").backbone(), torch.rand(16, 3, 48, 64)


WORKLOADS: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "SegNet, 3 scene tasks (00, C)": _segnet_step,
    "ResNet-50 + linear head (A)": _resnet50_step,
    "dilated ResNet (B)": _dilated_resnet_step,
}
"""Workload -> its model and input batch."""


def _loss(outputs: object) -> Tensor:
    """A scalar from any model output (a tensor or a dict of them): the mean of squares."""
    values = outputs.values() if isinstance(outputs, dict) else [outputs]
    return sum(v.float().square().mean() for v in values)


def step_seconds(workload: str, threads: int, steps: int,
                 before_timing: Callable[[], None] | None = None) -> list[float]:
    """Seconds per training step of ``workload`` on ``threads`` torch threads, after
    :data:`WARMUP_STEPS` untimed steps (run in the measuring process).

    Args:
        workload: one of :data:`WORKLOADS`.
        threads: torch intra-op threads.
        steps: timed steps.
        before_timing: called between the warm-up and the timed steps (the workers of one
            measurement wait there for each other).
    """
    check_choice("workload", workload, tuple(WORKLOADS))
    check_range("threads", threads, 1, integer=True)
    check_range("steps", steps, 1, integer=True)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, images = WORKLOADS[workload]()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _loss(model(images)).backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    if before_timing is not None:
        before_timing()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _measure(workload: str, variant: Variant, busy: bool, steps: int) -> float:
    """The median step seconds of one measurement ÷ its processes, each measuring process its
    own (beside a busy one), their timed steps started together (module doc)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(variant.threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if variant.wait_policy is not None:
        env["OMP_WAIT_POLICY"] = variant.wait_policy
    command = [sys.executable, "-m", "mtlrepro.thread_bench", workload, str(variant.threads),
               str(steps)]
    spinner = subprocess.Popen([sys.executable, "-c", BUSY_CODE]) if busy else None
    workers = [
        subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(variant.processes)
    ]
    times: list[float] = []
    try:
        for worker in workers:  # each has warmed up ...
            if worker.stdout.readline().strip() != READY:
                _, err = worker.communicate(timeout=60)
                raise RuntimeError(f"thread_bench worker failed ({worker.returncode}): {err}")
        for worker in workers:  # ... before any starts its timed steps
            worker.stdin.write("start\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=1800)
            if worker.returncode != 0:
                raise RuntimeError(f"thread_bench worker failed ({worker.returncode}): {err}")
            times += json.loads(out.strip().splitlines()[-1])
    finally:
        for process in [*workers, *([spinner] if spinner is not None else [])]:
            process.kill()
            process.wait()
    return statistics.median(times) / variant.processes


def bench_threads(
    steps: int, rounds: int, workloads: Sequence[str] = tuple(WORKLOADS)
) -> pd.DataFrame:
    """Step time per workload, variant and load (module doc).

    Args:
        steps: timed steps per measurement.
        rounds: interleaved rounds (the order of the measurements alternates).
        workloads: which of :data:`WORKLOADS`.

    Returns:
        One row per (workload, variant, load): ``step_ms``, ``loaded_ratio``,
        ``unloaded_ratio``, ``meets`` and the settings.
    """
    check_range("steps", steps, 1, integer=True)
    check_range("rounds", rounds, 1, integer=True)
    for workload in workloads:
        check_choice("workload", workload, tuple(WORKLOADS))
    cases = [(w, v, load) for w in workloads for v in VARIANTS for load in LOADS]
    samples: dict[tuple[str, str, str], list[float]] = {(w, v.name, load): [] for w, v, load
                                                        in cases}
    for round_index in range(rounds):
        for workload, variant, load in cases if round_index % 2 == 0 else cases[::-1]:
            seconds = _measure(workload, variant, load == LOADS[1], steps)
            samples[(workload, variant.name, load)].append(seconds)
    rows = [
        {
            "workload": w,
            "variant": v.name,
            "torch_threads": v.threads,
            "wait_policy": v.wait_policy or "default",
            "processes": v.processes,
            "load": load,
            "steps": steps,
            "rounds": rounds,
            "step_ms": statistics.median(samples[(w, v.name, load)]) * 1e3,
        }
        for w, v, load in cases
    ]
    frame = pd.DataFrame(rows)
    alone = frame[frame["load"] == LOADS[0]].set_index(["workload", "variant"])["step_ms"]
    loaded = frame[frame["load"] == LOADS[1]].set_index(["workload", "variant"])["step_ms"]
    fastest = alone.groupby(level="workload").min()
    keys = list(zip(frame["workload"], frame["variant"], strict=True))
    frame["loaded_ratio"] = [loaded[k] / alone[k] for k in keys]
    frame["unloaded_ratio"] = [alone[k] / fastest[k[0]] for k in keys]
    frame["meets"] = (frame["loaded_ratio"] <= MAX_LOADED_RATIO) & (
        frame["unloaded_ratio"] <= MAX_UNLOADED_RATIO
    )
    return frame


def main(argv: Sequence[str] | None = None) -> None:
    """The worker of one measurement: ``WORKLOAD THREADS STEPS`` -> :data:`READY` after the
    warm-up, then (after a line on standard input) the step seconds as JSON.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m mtlrepro.thread_bench", description=__doc__)
    parser.add_argument("workload", choices=tuple(WORKLOADS))
    parser.add_argument("threads", type=int)
    parser.add_argument("steps", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(step_seconds(args.workload, args.threads, args.steps, _await_start)))


def _await_start() -> None:
    """Say the warm-up is done and wait for the measurement's start (a line on stdin)."""
    print(READY, flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
