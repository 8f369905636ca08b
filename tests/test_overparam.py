"""Paper C's method: factorised layers, contraction, Alg. 1's phases, Frobenius decay, RepVGG
and ExpandNet merges."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mtlrepro.balancing import create_balancer
from mtlrepro.compress import conv_flops
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.methods.overparam import (
    ExpandConv,
    FactorisedLayer,
    OverparamTraining,
    RepVGGConv,
    composition_macs,
    contract,
    factorise,
    frobenius_decay_gradients,
    overparameterise,
    select_layers,
)
from mtlrepro.models import count_parameters, create_model
from mtlrepro.tasks import make_tasks
from mtlrepro.train import TrainConfig, fit, train_step

TASKS = ("segmentation", "depth", "normal")

CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=k, stride=s, padding=p, bias=b)
    for k, s, p, b in [
        (1, 2, 0, False),
        (1, 1, 0, False),
        (3, 1, 1, False),
        (3, 2, 1, True),
        (5, 1, 2, True),
        (3, 1, 0, False),
        (5, 2, 0, True),
        ((3, 1), 1, (1, 0), False),
    ]
]


def _perturb(layer: FactorisedLayer, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for diagonal in layer.diagonals.values():
            diagonal.mul_(1 + 0.3 * torch.randn(diagonal.shape, generator=generator))


@pytest.mark.parametrize("options", CONVS, ids=str)
def test_a_spectrally_initialised_factorised_conv_computes_what_the_conv_computes(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(**options)
    layer = FactorisedLayer(conv, TASKS, init="spectral")
    x = torch.randn(2, 4, 9, 11)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_a_spectrally_initialised_factorised_linear_layer_computes_what_it_computes():
    torch.manual_seed(0)
    linear = nn.Linear(7, 5)
    layer = FactorisedLayer(linear, TASKS, init="spectral")
    x = torch.randn(3, 7)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    assert layer.U.shape == (5, 5) and layer.V.shape == (5, 7)


@pytest.mark.parametrize("options", CONVS, ids=str)
@pytest.mark.parametrize("variant", ["fac", "uvshare", "mshare"])
def test_contraction_is_exact_and_has_the_plain_layers_parameters_and_flops(options, variant):
    torch.manual_seed(1)
    conv = nn.Conv2d(**options)
    m, n = options["out_channels"] * 5, 5 * options["in_channels"]  # rank above the minimum
    layer = FactorisedLayer(conv, TASKS, variant=variant, rank=max(m, n), init="layer")
    _perturb(layer)
    plain = layer.contracted()
    x = torch.randn(2, 4, 10, 12)
    torch.testing.assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-6)
    assert count_parameters(plain) == count_parameters(conv)
    assert conv_flops(plain, (1, 4, 10, 12)) == conv_flops(conv, (1, 4, 10, 12))
    assert type(plain) is nn.Conv2d


def test_linear_contraction_is_exact():
    torch.manual_seed(2)
    layer = FactorisedLayer(nn.Linear(6, 4), TASKS, rank=9)
    _perturb(layer)
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer.contracted()(x), layer(x), rtol=1e-5, atol=1e-6)


def test_the_core_is_the_hadamard_product_of_the_task_diagonals():
    layer = FactorisedLayer(nn.Conv2d(3, 4, 3, padding=1), TASKS)
    _perturb(layer, 3)
    diagonals = [layer.diagonals[t] for t in TASKS]
    product = diagonals[0] * diagonals[1] * diagonals[2]
    torch.testing.assert_close(layer.core(), product)
    # Eq. 2: the Hadamard product equals the matrix product of the diagonal matrices
    torch.testing.assert_close(
        torch.diag(layer.core()),
        torch.diag(diagonals[0]) @ torch.diag(diagonals[1]) @ torch.diag(diagonals[2]),
    )
    torch.testing.assert_close(layer.matrix(), layer.U @ torch.diag(product) @ layer.V)


@pytest.mark.parametrize("variant", ["fac", "fac_noiter", "uvshare", "mshare"])
def test_frobenius_decay_gradients_equal_autograd_of_half_the_squared_norm(variant):
    torch.manual_seed(4)
    layer = FactorisedLayer(nn.Conv2d(3, 5, 3, padding=1), TASKS, variant=variant)
    _perturb(layer, 5)
    params = [layer.U, layer.V, *layer.diagonals.values()]
    expected = torch.autograd.grad(0.5 * layer.matrix().pow(2).sum(), params)
    got = frobenius_decay_gradients(layer)
    for param, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(got[param], grad, rtol=1e-4, atol=1e-6)


def test_split_variants_give_each_task_an_even_disjoint_block_of_components():
    layer = FactorisedLayer(nn.Conv2d(3, 4, 3, padding=1), TASKS, variant="mshare", rank=10)
    masks = [layer.task_factors(t)[0][1] for t in TASKS]
    assert [int(m.sum()) for m in masks] == [4, 3, 3]
    torch.testing.assert_close(sum(masks), torch.ones(10))
    uv = FactorisedLayer(nn.Conv2d(3, 4, 3, padding=1), TASKS, variant="uvshare", rank=9)
    (u, u_mask), (v, v_mask) = uv.task_factors("depth")
    assert u is uv.U and v is uv.V and u_mask.shape == (1, 9) and v_mask.shape == (9, 1)
    assert list(uv.diagonals) == ["all"]
    assert FactorisedLayer(nn.Linear(3, 3), TASKS, variant="fac_noiter").task_factors("depth") == []


def _smoke_setup(variant: str = "fac"):
    data = get_dataset("scenes", "train", "smoke")
    torch.manual_seed(0)
    model = create_model("segnet", data.task_specs, profile="smoke")
    factorise(model, "shared", list(data.task_specs), variant=variant, init="spectral")
    tasks = make_tasks(data.task_specs)
    return data, model, tasks


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}


@pytest.mark.parametrize("variant", ["fac", "mshare", "uvshare"])
def test_alg1_step_one_updates_only_the_task_factors_and_step_two_never_touches_them(variant):
    data, model, tasks = _smoke_setup(variant)
    hook = OverparamTraining(tasks, data, lr=1e-2, subset_batch_size=4, seed=0)
    balancer = create_balancer("equal", list(tasks))
    excluded = {id(p) for p in hook.excluded_parameters(model)}
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad and id(p) not in excluded], lr=1e-2
    )
    model.train()
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    task_factor_names = {n for n, p in model.named_parameters() if id(p) in excluded}
    assert task_factor_names
    before = _snapshot(model)
    buffers = [b.clone() for b in model.buffers()]
    hook.before_step(model, batch, 1)
    assert _changed(before, model) == task_factor_names
    for saved, buffer in zip(buffers, model.buffers(), strict=True):  # BN statistics restored
        torch.testing.assert_close(saved, buffer)
    after_step_one = _snapshot(model)
    hook.before_step = lambda *args: None  # step 2 alone
    train_step(model, tasks, batch, balancer, optimizer, hooks=[hook])
    changed = _changed(after_step_one, model)
    assert changed and not changed & task_factor_names


@pytest.mark.parametrize("variant", ["fac", "mshare", "uvshare"])
def test_alg1_task_j_moves_only_its_own_factors(variant):
    data, model, tasks = _smoke_setup(variant)
    hook = OverparamTraining({"depth": tasks["depth"]}, data, lr=1e-2, subset_batch_size=4)
    with pytest.raises(ConfigError, match="tasks"):
        hook.excluded_parameters(model)
    hook = OverparamTraining(tasks, data, lr=1e-2, subset_batch_size=4)
    hook.excluded_parameters(model)
    hook._optimizers = {"depth": hook._optimizers["depth"]}  # run only task depth's update
    layers = [m for m in model.modules() if isinstance(m, FactorisedLayer)]
    before = [
        (layer.U.detach().clone(), layer.V.detach().clone(), layer.core().detach().clone())
        for layer in layers
    ]
    model.train()
    hook.before_step(model, {}, 1)
    moved_any = False
    for layer, (u, v, core) in zip(layers, before, strict=True):
        # components whose factors moved: columns of U, rows of V, entries of the core
        moved = (layer.U != u).any(0) | (layer.V != v).any(1) | (layer.core() != core)
        moved_any |= bool(moved.any())
        if variant == "fac":
            assert torch.equal(layer.U, u) and torch.equal(layer.V, v)
            assert all(
                torch.equal(layer.diagonals[t], torch.ones_like(core))
                for t in ("segmentation", "normal")
            )
        else:
            assert set(layer.component_task[moved].tolist()) <= {1}  # depth is task 1
    assert moved_any


def test_fac_trains_with_fit_and_stays_contractible():
    data, model, tasks = _smoke_setup("fac")
    config = TrainConfig(profile="smoke", epochs=2, batch_size=8, progress=False, seed=0)
    hook = OverparamTraining(tasks, data, lr=config.lr, subset_batch_size=2)
    result = fit(
        model, tasks, data, None, create_balancer("equal", list(tasks)), config, hooks=[hook]
    )
    assert len(result.history) > 0
    first = next(m for m in model.modules() if isinstance(m, FactorisedLayer))
    assert not torch.equal(first.diagonals["segmentation"], first.diagonals["depth"])
    model.eval()
    images = torch.stack([data[i]["image"] for i in range(4)])
    with torch.no_grad():
        before = model(images)
    macs = composition_macs(model)
    contract(model)
    assert macs > 0 and composition_macs(model) == 0
    with torch.no_grad():
        after = model(images)
    for task in before:
        torch.testing.assert_close(after[task], before[task], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["segnet", "mtan"])
def test_the_contracted_network_has_the_baselines_parameters_and_flops(name):
    specs = get_dataset("scenes", "train", "smoke").task_specs
    baseline = create_model(name, specs, profile="smoke")
    model = copy.deepcopy(baseline)
    names = factorise(model, "shared", list(specs))
    assert names and count_parameters(model) > count_parameters(baseline)
    contract(model)
    assert count_parameters(model) == count_parameters(baseline)
    shape = (1, 3, 24, 32)
    assert conv_flops(model, shape) == conv_flops(baseline, shape)


def test_selections_pick_the_papers_layers():
    specs = get_dataset("scenes", "train", "smoke").task_specs
    model = create_model("segnet", specs, profile="smoke")
    shared = select_layers(model, "shared")
    assert shared and all(n.startswith("backbone.") for n in shared)
    all_but_last = select_layers(model, "all_but_last")
    assert set(shared) < set(all_but_last)
    assert not any(n.endswith(".3") and n.startswith("heads.") for n in all_but_last)
    deeplab = create_model("deeplab_resnet", specs, profile="smoke")
    conv1 = select_layers(deeplab, "bottleneck_conv1")
    assert conv1 and all(n.endswith(".conv1") for n in conv1)
    # DeepLabv3-ResNet50 (§3.2): spectral factorisation starts from the layer's own function
    deeplab.eval()
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        before = deeplab(x)
        factorise(deeplab, "bottleneck_conv1", list(specs), init="spectral")
        after = deeplab(x)
    for task in before:
        torch.testing.assert_close(after[task], before[task], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_repvgg_and_expandnet_merge_exactly(stride):
    torch.manual_seed(5)
    conv = nn.Conv2d(6, 6, 3, stride=stride, padding=1, bias=False)
    for block in (RepVGGConv(conv), ExpandConv(conv, expansion=2)):
        block.train()
        for _ in range(3):  # move the BN statistics away from their initial values
            block(torch.randn(4, 6, 8, 8) * 2 + 1)
        for module in block.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight)
                nn.init.normal_(module.bias)
        block.eval()
        x = torch.randn(2, 6, 9, 10)
        merged = block.contracted()
        torch.testing.assert_close(merged(x), block(x), rtol=1e-4, atol=1e-5)
        assert merged.weight.shape == conv.weight.shape


def test_overparameterised_segnet_merges_back_to_the_plain_architecture():
    specs = get_dataset("scenes", "train", "smoke").task_specs
    segmentation = {"segmentation": specs["segmentation"]}
    for method, options in (("repvgg", {}), ("expandnet", {"expansion": 2})):
        model = create_model("segnet", segmentation, profile="smoke")
        overparameterise(model, method, "all_but_last", ["segmentation"], **options)
        model.eval()
        x = torch.rand(2, 3, 24, 32)
        with torch.no_grad():
            before = model(x)["segmentation"]
            contract(model)
            after = model(x)["segmentation"]
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_bad_input_stops_with_a_clear_message():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    with pytest.raises(ConfigError, match=r"rank r=10 .* below the minimum min\(m, n\) = 12"):
        FactorisedLayer(conv, TASKS, rank=10)
    with pytest.raises(ConfigError, match="unknown factorisation variant 'vshare'"):
        FactorisedLayer(conv, TASKS, variant="vshare")
    with pytest.raises(ConfigError, match="unknown factor initialisation"):
        FactorisedLayer(conv, TASKS, init="orthogonal")
    with pytest.raises(ConfigError, match="spectral initialisation .* needs rank r = min"):
        FactorisedLayer(conv, TASKS, rank=20, init="spectral")
    with pytest.raises(ConfigError, match="grouped convolution"):
        FactorisedLayer(nn.Conv2d(4, 6, 3, groups=2), TASKS)
    specs = get_dataset("scenes", "train", "smoke").task_specs
    model = create_model("segnet", specs, profile="smoke")
    with pytest.raises(ConfigError, match="cannot be factorised: a BatchNorm2d"):
        factorise(model, ["backbone.encoder.0.0.1"], TASKS)
    with pytest.raises(ConfigError, match="no layer 'backbone.nope'"):
        factorise(model, ["backbone.nope"], TASKS)
    with pytest.raises(ConfigError, match="unknown layer selection 'everything'"):
        factorise(model, "everything", TASKS)
    with pytest.raises(ConfigError, match="unknown over-parameterisation"):
        overparameterise(model, "dropconnect", "shared", TASKS)
    with pytest.raises(ConfigError, match="RepVGG branches"):
        RepVGGConv(nn.Conv2d(4, 4, 3, padding=0))
