"""Tests of paper E's partitioned network (mtlrepro.methods.partition_net): forward masks,
backward masks through the training loop, per-task BatchNorm, the task curriculum, feature
distillation and mask validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.methods.partition_net import (
    DistillConfig,
    PartitionResNet,
    PartitionTraining,
    check_masks,
    create_partition_resnet,
    curriculum_probabilities,
    distill,
    partition_parameter_counts,
)
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import Hooks, TrainConfig, fit

NAMES = ("a", "b", "c")
C = 8  # channels of the smoke network's partitioned stage
SIZE = 16


def _specs(names: tuple[str, ...] = NAMES) -> list[TaskSpec]:
    return [TaskSpec(name, "classification", 3) for name in names]


def _model(names: tuple[str, ...] = NAMES, seed: int = 0) -> PartitionResNet:
    torch.manual_seed(seed)
    return create_partition_resnet(_specs(names), "smoke")


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """Forward masks: a uses channels 0-4, b 3-7, c 0-7; backward: c trains only 0-3."""
    m_f = np.zeros((C, 3))
    m_f[0:5, 0] = 1
    m_f[3:8, 1] = 1
    m_f[:, 2] = 1
    m_b = m_f.copy()
    m_b[4:, 2] = 0
    return m_f, m_b


THIRDS = ((0, 6), (6, 11), (11, 16))


def _images(n: int, seed: int, task: Tensor) -> tuple[Tensor, Tensor]:
    """Random images and class ids: sample i of task k (``task[i]``) of class y has the rows of
    third y of its colour channel k brightened."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.5
    y = torch.randint(3, (n,), generator=generator)
    for i in range(n):
        low, high = THIRDS[int(y[i])]
        x[i, int(task[i]), low:high] += 0.5
    return x, y


