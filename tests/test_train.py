"""Tests of mtlrepro.train: the training step, fit (resume, guards, hooks, logs), evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import Balancer, UncertaintyWeighting, create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.tasks import Task, TaskSpec, make_tasks
from mtlrepro.train import (
    HISTORY_COLUMNS,
    Hooks,
    NonFiniteLossError,
    TrainConfig,
    TrainerState,
    epoch_batches,
    evaluate,
    fit,
    train_step,
)

NAMES = ("a", "b", "c")
N_TRAIN, BATCH = 48, 8
STEPS_PER_EPOCH = N_TRAIN // BATCH


class ToyModel(nn.Module):
    """Shared trunk (with BatchNorm buffers and dropout RNG use) + a 3-class head per task."""

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2)
        )
        self.heads = nn.ModuleDict({name: nn.Linear(16, 3) for name in names})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


class ToyData(torch.utils.data.Dataset):
    """Random 3×4×4 images; task k's class is the binned mean of colour channel k."""

    def __init__(self, n: int, seed: int, names: tuple[str, ...] = NAMES) -> None:
        images = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        self.tensors = {"image": images}
        for k, name in enumerate(names):
            self.tensors[name] = (images[:, k].mean((1, 2)) * 6 - 2).long().clamp(0, 2)

    def __len__(self) -> int:
        return len(self.tensors["image"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {key: value[i] for key, value in self.tensors.items()}

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


class PlainData(torch.utils.data.Dataset):
    """The same samples without the ``batch`` fast path (forces the DataLoader path)."""

    def __init__(self, data: ToyData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.data[i]


def _tasks() -> dict[str, Task]:
    return make_tasks([TaskSpec(name, "classification", 3) for name in NAMES])


def _config(**overrides: Any) -> TrainConfig:
    base = {"epochs": 3, "batch_size": BATCH, "lr": 1e-2, "progress": False, "device": "cpu"}
    return TrainConfig(**(base | overrides))


def _fit(config: TrainConfig, balancer: Balancer | None = None, **kwargs: Any) -> Any:
    """Fit a fresh toy model on the toy splits."""
    model = kwargs.pop("model", None) or ToyModel()
    train = kwargs.pop("train", None) or ToyData(N_TRAIN, seed=1)
    balancer = balancer or create_balancer("equal", NAMES)
    return fit(model, _tasks(), train, ToyData(24, seed=2), balancer, config, **kwargs)


class CountingHooks(Hooks):
    """Counts every hook call; logs its epoch count; its state is the counts."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("extra_loss", "after_backward", "after_step"), 0)
        self.epochs: list[int] = []

    def extra_loss(self, model: nn.Module, batch: Any, preds: Any) -> Tensor | None:
        self.counts["extra_loss"] += 1
        return None

    def after_backward(self, model: nn.Module) -> None:
        self.counts["after_backward"] += 1

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.counts["after_step"] += 1

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        self.epochs.append(epoch)
        trainer_state.log("hook_epochs", len(self.epochs), split="method")
        trainer_state.log("lr", trainer_state.optimizer.param_groups[0]["lr"], split="method")

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts, self.epochs = dict(state["counts"]), list(state["epochs"])


# --- resume --------------------------------------------------------------------------------------
def _resume_balancer() -> Balancer:
    """Uncertainty weighting + hard mining + PCGrad: every kind of balancer state at once."""
    return Balancer(UncertaintyWeighting(NAMES), hard_mining=0.75, gradient="pcgrad")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_resume_from_checkpoint_equals_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted at an epoch boundary and resumed: identical weights, optimiser-driven
    trajectory, history, final metrics, hook state and (byte for byte) dvclive log."""
    monkeypatch.chdir(tmp_path)
    settings = {"epochs": 4, "eval_every": 2, "lr_schedule": "step", "lr_step_size": 3}
    full_hooks = CountingHooks()
    torch.manual_seed(0)
    full = _fit(_config(**settings, log_dir="live_full"), _resume_balancer(), hooks=[full_hooks])

    ckpt = str(tmp_path / "ckpt" / "run.pt")
    torch.manual_seed(0)  # the same initial model as the full run
    cut = _fit(
        _config(
            **settings, log_dir="live_cut", checkpoint_path=ckpt, max_steps=2 * STEPS_PER_EPOCH
        ),
        _resume_balancer(),
        hooks=[CountingHooks()],
    )
    assert (cut.interrupted, cut.epochs, cut.steps) == (True, 2, 2 * STEPS_PER_EPOCH)

    torch.manual_seed(123)  # a differently initialised model: resume must overwrite it all
    resumed_hooks = CountingHooks()
    resumed = _fit(
        _config(**settings, log_dir="live_cut", checkpoint_path=ckpt, resume=True),
        _resume_balancer(),
        model=ToyModel(),
        hooks=[resumed_hooks],
    )
    assert (resumed.interrupted, resumed.epochs, resumed.steps) == (False, 4, 4 * STEPS_PER_EPOCH)
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    pd.testing.assert_frame_equal(full.history, resumed.history)
    assert full.final == resumed.final
    assert full_hooks.state_dict() == resumed_hooks.state_dict()
    assert _files(tmp_path / "live_full") == _files(tmp_path / "live_cut")
    # the run is not trivially constant: the log-variances and the lr moved
    weights = full.history.query("split == 'train' and metric == 'weight'")["value"]
    assert (weights != 0.5).any()
    lrs = full.history.query("metric == 'lr'")["value"].tolist()
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 1e-3])  # lr used in each epoch


def test_plateau_schedule_reduces_the_learning_rate_when_the_loss_stalls() -> None:
    """A far too large lr makes the training loss Σ_t L_t stall; 'plateau' (patience 0,
    PyTorch's default relative threshold 1e-4) cuts the lr after each epoch that did not
    improve on the best so far, and only then."""
    result = _fit(
        _config(epochs=4, lr=5.0, lr_schedule="plateau", lr_patience=0), hooks=[CountingHooks()]
    )
    lrs = result.history.query("metric == 'lr'")["value"].tolist()  # lr used in each epoch
    total = result.history.query("split == 'train' and task == 'all'")["value"].tolist()
    assert lrs[1] == lrs[0] == 5.0 and min(lrs) < 5.0
    for k in (1, 2):
        improved = total[k] < min(total[:k]) * (1 - 1e-4)
        assert (lrs[k + 1] < lrs[k]) == (not improved)


def test_interruption_inside_an_epoch_is_not_recorded(tmp_path: Path) -> None:
    """max_steps in mid-epoch: steps are taken but that epoch is neither logged nor saved."""
    ckpt = tmp_path / "run.pt"
    result = _fit(_config(checkpoint_path=str(ckpt), max_steps=STEPS_PER_EPOCH + 2))
    assert (result.interrupted, result.epochs, result.steps) == (True, 1, STEPS_PER_EPOCH + 2)
    assert set(result.history["epoch"]) == {1}
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert set(result.final) == set(NAMES)  # evaluated on the model as it stands


def test_checkpoint_is_self_describing(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    _fit(_config(epochs=1, checkpoint_path=str(ckpt), seed=3))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["config"]["seed"] == 3 and saved["epoch"] == 1
    assert saved["step"] == STEPS_PER_EPOCH
    assert saved["method"]["balancer"]["name"] == "equal"
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_resume_refuses_a_checkpoint_with_different_settings(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "run.pt")
    _fit(_config(epochs=2, checkpoint_path=ckpt))
    with pytest.raises(ConfigError, match=r"\['lr'\] differ"):
        _fit(_config(epochs=3, checkpoint_path=ckpt, resume=True, lr=0.5))
    with pytest.raises(ConfigError, match="more than TrainConfig.epochs"):
        _fit(_config(epochs=1, checkpoint_path=ckpt, resume=True))


def test_resume_without_a_checkpoint_file_starts_afresh(tmp_path: Path) -> None:
    result = _fit(_config(epochs=1, checkpoint_path=str(tmp_path / "none.pt"), resume=True))
    assert result.epochs == 1 and (tmp_path / "none.pt").exists()


# --- guards and validation -----------------------------------------------------------------------
class NaNAtCall(Task):
    """A task whose loss turns NaN from its ``at``-th call on."""

    def __init__(self, spec: TaskSpec, at: int) -> None:
        super().__init__(spec)
        self.calls, self.at = 0, at

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        self.calls += 1
        loss = super().loss(pred, target)
        return loss * float("nan") if self.calls >= self.at else loss


def test_non_finite_loss_raises_naming_step_and_task() -> None:
    tasks = _tasks()
    tasks["b"] = NaNAtCall(tasks["b"].spec, at=3)
    model = ToyModel()
    config = _config()
    with pytest.raises(NonFiniteLossError, match=r"task 'b' at step 3") as info:
        fit(model, tasks, ToyData(N_TRAIN, 1), None, create_balancer("equal", NAMES), config)
    assert (info.value.step, info.value.task) == (3, "b")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": "1e-3"}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"optimizer": "adamw"}, "optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),
        ({"lr_factor": 1.0}, "lr_factor"),
        ({"lr_factor": 0.0}, "lr_factor"),
        ({"lr_patience": -1}, "lr_patience"),
        ({"lr_step_size": 0}, "lr_step_size"),
        ({"eval_every": 0}, "eval_every"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"seed": -1}, "seed"),
        ({"threads": 0}, "threads"),
        ({"device": "tpu"}, "device"),
        ({"progress": "yes"}, "progress"),
        ({"resume": 1}, "resume"),
        ({"checkpoint_path": ""}, "checkpoint_path"),
        ({"log_dir": 3}, "log_dir"),
        ({"max_steps": 0}, "max_steps"),
        ({"resume": True}, "needs a checkpoint_path"),
    ],
)
def test_train_config_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)


