"""Tests of mtlrepro.bench: the quick mode writes its CSV files with their key columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrepro import thread_bench
from mtlrepro.bench import (
    TARGET_IMAGES_PER_S,
    TARGET_RATIO,
    BenchSettings,
    main,
)
from mtlrepro.compress import slim
from mtlrepro.config import ConfigError
from mtlrepro.slim_bench import torch_pruning_slim, zero_random_groups
from mtlrepro.thread_bench import LOADS, VARIANTS


def test_quick_mode_writes_csvs_with_ratio_and_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MTLREPRO_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    out = tmp_path / "benchmarks"
    main(["--quick", "--out", str(out)])
    assert torch.get_num_threads() == threads  # the benchmark restores the thread count

    loop = pd.read_csv(out / "train_loop.csv")
    assert loop["clock"].tolist() == ["wall", "cpu"]
    for row in loop.itertuples():
        assert row.shared_step_ms > 0 and row.bare_step_ms > 0
        # one repeat in the quick mode: the ratio is that of its median steps
        assert math.isclose(row.ratio, row.shared_step_ms / row.bare_step_ms, rel_tol=1e-9)
        assert row.target == TARGET_RATIO

    generator = pd.read_csv(out / "scenes_generator.csv")
    assert generator["image_size"].tolist() == ["64x64"]
    assert generator["images_per_s"].iloc[0] > 0
    assert generator["target"].iloc[0] == TARGET_IMAGES_PER_S

    routing = pd.read_csv(out / "onednn_routing.csv")
    assert routing["variant"].tolist() == ["routed", "library"]
    routed = routing.iloc[0]
    assert routed.status == "ok" and routed.step_ms > 0  # the routed layers never abort
    library = routing.iloc[1]  # the library layers abort where oneDNN takes its AVX2 kernel
    assert (library.status == "ok" and library.step_ms > 0) or library.status.startswith("died")

    pcgrad = pd.read_csv(out / "pcgrad.csv")
    if pcgrad["status"].iloc[0] == "ok":  # torchjd (the bench extra) installed
        assert pcgrad["operation"].tolist() == ["aggregation"] * 2 + ["backward step"]
        assert pcgrad["tasks"].tolist() == [2, 3, 3]
        assert (pcgrad["ours_ms"] > 0).all() and (pcgrad["torchjd_ms"] > 0).all()
        assert (pcgrad["ratio"] - pcgrad["ours_ms"] / pcgrad["torchjd_ms"]).abs().max() < 1e-9
    else:
        assert pcgrad["status"].iloc[0].startswith("torchjd not installed")

    slimming = pd.read_csv(out / "slimming.csv")
    resnet, segnet = (slimming[slimming["model"].str.startswith(m)] for m in ("resnet", "segnet"))
    installed = resnet["status"].iloc[0] == "ok"  # torch-pruning (the bench extra)
    variants = ["slim", "slim + export"] + (["torch-pruning"] if installed else [])
    assert resnet["variant"].tolist() == variants
    # Torch-Pruning's graph misses the SegNet's unpooling coupling: its network fails, said so
    assert segnet["variant"].tolist() == ["slim", "slim + export"]
    assert segnet["status"].iloc[0].startswith(
        "Torch-Pruning's pruned network fails" if installed else "torch-pruning not installed")
    assert (slimming["flops_reduction"] > 1).all()  # half the groups zeroed: fewer FLOPs
    assert (slimming["parameters"] < slimming["dense_parameters"]).all()
    speedup = slimming["dense_ms"] / slimming["variant_ms"]
    assert (slimming["ratio"] - speedup / slimming["flops_reduction"]).abs().max() < 1e-9
    if installed:  # the same channels go: the same parameters and FLOPs as slim
        assert resnet["parameters"].nunique() == 1 and resnet["flops_reduction"].nunique() == 1
        tp = resnet[resnet["variant"] == "torch-pruning"].iloc[0]
        assert math.isclose(tp.vs_torch_pruning, 1.0)
        assert (resnet["vs_torch_pruning"] - resnet["speedup"] / tp.speedup).abs().max() < 1e-9
    else:
        assert resnet["status"].iloc[0].startswith("torch-pruning not installed")
    assert segnet["vs_torch_pruning"].isna().all()

    threads_table = pd.read_csv(out / "threads.csv")
    assert threads_table["variant"].tolist() == [v.name for v in VARIANTS for _ in LOADS]
    assert threads_table["load"].tolist() == list(LOADS) * len(VARIANTS)
    assert (threads_table["step_ms"] > 0).all()
    alone = threads_table[threads_table["load"] == LOADS[0]]
    assert alone["unloaded_ratio"].min() == 1.0  # the fastest variant alone
    busy = threads_table[threads_table["load"] == LOADS[1]]
    np.testing.assert_allclose(busy["loaded_ratio"],
                               busy["step_ms"].to_numpy() / alone["step_ms"].to_numpy())

    assert sorted(p.name for p in out.iterdir()) == [
        "onednn_routing.csv",
        "pcgrad.csv",
        "scenes_generator.csv",
        "slimming.csv",
        "threads.csv",
        "train_loop.csv",
    ]
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_torch_pruning_removes_what_slim_removes(fraction: float) -> None:
    """Torch-Pruning's dependency graph, asked to drop the channels every reader reads with a
    zero group, gives slim's network: same state dict, same outputs."""
    pytest.importorskip("torch_pruning")
    from torchvision.models import resnet18

    torch.manual_seed(0)
    dense = zero_random_groups(resnet18(num_classes=10), fraction)
    example = torch.rand(2, 3, 32, 32)
    ours, theirs = slim(dense).eval(), torch_pruning_slim(dense, example)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key, value in ours_state.items():
        assert torch.equal(value, theirs_state[key]), key
    with torch.no_grad():
        torch.testing.assert_close(ours(example), theirs(example))
        torch.testing.assert_close(theirs(example), dense(example), rtol=1e-4, atol=1e-4)


def test_bench_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="steps"):
        BenchSettings(steps=0)
    with pytest.raises(ConfigError, match="pcgrad_tasks"):
        BenchSettings(pcgrad_tasks=(1,))
    with pytest.raises(ConfigError, match="slim_fractions"):
        BenchSettings(slim_fractions=(1.0,))
    with pytest.raises(ConfigError, match="slim_threads"):
        BenchSettings(slim_threads=(0,))


def test_a_thread_bench_worker_times_its_steps_only_after_the_start_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forwards: list[int] = []
    model = torch.nn.Linear(4, 2)
    model.register_forward_hook(lambda *_: forwards.append(1))
    monkeypatch.setitem(thread_bench.WORKLOADS, "tiny", lambda: (model, torch.rand(3, 4)))
    started: list[int] = []
    times = thread_bench.step_seconds("tiny", 1, 3, lambda: started.append(len(forwards)))
    assert started == [thread_bench.WARMUP_STEPS]  # called once, after the warm-up
    assert len(times) == 3 and len(forwards) == thread_bench.WARMUP_STEPS + 3