class DomainData(torch.utils.data.Dataset):
    """Sample i belongs to task ``i % len(names)`` (or every one to ``only``); the other
    tasks' targets are -1."""

    def __init__(self, n: int, seed: int, names: tuple[str, ...] = NAMES, only: str = "") -> None:
        owner = torch.arange(n) % len(names) if not only else torch.full((n,), names.index(only))
        x, y = _images(n, seed, owner)
        self.tensors = {"image": x}
        for k, name in enumerate(names):
            self.tensors[name] = torch.where(owner == k, y, torch.full((n,), -1))

    def __len__(self) -> int:
        return len(self.tensors["image"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {key: value[i] for key, value in self.tensors.items()}

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def _config(**overrides: Any) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 8, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9}
    return TrainConfig(**(base | {"progress": False, "device": "cpu"} | overrides))


def _copy(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


# --- forward masks (§3) ----------------------------------------------------------------------
def test_forward_masks_zero_the_masked_channels_of_the_last_stage_only() -> None:
    model = _model()
    m_f, _ = _masks()
    model.set_masks(m_f)
    seen: list[tuple[str, Tensor]] = []
    for name, module in model.named_modules():
        if name.endswith("mask_site"):
            module.register_forward_hook(lambda mod, inp, out, n=name: seen.append((n, out)))
    model.eval()
    x = torch.rand(4, 3, SIZE, SIZE)
    for t, task in enumerate(NAMES):
        seen.clear()
        model(x, task=task)
        assert len(seen) == sum(model.blocks)
        for name, out in seen:
            zero = out.abs().amax(dim=(0, 2, 3)) == 0
            if name.startswith(f"stages.{len(model.stages) - 1}."):
                assert torch.equal(zero, torch.from_numpy(m_f[:, t] == 0)), (task, name)
            else:  # the unpartitioned stages are not masked
                assert not zero.any(), (task, name)
    counts = partition_parameter_counts(model)
    assert counts["a"] == counts["b"] == 5 / 8 * counts["full"] and counts["union"] == counts["c"]


def test_routing_runs_each_task_on_its_own_samples_with_zeros_elsewhere() -> None:
    model = _model().eval()
    x = torch.rand(6, 3, SIZE, SIZE)
    members = {name: torch.arange(6) % 3 == k for k, name in enumerate(NAMES)}
    model.route(members)
    routed = model(x)
    for name in NAMES:
        alone = model(x[members[name]], task=name)
        torch.testing.assert_close(routed[name][members[name]], alone)
        assert torch.equal(routed[name][~members[name]], torch.zeros(4, 3))
    full = model(x)  # the routing was used once
    assert full["a"][1].abs().sum() > 0


# --- backward masks and per-task momentum through fit (§3, App. A.2) -----------------------
class Snapshots(Hooks):
    """Records the step's task (from the partition hook) and the weights after each step."""

    def __init__(self, partition: PartitionTraining) -> None:
        self.partition = partition
        self.records: list[tuple[str, dict[str, Tensor]]] = []

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        assert self.partition._task is not None
        self.records.append((self.partition._task, _copy(model)))


def test_backward_masks_keep_each_steps_masked_weights_bit_for_bit() -> None:
    """After a step of task t, the rows of conv1 / columns of conv2 outside m_b[t] are exactly
    as before (with per-task momentum), those inside moved; the frozen stages never move."""
    model = _model()
    m_f, m_b = _masks()
    model.set_masks(m_f)
    partition = PartitionTraining(model, m_b, seed=3)
    snapshots = Snapshots(partition)
    start = _copy(model)
    result = fit(
        model,
        make_tasks(_specs()),
        DomainData(48, 1),
        None,
        create_balancer("equal", NAMES),
        _config(),
        [partition, snapshots],
    )
    trained = [task for task, _ in snapshots.records]
    assert len(trained) == 6 and len(set(trained)) >= 2, trained
    last = len(model.stages) - 1
    before = start
    for task, after in snapshots.records:
        keep = torch.from_numpy(m_b[:, NAMES.index(task)] == 0)
        for k in range(model.blocks[-1]):
            w1 = f"stages.{last}.{k}.conv1.conv.weight"
            w2 = f"stages.{last}.{k}.conv2.conv.weight"
            assert torch.equal(after[w1][keep], before[w1][keep]), (task, w1)
            assert torch.equal(after[w2][:, keep], before[w2][:, keep]), (task, w2)
            assert not torch.equal(after[w1][~keep], before[w1][~keep]), (task, w1)
        for key in after:
            frozen = key.startswith(("stem.", "stages.0.", "stages.1."))
            if frozen and key.endswith(("weight", "bias")):
                assert torch.equal(after[key], start[key]), key
        before = after
    rows = result.history[result.history["split"] == "curriculum"]
    assert set(rows["metric"]) == {"accuracy", "p"} and len(rows) == 2 * len(NAMES)


def test_partition_training_resumes_exactly(tmp_path: Path) -> None:
    """The curriculum's accuracies are checkpointed and the draws depend on (seed, step)
    alone, so an interrupted run resumes to the same weights and history."""

    def run(**overrides: Any) -> Any:
        model = _model()
        model.set_masks(_masks()[0])
        hooks = [PartitionTraining(model, _masks()[1], seed=1)]
        config = _config(**({"epochs": 2, "checkpoint_path": str(tmp_path / "run.pt")} | overrides))
        tasks, balancer = make_tasks(_specs()), create_balancer("equal", NAMES)
        return fit(model, tasks, DomainData(24, 4), None, balancer, config, hooks)

    full = run()
    (tmp_path / "run.pt").unlink()
    run(epochs=1)
    resumed = run(resume=True)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    pd.testing.assert_frame_equal(full.history, resumed.history)


def test_partition_training_batches_hold_one_task_each_drawn_by_the_curriculum() -> None:
    """App. A.2: a step's batch holds samples of the one task the curriculum draws; a task's
    samples are all used before any repeats; the loop's count of steps."""
    model = _model()
    hook = PartitionTraining(model, seed=3)
    hook.accuracy = [0.9, 0.1, 0.5]  # b lags: drawn most often
    data = DomainData(60, 0)
    batches = hook.epoch_batches(data, 4, seed=3, epoch=2)
    assert len(batches) == 60 // 4
    owners = [set((torch.arange(60)[b] % 3).tolist()) for b in batches]
    assert all(len(owner) == 1 for owner in owners)
    steps = range(len(batches) + 1, 2 * len(batches) + 1)  # epoch 2's step numbers
    assert [NAMES[owner.pop()] for owner in owners] == [hook.draw(s) for s in steps]
    counts = [sum(int(b[0]) % 3 == t for b in batches) for t in range(3)]
    assert counts[1] == max(counts) > 5  # 20 samples of b, 4 per batch: b's are reshuffled
    used = torch.cat([b for b in batches if int(b[0]) % 3 == 1]).tolist()
    assert sorted(used[:20]) == list(range(1, 60, 3))  # every b sample before any repeats
    again = hook.epoch_batches(data, 4, seed=3, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    only_a = hook.epoch_batches(DomainData(12, 0, only="a"), 4, seed=3, epoch=1)
    assert len(only_a) == 3 and sorted(torch.cat(only_a).tolist()) == list(range(12))
    with pytest.raises(ConfigError, match=r"exposes no labels of the tasks"):
        hook.epoch_batches(DomainData(12, 0, names=("a", "b")), 4, seed=3, epoch=1)


# --- per-task BatchNorm (App. A.2) -------------------------------------------------------------
def _bn_state(model: nn.Module, task: int) -> dict[str, Tensor]:
    """Every BN buffer and parameter of one task."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and name.split(".")[-1] == str(task):
            for key, value in module.state_dict().items():
                out[f"{name}.{key}"] = value.detach().clone()
    return out


def test_per_task_bn_statistics_stay_separate() -> None:
    """Training on task a alone moves a's BN statistics and leaves b's and c's untouched."""
    model = _model()
    before = [_bn_state(model, t) for t in range(3)]
    fit(
        model,
        make_tasks(_specs()),
        DomainData(16, 2, only="a"),
        None,
        create_balancer("equal", NAMES),
        _config(),
        [PartitionTraining(model, seed=0)],
    )
    after = [_bn_state(model, t) for t in range(3)]
    assert len(after[0]) == 5 * (2 * sum(model.blocks) + 1) + 5  # every site, and the end BN
    moved = [k for k in after[0] if not torch.equal(after[0][k], before[0][k])]
    assert any("running_mean" in k for k in moved) and any("stages.0" in k for k in moved)
    for t in (1, 2):
        for key, value in after[t].items():
            assert torch.equal(value, before[t][key]), key
    model.train()
    model(torch.rand(4, 3, SIZE, SIZE), task="b")  # a direct call moves only b's
    assert all(torch.equal(v, after[0][k]) for k, v in _bn_state(model, 0).items())
    assert not all(torch.equal(v, after[1][k]) for k, v in _bn_state(model, 1).items())


# --- curriculum (App. A.2) ---------------------------------------------------------------------
def test_curriculum_favours_the_lagging_task_and_is_deterministic() -> None:
    p = curriculum_probabilities([0.9, 0.4])
    logits = np.log(1 - np.array([0.9, 0.4]) + 0.15) / 0.3
    np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum())
    assert p[1] > 0.9
    model = _model(("a", "b"))
    hooks = [PartitionTraining(model, seed=s) for s in (5, 5, 6)]
    for hook in hooks:
        hook.accuracy = [0.9, 0.4]
    draws = [[hook.draw(step) for step in range(1, 201)] for hook in hooks]
    assert draws[0] == draws[1] != draws[2]
    assert draws[0].count("b") > 150
    assert [hooks[0].draw(s, [True, False]) for s in range(1, 20)] == ["a"] * 19
    uniform = PartitionTraining(model, curriculum=False, seed=5)
    uniform.accuracy = [0.9, 0.4]
    assert 60 < [uniform.draw(s) for s in range(1, 201)].count("b") < 140
    with pytest.raises(ConfigError, match="fractions in"):
        curriculum_probabilities([90.0, 40.0])


# --- feature distillation (§4.2) ---------------------------------------------------------------
def _teacher(task: int, seed: int) -> tuple[PartitionResNet, DomainData]:
    """A single-task teacher trained briefly on its task (well above chance)."""
    model = _model(("t",), seed=seed)
    data = DomainData(256, seed, ("t",))
    data.tensors["image"], data.tensors["t"] = _images(256, seed, torch.full((256,), task))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(60):
        index = torch.randint(256, (32,), generator=generator)
        loss = nn.functional.cross_entropy(
            model(data.tensors["image"][index], task="t"), data.tensors["t"][index]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), data


def test_distillation_loss_decreases_and_self_distillation_scores_near_one() -> None:
    teacher, data = _teacher(0, seed=1)
    images, labels = data.tensors["image"], data.tensors["t"]
    teachers, train, evals = {"t": teacher}, {"t": images[:192]}, {"t": (images, labels)}
    config = DistillConfig(iterations=150, batch_size=8, lr=0.5, drop_at=100, seed=0)
    state = _copy(teacher)
    result = distill(teachers, np.ones((C, 1)), train, evals, config)
    assert result.reference["t"] > 0.6  # the teacher learned something
    assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:5])
    assert result.task_scores["t"] > 0.9 and result.score == result.task_scores["t"]
    assert result.seconds > 0 and len(result.losses) == 150
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    untrained = distill(
        teachers, np.ones((C, 1)), train, evals, DistillConfig(iterations=1, lr=1e-9)
    )
    assert untrained.score < 0.8  # what distillation improves on
    # starting from the teacher's own stage, the student is the teacher: score exactly 1
    same = distill(
        teachers,
        np.ones((C, 1)),
        train,
        evals,
        DistillConfig(iterations=1, lr=1e-9),
        init=teacher.stages[-1],
    )
    assert same.score == 1.0
    again = distill(teachers, np.ones((C, 1)), train, evals, config)
    assert again.losses == result.losses  # seeded


