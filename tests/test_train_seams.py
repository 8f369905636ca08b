"""Tests of the training-loop seams of papers C, D and E in mtlrepro.train: hook parameter
groups, excluded parameters with inner updates before the shared step (C, Alg. 1), named phases
with a rewind (D, §3.2), per-task gradient masks (E, §3) and per-task optimiser state (E,
App. A.2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import Balancer, FixedWeights, create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.phases import Phase, fit_phases
from mtlrepro.tasks import Task, TaskSpec, make_tasks
from mtlrepro.train import (
    HISTORY_COLUMNS,
    Hooks,
    TrainConfig,
    TrainerState,
    epoch_batches,
    fit,
    train_step,
)

NAMES = ("a", "b")
N_TRAIN, BATCH = 32, 8
STEPS_PER_EPOCH = N_TRAIN // BATCH


class SeamModel(nn.Module):
    """Two trunk branches mixed by ``softmax(arch)`` (paper D's α in miniature), a 3-class
    head per task and a per-task output scale (paper C's M(j) in miniature); no dropout or
    batch norm, so a step is a function of the weights and the batch alone."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Linear(12, 8), nn.Linear(12, 8)])
        self.arch = nn.Parameter(torch.zeros(2))
        self.heads = nn.ModuleDict({name: nn.Linear(8, 3) for name in NAMES})
        self.scale = nn.ParameterDict({name: nn.Parameter(torch.ones(())) for name in NAMES})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        mix = torch.softmax(self.arch, dim=0)
        features = torch.relu(
            sum(m * branch(images) for m, branch in zip(mix, self.branches, strict=True))
        )
        return {name: self.scale[name] * head(features) for name, head in self.heads.items()}


class SeamData(torch.utils.data.Dataset):
    """Random 12-vectors; task a's class is the binned mean of the first half, b's of the
    second."""

    def __init__(self, n: int, seed: int) -> None:
        x = torch.rand(n, 12, generator=torch.Generator().manual_seed(seed))
        self.tensors = {"image": x}
        for k, name in enumerate(NAMES):
            self.tensors[name] = (x[:, 6 * k : 6 * k + 6].mean(1) * 6 - 2).long().clamp(0, 2)

    def __len__(self) -> int:
        return len(self.tensors["image"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {key: value[i] for key, value in self.tensors.items()}

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def _tasks() -> dict[str, Task]:
    return make_tasks([TaskSpec(name, "classification", 3) for name in NAMES])


def _config(**overrides: Any) -> TrainConfig:
    base = {"epochs": 2, "batch_size": BATCH, "lr": 0.1, "optimizer": "sgd", "momentum": 0.0}
    return TrainConfig(**(base | {"progress": False, "device": "cpu"} | overrides))


def _fit(
    config: TrainConfig,
    hooks: Any = (),
    model: SeamModel | None = None,
    balancer: Balancer | None = None,
) -> Any:
    """Fit the model (a fresh one by default) on the toy splits, 'equal' balancer by default."""
    balancer = balancer or create_balancer("equal", NAMES)
    model = model or SeamModel()
    return fit(model, _tasks(), SeamData(N_TRAIN, 1), SeamData(8, 2), balancer, config, hooks)


def _copy(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


# --- 1. parameter groups -------------------------------------------------------------------------
class GroupHook(Hooks):
    """Trains ``arch`` in its own group at lr 0.5 and the heads without weight decay; records
    the optimiser's groups every epoch and asks for a rebuild after the first."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[Any, ...]]] = []

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [
            {"name": "arch", "params": [model.arch], "lr": 0.5, "weight_decay": 0.0},
            {"name": "heads", "params": list(model.heads.parameters()), "weight_decay": 0.0},
        ]

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        self.seen.append(
            [
                (g.get("name"), g["lr"], g["weight_decay"], len(g["params"]))
                for g in trainer_state.optimizer.param_groups
            ]
        )
        trainer_state.rebuild_optimizer = epoch == 1


def test_hook_param_groups_come_after_the_default_ones_and_follow_schedule_and_rebuild() -> None:
    """Default model group (less the claimed parameters), balancer group, then the hook's, each
    with its lr and weight decay; 'step' halves every group's lr, across a rebuild too."""
    model, hook = SeamModel(), GroupHook()
    before = model.arch.detach().clone()
    settings = {"epochs": 3, "weight_decay": 1e-3, "lr_schedule": "step", "lr_step_size": 1}
    _fit(_config(**settings, lr_factor=0.5), [hook], model, create_balancer("uncertainty", NAMES))
    rest = len(list(model.parameters())) - 1 - 4  # less arch and the two heads' weight and bias
    assert len(hook.seen) == 3
    for epoch, groups in enumerate(hook.seen):
        f = 0.5**epoch
        assert groups == [
            (None, pytest.approx(0.1 * f), 1e-3, rest),  # the branches and scales
            (None, pytest.approx(0.1 * f), 0.0, 1),  # the balancer's log-variances
            ("arch", pytest.approx(0.5 * f), 0.0, 1),
            ("heads", pytest.approx(0.1 * f), 0.0, 4),
        ]
    assert not torch.equal(model.arch, before)


class FrozenHeadA(Hooks):
    """Puts head a's parameters in a group of lr 0 (and weight decay, which then acts not)."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"name": "head_a", "params": list(model.heads["a"].parameters()), "lr": 0.0}]


def test_a_hook_group_trains_its_parameters_at_its_own_lr() -> None:
    model = SeamModel()
    start = _copy(model)
    _fit(_config(weight_decay=0.1), [FrozenHeadA()], model)
    end = _copy(model)
    assert torch.equal(start["heads.a.weight"], end["heads.a.weight"])
    assert not torch.equal(start["heads.b.weight"], end["heads.b.weight"])


class Claims(Hooks):
    """Claims the given parameters of the model in a group, or as excluded."""

    def __init__(self, names: tuple[str, ...], excluded: bool = False) -> None:
        self.names, self.excluded = names, excluded

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        return [dict(model.named_parameters())[name] for name in self.names]

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [] if self.excluded else [{"name": "g", "params": self._params(model)}]

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return self._params(model) if self.excluded else []


@pytest.mark.parametrize(
    "hooks",
    [
        [Claims(("heads.a.bias", "heads.a.bias"))],
        [Claims(("arch", "heads.a.bias")), Claims(("heads.a.bias",), excluded=True)],
    ],
)
def test_a_parameter_claimed_twice_is_a_config_error_naming_it(hooks: list[Hooks]) -> None:
    with pytest.raises(ConfigError, match=r"parameter 'heads\.a\.bias' is claimed twice"):
        _fit(_config(epochs=1), hooks)


# --- 3. inner updates before the shared step (paper C, Alg. 1) -----------------------------------
class InnerScaleUpdates(Hooks):
    """Paper C's Alg. 1 in miniature: before each shared step, each task j's scale M(j) alone
    is updated with L_j on half the batch by the hook's own SGD; the shared optimiser excludes
    the scales.  Records the scales before and after the inner updates and after the step."""

    def __init__(self, model: SeamModel, lr: float) -> None:
        self.tasks = _tasks()
        self.inner = torch.optim.SGD(list(model.scale.values()), lr=lr)
        self.lr = lr
        self.records: list[dict[str, Tensor]] = []
        self.shared_group_sizes: list[int] = []

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.scale.values())

    def before_step(self, model: nn.Module, batch: Any, step: int) -> None:
        record = {"before": torch.stack(list(model.scale.values())).detach().clone()}
        half = {key: value[: len(value) // 2] for key, value in batch.items()}
        expected = []
        for name, task in self.tasks.items():
            self.inner.zero_grad(set_to_none=True)  # also the shared step's gradients
            scale = model.scale[name]
            loss = task.loss(model(half["image"])[name], half[name]).mean()
            (scale.grad,) = torch.autograd.grad(loss, [scale])  # M(j) only
            expected.append(scale.detach() - self.lr * scale.grad)
            self.inner.step()
        record["expected"] = torch.stack(expected)
        record["after_inner"] = torch.stack(list(model.scale.values())).detach().clone()
        self.records.append(record)

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.records[-1]["after_shared"] = torch.stack(list(model.scale.values())).detach()
        shared = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.shared_group_sizes.append(sum(id(p) in shared for p in model.scale.values()))


def test_before_step_inner_updates_and_excluded_parameters_paper_c() -> None:
    """The inner step moves each M(j) by −lr·∂L_j/∂M(j); the shared step leaves them alone
    (they are in no group of the shared optimiser) and trains the rest."""
    model = SeamModel()
    hook = InnerScaleUpdates(model, lr=0.5)
    start = _copy(model)
    _fit(_config(epochs=1), [hook], model)
    assert len(hook.records) == STEPS_PER_EPOCH
    for record in hook.records:
        assert not torch.equal(record["after_inner"], record["before"])
        assert torch.equal(record["after_inner"], record["expected"])
        assert torch.equal(record["after_shared"], record["after_inner"])
    assert hook.shared_group_sizes == [0] * STEPS_PER_EPOCH
    assert not torch.equal(start["branches.0.weight"], model.branches[0].weight)


# --- 4. per-task gradient masks (paper E, §3) ----------------------------------------------------
class RowMask(Hooks):
    """Masks the first four rows of branch 0's weight out of task a's gradient."""

    def __init__(self, task: str = "a", name: str = "branches.0.weight") -> None:
        self.task, self.name = task, name

    def task_gradient_masks(self, model: nn.Module) -> dict[str, dict[str, Tensor]]:
        mask = torch.ones(8, 1)
        mask[:4] = 0.0
        return {self.task: {self.name: mask}}


def test_task_gradient_masks_mask_each_weighted_task_gradient_before_the_sum() -> None:
    """g = m_a ⊙ ∇(2 L_a) + ∇(0.5 L_b): on the masked rows task b's gradient alone, elsewhere
    the sum; the log is the balancer's."""
    data, tasks = SeamData(BATCH, 1), _tasks()
    batch = data.batch(torch.arange(BATCH))
    model = SeamModel()
    weight = model.branches[0].weight
    balancer = Balancer(FixedWeights({"a": 2.0, "b": 0.5}))
    g_a, g_b = (
        torch.autograd.grad(w * tasks[n].loss(model(batch["image"])[n], batch[n]).mean(), weight)[0]
        for n, w in (("a", 2.0), ("b", 0.5))
    )
    assert g_a[:4].abs().sum() > 0  # the mask has something to remove
    plain_log = train_step(model, tasks, batch, balancer, torch.optim.SGD(model.parameters(), 0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # leaves the weights as they are
    log = train_step(model, tasks, batch, balancer, optimizer, [RowMask()])
    assert torch.equal(weight.grad[:4], g_b[:4])
    assert torch.equal(weight.grad[4:], g_a[4:] + g_b[4:])
    assert log == plain_log


@pytest.mark.parametrize(
    ("hook", "balancer", "message"),
    [
        (RowMask(), create_balancer("pcgrad", NAMES), "gradient='sum'"),
        (RowMask(task="c"), create_balancer("equal", NAMES), "unknown task of a gradient mask"),
        (RowMask(name="trunk.weight"), create_balancer("equal", NAMES), "'trunk.weight', not"),
    ],
)
def test_task_gradient_masks_errors(hook: Hooks, balancer: Balancer, message: str) -> None:
    model, data = SeamModel(), SeamData(BATCH, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(ConfigError, match=message):
        train_step(model, _tasks(), data.batch(torch.arange(BATCH)), balancer, optimizer, [hook])


# --- 5. per-task optimiser state (paper E, App. A.2) ---------------------------------------------
def _task_of(step: int) -> str:
    return "b" if step % 3 == 0 else "a"


class OneTaskPerStep(Hooks):
    """Trains task a, a, b, a, a, b, ... with one SGD momentum per task."""

    per_task_optimizer_state = True

    def step_task(self, step: int) -> str | None:
        return _task_of(step)


def _momenta(optimizer_state: dict[str, Any]) -> list[Tensor]:
    return [
        optimizer_state["state"][k]["momentum_buffer"] for k in sorted(optimizer_state["state"])
    ]


def test_per_task_optimizer_state_matches_one_torch_sgd_per_task(tmp_path: Path) -> None:
    """Each task's momentum buffers equal those of a hand-run torch SGD that takes only that
    task's steps (at the scheduled lr, halved after epoch 1); the two differ."""
    ckpt = tmp_path / "run.pt"
    config = _config(
        momentum=0.9, lr_schedule="step", lr_step_size=1, lr_factor=0.5, checkpoint_path=str(ckpt)
    )
    torch.manual_seed(0)
    trained = _fit(config, [OneTaskPerStep()]).model
    saved = torch.load(ckpt, weights_only=True)["task_optimizers"]

    torch.manual_seed(0)
    model, data, tasks = SeamModel(), SeamData(N_TRAIN, 1), _tasks()
    by_task = {n: torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) for n in NAMES}
    step = 0
    for epoch in (1, 2):
        for index in epoch_batches(N_TRAIN, BATCH, config.seed, epoch):
            step += 1
            name, batch = _task_of(step), data.batch(index)
            optimizer = by_task[name]
            optimizer.param_groups[0]["lr"] = 0.1 * 0.5 ** (epoch - 1)
            optimizer.zero_grad()
            tasks[name].loss(model(batch["image"])[name], batch[name]).mean().backward()
            optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key
    for name in NAMES:
        for ours, theirs in zip(
            _momenta(saved[name]), _momenta(by_task[name].state_dict()), strict=True
        ):
            assert torch.equal(ours, theirs)
    assert not torch.allclose(_momenta(saved["a"])[0], _momenta(saved["b"])[0])


def test_per_task_optimizer_state_resumes_exactly(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "run.pt")
    config = _config(momentum=0.9, epochs=3, checkpoint_path=ckpt)
    torch.manual_seed(0)
    full = _fit(config, [OneTaskPerStep()])
    torch.manual_seed(0)
    _fit(dataclasses.replace(config, max_steps=STEPS_PER_EPOCH), [OneTaskPerStep()])
    with pytest.raises(ConfigError, match="per_task_optimizer_state"):
        _fit(dataclasses.replace(config, resume=True), [Hooks()])
    resumed = _fit(dataclasses.replace(config, resume=True), [OneTaskPerStep()])
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    pd.testing.assert_frame_equal(full.history, resumed.history)


class PickTask(Hooks):
    """Selects the given task at every step."""

    def __init__(self, task: str) -> None:
        self.task = task

    def step_task(self, step: int) -> str | None:
        return self.task


def test_step_task_must_select_one_known_task() -> None:
    with pytest.raises(ConfigError, match=r"selected \['a', 'b'\] at step 1"):
        _fit(_config(epochs=1), [PickTask("a"), PickTask("b")])
    with pytest.raises(ConfigError, match=r"selected \['c'\]"):
        _fit(_config(epochs=1), [PickTask("c")])
    model = SeamModel()
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=0.1) for name in NAMES}
    batch = SeamData(BATCH, 1).batch(torch.arange(BATCH))
    with pytest.raises(ConfigError, match="need a hook's step_task"):
        train_step(model, _tasks(), batch, create_balancer("equal", NAMES), optimizers)


class ReversedBatches(Hooks):
    """Trains each epoch on its samples in reverse order, batch by batch; records the
    first sample of every batch the loop hands the model."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count
        self.seen: list[float] = []

    def epoch_batches(self, dataset: Any, batch_size: int, seed: int, epoch: int) -> Any:
        batches = list(torch.arange(len(dataset) - 1, -1, -1).split(batch_size))
        return batches[: self.count] if self.count is not None else batches

    def before_step(self, model: nn.Module, batch: Any, step: int) -> None:
        self.seen.append(float(batch["image"][0, 0]))


def test_a_hooks_epoch_batches_replace_the_shuffled_ones_and_must_match_their_count() -> None:
    hook = ReversedBatches()
    _fit(_config(epochs=1), [hook])
    images = SeamData(N_TRAIN, 1).tensors["image"]
    expected = [float(images[N_TRAIN - 1 - k * BATCH, 0]) for k in range(STEPS_PER_EPOCH)]
    assert hook.seen == expected
    shuffled = epoch_batches(N_TRAIN, BATCH, 0, 1)
    assert hook.seen != [float(images[int(b[0]), 0]) for b in shuffled]
    with pytest.raises(ConfigError, match=r"ReversedBatches.epoch_batches gave 3 batches"):
        _fit(_config(epochs=1), [ReversedBatches(count=STEPS_PER_EPOCH - 1)])


# --- 2. phases (paper D, §3.2) -------------------------------------------------------------------
class FreezeArch(Hooks):
    """Warm-up and fine-tune: the architecture weights are not trained."""

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [model.arch]


class SearchArch(Hooks):
    """Search: the architecture weights train at lr 0.5 under an L1 "sparsity" loss."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"name": "arch", "params": [model.arch], "lr": 0.5}]

    def extra_loss(self, model: nn.Module, batch: Any, preds: Any) -> Tensor | None:
        return 0.1 * model.arch.abs().sum()


class Snapshots(Hooks):
    """Copies the model before its first step and at every epoch end; logs the default lr."""

    def __init__(self) -> None:
        self.start: dict[str, Tensor] = {}
        self.end: dict[str, Tensor] = {}

    def before_step(self, model: nn.Module, batch: Any, step: int) -> None:
        if step == 1:
            self.start = _copy(model)

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        self.end = _copy(model)
        trainer_state.log("lr", trainer_state.optimizer.param_groups[0]["lr"], split="method")


def _phases() -> tuple[list[Phase], dict[str, Snapshots]]:
    snaps = {name: Snapshots() for name in ("warmup", "search", "finetune")}
    phases = [
        Phase("warmup", 2, [FreezeArch(), snaps["warmup"]]),
        Phase("search", 2, [SearchArch(), snaps["search"]], overrides={"lr": 0.05}),
        Phase(
            "finetune",
            1,
            [FreezeArch(), snaps["finetune"]],
            rewind_to="warmup",
            rewind_keep=("arch",),
        ),
    ]
    return phases, snaps


def _fit_phases(config: TrainConfig, phases: list[Phase], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return fit_phases(
        SeamModel(),
        _tasks(),
        SeamData(N_TRAIN, 1),
        SeamData(8, 2),
        create_balancer("equal", NAMES),
        config,
        phases,
    )


def test_phases_warm_up_search_fine_tune_with_a_rewind_paper_d() -> None:
    """Warm-up keeps α fixed, search trains it (at its own lr, the network at the phase's lr),
    fine-tune starts from the warm-up's network weights with the searched α; the history has
    a phase column; the same seed gives the same numbers."""
    phases, snaps = _phases()
    result = _fit_phases(_config(), phases)
    warmup, search, finetune = snaps["warmup"], snaps["search"], snaps["finetune"]
    assert torch.equal(warmup.end["arch"], torch.zeros(2))
    assert not torch.equal(search.end["arch"], warmup.end["arch"])
    assert not torch.equal(search.end["branches.0.weight"], warmup.end["branches.0.weight"])
    for key, value in finetune.start.items():
        assert torch.equal(value, (search if key == "arch" else warmup).end[key]), key
    assert torch.equal(result.model.arch, search.end["arch"])  # still frozen in fine-tune

    history = result.history
    assert tuple(history.columns) == ("phase", *HISTORY_COLUMNS)
    assert list(dict.fromkeys(history["phase"])) == ["warmup", "search", "finetune"]
    assert history.groupby("phase", sort=False)["epoch"].max().tolist() == [2, 2, 1]
    assert history.query("metric == 'lr'")["value"].tolist() == [0.1, 0.1, 0.05, 0.05, 0.1]
    assert list(result.phases) == ["warmup", "search", "finetune"] and not result.interrupted
    assert "extra_loss" in set(history.query("phase == 'search'")["metric"])

    again = _fit_phases(_config(), _phases()[0])
    pd.testing.assert_frame_equal(history, again.history)
    other = _fit_phases(_config(seed=1), _phases()[0])
    assert not history["value"].equals(other.history["value"])


def test_phases_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Interrupted after the first search epoch, resumed: a checkpoint per phase, the finished
    warm-up is skipped (and still the rewind's source), the result is identical."""
    full = _fit_phases(_config(), _phases()[0])
    ckpt = str(tmp_path / "run.pt")
    cut = _fit_phases(_config(checkpoint_path=ckpt, max_steps=3 * STEPS_PER_EPOCH), _phases()[0])
    assert cut.interrupted and list(cut.phases) == ["warmup", "search"]
    assert [r.steps for r in cut.phases.values()] == [2 * STEPS_PER_EPOCH, STEPS_PER_EPOCH]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.search.pt", "run.warmup.pt"]
    resumed = _fit_phases(_config(checkpoint_path=ckpt, resume=True), _phases()[0], seed=7)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    pd.testing.assert_frame_equal(full.history, resumed.history)


class KeepBestBranch:
    """A fine-tune's ``prepare`` (paper D's reduction in miniature): the branch of largest
    searched α stays, alone, and α becomes a single fixed entry -- a change of structure, so a
    checkpoint of the fine-tune loads only into a prepared model.  Records each call's model."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Tensor]] = []

    def __call__(self, model: nn.Module) -> None:
        self.calls.append(_copy(model))
        best = int(model.arch.argmax())
        model.branches = nn.ModuleList([model.branches[best]])
        model.arch = nn.Parameter(torch.zeros(1))


def _prepared_phases() -> tuple[list[Phase], dict[str, Snapshots], KeepBestBranch]:
    phases, snaps = _phases()
    prepare = KeepBestBranch()
    phases[-1] = dataclasses.replace(phases[-1], prepare=prepare)
    return phases, snaps, prepare


def test_phase_prepare_runs_after_the_rewind_and_before_the_phase_trains() -> None:
    """The fine-tune's prepare sees the rewound model (warm-up weights, searched α) once; the
    fine-tune's first step and its optimiser see the prepared structure."""
    phases, snaps, prepare = _prepared_phases()
    result = _fit_phases(_config(), phases)
    warmup, search, finetune = snaps["warmup"], snaps["search"], snaps["finetune"]
    assert len(prepare.calls) == 1
    for key, value in prepare.calls[0].items():
        assert torch.equal(value, (search if key == "arch" else warmup).end[key]), key
    best = int(search.end["arch"].argmax())
    assert "branches.1.weight" not in finetune.start and finetune.start["arch"].shape == (1,)
    assert torch.equal(finetune.start["branches.0.weight"], warmup.end[f"branches.{best}.weight"])
    assert not torch.equal(finetune.end["branches.0.weight"], finetune.start["branches.0.weight"])
    assert len(result.model.branches) == 1


def test_phase_prepare_runs_again_on_resume_before_the_checkpoint_is_loaded(
    tmp_path: Path,
) -> None:
    """Interrupted inside the prepared fine-tune, then resumed with a fresh model: the
    warm-up and search are skipped (reloaded), the prepare runs on the reloaded searched model
    before the fine-tune's checkpoint (of the prepared structure) loads; the result equals an
    uninterrupted run.  Resuming the finished run leaves the model prepared, as at its end."""
    ckpt, finetune_epochs = str(tmp_path / "run.pt"), 2

    def phases() -> tuple[list[Phase], KeepBestBranch]:
        listed, _, prepare = _prepared_phases()
        listed[-1] = dataclasses.replace(listed[-1], epochs=finetune_epochs)
        return listed, prepare

    full = _fit_phases(_config(), phases()[0])
    cut = _fit_phases(_config(checkpoint_path=ckpt, max_steps=5 * STEPS_PER_EPOCH), phases()[0])
    assert cut.interrupted and list(cut.phases) == ["warmup", "search", "finetune"]
    assert (tmp_path / "run.finetune.pt").exists()
    for final_run in (False, True):
        listed, prepare = phases()
        resumed = _fit_phases(_config(checkpoint_path=ckpt, resume=True), listed, seed=7)
        assert len(prepare.calls) == 1 and prepare.calls[0]["arch"].shape == (2,)
        assert len(resumed.model.branches) == 1 and not resumed.interrupted
        for key, value in full.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), (final_run, key)
        pd.testing.assert_frame_equal(full.history, resumed.history)


def test_phase_prepare_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="prepare must be a callable"):
        _fit_phases(_config(), [Phase("x", 1, prepare="reduce")])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ([], "at least one phase"),
        ([Phase("a b", 1)], "phase name 'a b'"),
        ([Phase("x", 1), Phase("x", 1)], "two phases are named 'x'"),
        ([Phase("x", 1, rewind_to="y"), Phase("y", 1)], "not an earlier phase"),
        ([Phase("x", 1, overrides={"epochs": 3, "lr": 1.0})], r"cannot override \['epochs'\]"),
        ([Phase("x", 1, overrides={"learning_rate": 1.0})], "learning_rate"),
        ([Phase("x", 0)], "epochs"),
    ],
)
def test_phase_validation(phases: list[Phase], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _fit_phases(_config(), phases)
