"""Tests of mtlrepro.bench: the quick mode writes its CSV files with their key columns."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from mtlrepro.bench import TARGET_IMAGES_PER_S, TARGET_RATIO, BenchSettings, main
from mtlrepro.config import ConfigError


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
        assert row.shared_loop_s > 0 and row.bare_loop_s > 0
        assert math.isclose(row.ratio, row.shared_loop_s / row.bare_loop_s, rel_tol=1e-9)
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
    assert slimming["variant"].tolist() == ["slim", "slim + export"] * 2  # resnet18, segnet
    assert (slimming["flops_reduction"] > 1).all()  # half the groups zeroed: fewer FLOPs
    assert (slimming["parameters"] < slimming["dense_parameters"]).all()
    speedup = slimming["dense_ms"] / slimming["variant_ms"]
    assert (slimming["ratio"] - speedup / slimming["flops_reduction"]).abs().max() < 1e-9

    assert sorted(p.name for p in out.iterdir()) == [
        "onednn_routing.csv",
        "pcgrad.csv",
        "scenes_generator.csv",
        "slimming.csv",
        "train_loop.csv",
    ]
    assert "ratio" in capsys.readouterr().out


def test_bench_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="steps"):
        BenchSettings(steps=0)
    with pytest.raises(ConfigError, match="pcgrad_tasks"):
        BenchSettings(pcgrad_tasks=(1,))
    with pytest.raises(ConfigError, match="slim_fractions"):
        BenchSettings(slim_fractions=(1.0,))