def test_distillation_with_two_teachers_and_masks() -> None:
    (a, data_a), (b, data_b) = _teacher(0, seed=1), _teacher(1, seed=2)
    m_f, _ = _masks()
    result = distill(
        {"a": a, "b": b},
        m_f[:, :2],
        {"a": data_a.tensors["image"], "b": data_b.tensors["image"]},
        {
            "a": (data_a.tensors["image"], data_a.tensors["t"]),
            "b": (data_b.tensors["image"], data_b.tensors["t"]),
        },
        DistillConfig(iterations=20, batch_size=4, targets="stage"),
        reference={"a": 1.0, "b": 0.5},
    )
    assert result.reference == {"a": 1.0, "b": 0.5}
    assert result.task_scores["b"] == pytest.approx(result.accuracy["b"] / 0.5)
    assert result.score == pytest.approx(np.mean(list(result.task_scores.values())))
    with pytest.raises(ConfigError, match="shape"):
        distill(
            {"a": a},
            m_f,
            {"a": data_a.tensors["image"]},
            {"a": (data_a.tensors["image"], data_a.tensors["t"])},
        )


# --- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("forward", "backward", "message"),
    [
        (np.ones((C, 2)), None, r"shape \(8, 2\); the partitioned stage needs \(8, 3\)"),
        (np.ones((C + 1, 3)), None, r"shape \(9, 3\)"),
        (np.ones(C), None, r"2-D channels × tasks array; got shape \(8,\)"),
        (np.full((C, 3), 0.5), None, r"only 0 and 1; found 0.5 at channel 0, task column 0"),
        (np.ones((C, 3)), np.full((C, 3), 2.0), "backward mask must hold only 0 and 1"),
        (_masks()[1], _masks()[0], r"task 'c' selects channels \[4, 5, 6, 7\] outside"),
    ],
)
def test_bad_masks_raise_config_errors(forward: Any, backward: Any, message: str) -> None:
    model = _model()
    with pytest.raises(ConfigError, match=message):
        if backward is None:
            model.set_masks(forward)
        else:
            model.set_masks(forward)
            PartitionTraining(model, backward)
    with pytest.raises(ConfigError, match="m_b must be a subset of m_f"):
        check_masks(np.zeros((2, 1)), np.ones((2, 1)))


def test_standard_classification_tasks_ignore_other_domains_samples() -> None:
    """The partitioned network trains on mixed-domain batches with the project's plain
    classification task: a target -1 (another domain's sample) gives no loss, no count."""
    task = make_tasks(_specs(("a",)))["a"]
    pred = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    target = torch.tensor([0, -1, 1])
    loss = task.loss(pred, target)
    assert loss[1] == 0 and loss[0] > 0 and loss[2] > loss[0]
    meter = task.new_meter()
    meter.update(pred, target)
    assert meter.compute() == {"accuracy": 50.0}