def test_fit_rejects_mismatched_tasks() -> None:
    with pytest.raises(ConfigError, match="balancer's tasks"):
        _fit(_config(), create_balancer("equal", ["a", "b"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_fit_rejects_cuda_when_unavailable() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        _fit(_config(device="cuda"))


# --- hooks ---------------------------------------------------------------------------------------
def test_hooks_are_called_once_per_step_and_epoch() -> None:
    hooks = [CountingHooks(), CountingHooks()]
    result = _fit(_config(epochs=2), hooks=hooks)
    for hook in hooks:  # composed hooks are all called
        assert hook.counts == dict.fromkeys(hook.counts, 2 * STEPS_PER_EPOCH)
        assert hook.epochs == [1, 2]
    logged = result.history.query("metric == 'hook_epochs'")
    assert logged["value"].tolist() == [1.0, 1.0, 2.0, 2.0]  # two hooks, two epochs


class SquaredWeightPenalty(Hooks):
    """Extra loss ``c · ‖W_a‖²`` on head ``a``'s weight."""

    def __init__(self, coefficient: float) -> None:
        self.coefficient = coefficient

    def extra_loss(self, model: nn.Module, batch: Any, preds: Any) -> Tensor | None:
        return self.coefficient * model.heads["a"].weight.pow(2).sum()


def test_extra_loss_contributes_to_gradients_and_log() -> None:
    """The hook's loss adds its gradient 2c·W to the head and is logged."""
    data, tasks = ToyData(8, 1), _tasks()
    grads, logs = [], []
    for hooks in ((), (SquaredWeightPenalty(10.0),)):
        torch.manual_seed(0)  # same dropout mask in both steps
        model = ToyModel()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        log = train_step(
            model,
            tasks,
            data.batch(torch.arange(8)),
            create_balancer("equal", NAMES),
            optimizer,
            hooks,
        )
        grads.append(model.heads["a"].weight.grad.clone())
        logs.append(log)
        weight = model.heads["a"].weight.detach()
    assert torch.allclose(grads[1] - grads[0], 20.0 * weight, atol=1e-5)  # float32 sums
    assert "extra_loss" not in logs[0]["all"]
    assert logs[1]["all"]["extra_loss"] == pytest.approx(10.0 * float(weight.pow(2).sum()))


class RebuildAfterFirstEpoch(Hooks):
    """Asks for a fresh optimiser after epoch 1 and records the optimiser each epoch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        optimizer = trainer_state.optimizer
        self.seen.append((id(optimizer), optimizer.param_groups[0]["lr"]))
        trainer_state.rebuild_optimizer = epoch == 1


def test_step_schedule_and_optimizer_rebuild_keep_the_learning_rate() -> None:
    """'step' halves the lr every epoch, also across a hook-requested optimiser rebuild."""
    hook = RebuildAfterFirstEpoch()
    _fit(
        _config(lr=0.08, lr_schedule="step", lr_step_size=1, lr_factor=0.5),
        hooks=[hook],
    )
    assert [lr for _, lr in hook.seen] == pytest.approx([0.08, 0.04, 0.02])
    assert hook.seen[0][0] != hook.seen[1][0] == hook.seen[2][0]


# --- training behaviour --------------------------------------------------------------------------
def test_uncertainty_log_variances_are_optimised_by_fit() -> None:
    balancer = create_balancer("uncertainty", NAMES)
    result = _fit(_config(epochs=2), balancer)
    log_vars = balancer.weighting.log_vars.detach()
    assert (log_vars.abs() > 1e-3).all()  # moved away from the initial 0 (lr 1e-2, 12 steps)
    last = result.history.query("split == 'train' and metric == 'weight' and epoch == 2")
    assert (last["value"] != 0.5).all()


def test_dataloader_path_equals_fast_path() -> None:
    """A dataset without ``batch`` gives the same batches, hence the same weights."""
    data = ToyData(N_TRAIN, 1)
    torch.manual_seed(0)
    fast = _fit(_config(epochs=2), model=ToyModel(), train=data)
    torch.manual_seed(0)
    slow = _fit(_config(epochs=2), model=ToyModel(), train=PlainData(data))
    for key, value in fast.model.state_dict().items():
        assert torch.equal(value, slow.model.state_dict()[key]), key


def test_epoch_batches_depend_only_on_seed_and_epoch() -> None:
    first = epoch_batches(50, 8, seed=1, epoch=3)
    assert all(torch.equal(x, y) for x, y in zip(first, epoch_batches(50, 8, 1, 3), strict=True))
    assert not torch.equal(first[0], epoch_batches(50, 8, 1, 4)[0])
    assert not torch.equal(first[0], epoch_batches(50, 8, 2, 3)[0])
    assert [len(b) for b in first] == [8] * 6  # the remainder of 2 is dropped
    assert len(torch.cat(first).unique()) == 48
    assert [len(b) for b in epoch_batches(5, 8, 0, 1)] == [5]  # fewer samples than a batch


def test_history_is_tidy_and_evaluates_on_schedule() -> None:
    result = _fit(_config(epochs=3, eval_every=2))
    history = result.history
    assert tuple(history.columns) == HISTORY_COLUMNS
    train = history.query("split == 'train'")
    assert set(train["task"]) == {*NAMES, "all"}
    assert sorted(set(history.query("split == 'val'")["epoch"])) == [2, 3]
    assert train.query("epoch == 3")["step"].unique().tolist() == [3 * STEPS_PER_EPOCH]
    final_rows = history.query("split == 'val' and epoch == 3")
    assert result.final == {
        task: dict(zip(rows["metric"], rows["value"], strict=True))
        for task, rows in final_rows.groupby("task")
    }


def test_evaluate_returns_per_task_metric_dicts() -> None:
    model, tasks = ToyModel(), _tasks()
    model.train()
    scores = evaluate(model, tasks, ToyData(20, 3), batch_size=6)
    assert set(scores) == set(NAMES)
    for name, task in tasks.items():
        assert tuple(scores[name]) == task.metric_names
        assert 0.0 <= scores[name]["accuracy"] <= 100.0
    assert model.training  # mode restored
    # eval mode: deterministic (dropout off), so the same scores twice
    assert evaluate(model, tasks, ToyData(20, 3), batch_size=20) == scores


def test_progress_disabled_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    _fit(_config(epochs=1, progress=False))
    assert capfd.readouterr() == ("", "")


def test_progress_bar_shows_epoch_and_losses(capfd: pytest.CaptureFixture[str]) -> None:
    _fit(_config(epochs=1, progress=True))
    err = capfd.readouterr().err
    assert "epoch 1/1" in err and "all=" in err


# --- dvclive -------------------------------------------------------------------------------------
def test_dvclive_log_has_no_timestamps_and_no_dvc_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _fit(_config(epochs=2, log_dir="live"))
    files = _files(tmp_path)
    assert not [name for name in files if name.endswith("dvc.yaml")]
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / ".git").exists()
    tsv = (tmp_path / "live/plots/metrics/train/a/loss.tsv").read_text()
    assert tsv.splitlines()[0] == "step\tloss" and len(tsv.splitlines()) == 3
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["step"] == 2 and set(summary) == {"train", "val", "step"}
    assert "time" not in "".join(content.decode() for content in files.values())


def test_dvclive_refuses_a_git_repository_without_dvc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dvclive would `dvc init` such a repository; fit stops with a message instead."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="dvc init"):
        _fit(_config(epochs=1, log_dir="live"))
    assert not (tmp_path / ".dvc").exists()


# --- real components -----------------------------------------------------------------------------
def test_fit_trains_segnet_on_scenes_with_pcgrad_and_mining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole stack: scenes (smoke), segnet, paper A's balancer, evaluation per task."""
    monkeypatch.setenv("MTLREPRO_CACHE_DIR", str(tmp_path))
    from mtlrepro.data import get_dataset
    from mtlrepro.models import create_model

    tasks_used = ("segmentation", "depth", "normal")
    train = get_dataset("scenes", "train", "smoke", n_train=16, tasks=tasks_used)
    val = get_dataset("scenes", "val", "smoke", n_val=8, tasks=tasks_used)
    model = create_model("segnet", train.task_specs, widths=(4, 8))
    before = [p.detach().clone() for p in model.shared_parameters()]
    result = fit(
        model,
        make_tasks(train.task_specs),
        train,
        val,
        create_balancer("pcgrad", tasks_used, hard_mining=0.7),
        _config(epochs=1),
    )
    assert set(result.final) == set(tasks_used)
    assert "miou" in result.final["segmentation"] and "abs_err" in result.final["depth"]
    assert any(
        not torch.equal(b, p) for b, p in zip(before, model.shared_parameters(), strict=True)
    )
