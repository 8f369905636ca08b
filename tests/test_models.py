"""Tests of mtlrepro.models: registry, shapes, gradients, parameter bookkeeping, validation."""

from __future__ import annotations

import pytest
import torch
from task_sets import CLASSIFICATION_TASKS, MIXED_TASKS, NYU_TASKS
from torch import nn

from mtlrepro.config import ConfigError
from mtlrepro.models import (
    MODELS,
    MTAN_CONVS_PER_STAGE,
    MTAN_WIDTHS,
    ClassificationHead,
    DenseHead,
    MultiTaskModel,
    SegNet,
    count_parameters,
    create_model,
)
from mtlrepro.models.segnet import ConvBNReLU
from mtlrepro.tasks import TaskSpec

TASK_SETS = {
    "nyu": NYU_TASKS,
    "mixed": MIXED_TASKS,
    "classification": CLASSIFICATION_TASKS,
    "single": NYU_TASKS[:1],
}
TINY = {"widths": (4, 8, 8), "convs_per_stage": 2}
# Per registered model: the smallest configuration and an input size it accepts (dilated-ResNet
# heads upsample by the output stride 8, so its inputs must be divisible by 8).
TINY_MODELS = {
    "cross_stitch": (TINY, (12, 10)),
    "mtan": (TINY, (12, 10)),
    "segnet": (TINY, (12, 10)),  # 12x10 is not divisible by 2**3 = 8: SegNet takes any size
    "deeplab_resnet": ({"profile": "smoke"}, (16, 24)),
}


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from the same torch seed."""
    torch.manual_seed(0)


def expected_shape(spec: TaskSpec, batch: int, height: int, width: int) -> tuple[int, ...]:
    """Raw output shape of a task: (B, C, H, W) for dense kinds, (B, classes) otherwise."""
    if spec.dense:
        return (batch, spec.out_channels, height, width)
    return (batch, spec.num_classes)


def conv_bn(c_in: int, c_out: int) -> int:
    """Hand count of a bias-free conv3x3 followed by BatchNorm (weight and bias)."""
    return 9 * c_in * c_out + 2 * c_out


def segnet_closed_form(widths: tuple[int, ...], convs: tuple[int, ...], outs: list[int]) -> int:
    """Closed-form parameter count of the ``segnet`` model with dense heads of ``outs`` channels.

    Encoder stage s: conv w_{s-1} -> w_s then (k_s - 1) convs w_s -> w_s (w_{-1} = 3).
    Decoder stage s: conv w_s -> u_s then (k_s - 1) convs u_s -> u_s (u_s = w_{s-1}, u_0 = w_0).
    Dense head: conv3x3 w_0 -> w_0 + BN, then conv1x1 w_0 -> o with bias.
    """
    ins = (3, *widths[:-1])
    ups = (widths[0], *widths[:-1])
    total = 0
    for c_in, w, u, k in zip(ins, widths, ups, convs, strict=True):
        total += conv_bn(c_in, w) + (k - 1) * conv_bn(w, w)
        total += conv_bn(w, u) + (k - 1) * conv_bn(u, u)
    w0 = widths[0]
    return total + sum(conv_bn(w0, w0) + w0 * o + o for o in outs)


def test_registry_holds_exactly_the_expected_models() -> None:
    registered = ["cross_stitch", "deeplab_resnet", "mtan", "segnet"]
    assert MODELS.names() == registered == sorted(TINY_MODELS)


@pytest.mark.parametrize("task_set", sorted(TASK_SETS))
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_shapes_and_gradients_for_every_task_kind(
    name: str, task_set: str
) -> None:
    specs = TASK_SETS[task_set]
    kwargs, (height, width) = TINY_MODELS[name]
    model = create_model(name, specs, **kwargs)
    batch = 3
    out = model(torch.rand(batch, 3, height, width))
    assert list(out) == [s.name for s in specs]
    for spec in specs:
        assert out[spec.name].shape == expected_shape(spec, batch, height, width)
        assert torch.isfinite(out[spec.name]).all()
    sum(o.square().mean() for o in out.values()).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 11), (16, 16), (33, 2)])
def test_segnet_returns_features_at_input_resolution_for_any_size(size: tuple[int, int]) -> None:
    net = SegNet((3, 4, 5), (1, 1, 1)).eval()
    features = net(torch.randn(2, 3, *size))
    assert features.shape == (2, 3, *size)
    bottleneck, pools = net.encode(torch.randn(2, 3, *size))
    assert bottleneck.shape[1] == net.bottleneck_channels == 5
    assert [p[1] for p in pools][0] == size


def test_unpooling_puts_each_maximum_back_where_it_was() -> None:
    # A one-stage SegNet whose convs are identities isolates the pool/unpool pair.
    net = SegNet((1,), (1,), in_channels=1).eval()
    stages = [net.encoder[0][0], net.decoder[0][0]]
    for block in stages:
        block[0].weight.data.zero_()
        block[0].weight.data[0, 0, 1, 1] = 1.0  # centre tap: identity conv
    x = torch.rand(1, 1, 5, 3) + 1.0  # positive, so ReLU is the identity too
    y = net.decode(*net.encode(x))
    pooled = nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
    # BN in eval mode with fresh statistics divides by sqrt(1 + eps): tolerance 1e-4.
    assert torch.allclose(y.sum(), pooled.sum(), rtol=1e-4)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept], rtol=1e-4)
    assert kept.sum() == pooled.numel()


def test_shared_and_task_parameters_partition_all_parameters() -> None:
    model = create_model("segnet", MIXED_TASKS, **TINY)
    groups = [model.shared_parameters()] + [model.task_parameters(t) for t in model.task_names]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)), "a parameter belongs to two groups"
    assert set(ids) == {id(p) for p in model.parameters()}
    assert all(len(group) > 0 for group in groups)


def test_task_parameters_of_unknown_task_raise_config_error() -> None:
    model = create_model("segnet", NYU_TASKS, **TINY)
    with pytest.raises(ConfigError, match="allowed: 'segmentation', 'depth', 'normal'"):
        model.task_parameters("edge")


def test_count_parameters_matches_hand_count() -> None:
    assert count_parameters(nn.Conv2d(3, 4, 3)) == 3 * 4 * 9 + 4
    assert count_parameters(ConvBNReLU(3, 4)) == 3 * 4 * 9 + 2 * 4
    shared = nn.Linear(5, 2)
    assert count_parameters(nn.Sequential(shared, shared)) == 5 * 2 + 2  # counted once
    assert count_parameters(ClassificationHead(6, 3, hidden=4)) == (6 * 4 + 4) + (4 * 3 + 3)
    assert count_parameters(DenseHead(4, 13)) == conv_bn(4, 4) + 4 * 13 + 13


def test_segnet_parameter_count_follows_the_closed_form() -> None:
    widths, convs = (4, 8, 8), (2, 3, 1)
    model = create_model("segnet", NYU_TASKS, widths=widths, convs_per_stage=convs)
    assert count_parameters(model) == segnet_closed_form(widths, convs, [13, 1, 3])


def test_full_size_mtan_segnet_matches_closed_form_and_mtan_reference() -> None:
    model = create_model("segnet", NYU_TASKS)  # defaults: MTAN widths, 2 convs per stage
    n = count_parameters(model)
    print(f"segnet, MTAN widths, 2 convs/stage, 3 NYU tasks: {n:,d} parameters")
    assert n == segnet_closed_form(MTAN_WIDTHS, (2,) * 5, [13, 1, 3]) == 16_638_865
    # MTAN's own layout (2, 2, 3, 3, 3): its single-task semantic SegNet prints
    # count/24981069 as "REL", i.e. 24,981,069 parameters.  Ours differs only by design:
    # MTAN's convs carry a bias and its head has no BN between conv3x3 and conv1x1.
    single = create_model("segnet", NYU_TASKS[:1], convs_per_stage=MTAN_CONVS_PER_STAGE)
    convs = [m for m in single.modules() if isinstance(m, nn.Conv2d) and m.bias is None]
    head_bn = 2 * MTAN_WIDTHS[0]
    mtan = count_parameters(single) + sum(c.out_channels for c in convs) - head_bn
    assert mtan == 24_981_069


def test_width_mult_scales_parameters_about_quadratically() -> None:
    widths = (16, 32, 64)
    small = count_parameters(create_model("segnet", NYU_TASKS, widths=widths, width_mult=0.5))
    large = count_parameters(create_model("segnet", NYU_TASKS, widths=widths, width_mult=1.0))
    # Conv weights scale with the square of the width; the first layer, BN and head outputs
    # only linearly, so the ratio is a little under 4 (measured 3.93).
    assert 3.8 < large / small <= 4.0


def test_width_mult_keeps_at_least_one_channel() -> None:
    model = create_model("segnet", NYU_TASKS, widths=(4, 8), width_mult=0.01)
    assert [stage[0][0].out_channels for stage in model.backbone.encoder] == [1, 1]
    out = model(torch.rand(2, 3, 8, 8))
    assert out["normal"].shape == (2, 3, 8, 8)


def test_model_normalises_its_input_with_the_configured_mean_and_std() -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 2.0, 1.0)
    model = create_model("segnet", NYU_TASKS[:1], mean=mean, std=std, **TINY)
    seen: list[torch.Tensor] = []
    model.backbone.encoder[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    images = torch.rand(2, 3, 6, 6)
    model(images)
    expected = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(seen[0], expected)


def test_default_normalisation_is_imagenet() -> None:
    model = create_model("segnet", NYU_TASKS[:1], **TINY)
    assert torch.allclose(model.input_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(model.input_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_channels_last_gives_the_same_outputs_in_standard_layout() -> None:
    fast = create_model("segnet", MIXED_TASKS, channels_last=True, **TINY)
    plain = create_model("segnet", MIXED_TASKS, channels_last=False, **TINY)
    plain.load_state_dict(fast.state_dict())
    images = torch.rand(2, 3, 9, 14)
    a, b = fast(images), plain(images)
    for name in a:
        assert a[name].is_contiguous()
        # Different memory layouts sum in a different order: float32 rounding only.
        assert torch.allclose(a[name], b[name], atol=1e-4, rtol=1e-4)
    assert all(p.is_contiguous() for p in fast.parameters())


def test_classification_only_model_has_no_decoder() -> None:
    model = create_model("segnet", CLASSIFICATION_TASKS, classifier_hidden=7, **TINY)
    assert model.backbone.decoder is None
    assert model.heads["colour"].mlp[0].out_features == 7
    assert model(torch.rand(2, 3, 8, 8))["type"].shape == (2, 3)


def test_heads_follow_task_kinds_and_order() -> None:
    model = create_model("segnet", {s.name: s for s in MIXED_TASKS}, **TINY)
    assert isinstance(model, MultiTaskModel)
    assert model.task_names == ("parts", "edge", "colour")
    assert isinstance(model.heads["parts"], DenseHead)
    assert isinstance(model.heads["edge"], DenseHead)
    assert isinstance(model.heads["colour"], ClassificationHead)
    assert model.config.stage_widths == (4, 8, 8)


def test_same_seed_builds_identical_models() -> None:
    torch.manual_seed(3)
    a = create_model("segnet", NYU_TASKS, **TINY).state_dict()
    torch.manual_seed(3)
    b = create_model("segnet", NYU_TASKS, **TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_yaml_lists_are_accepted_for_tuple_fields() -> None:
    model = create_model("segnet", NYU_TASKS, widths=[4, 8], convs_per_stage=[1, 2])
    assert model.config.widths == (4, 8)
    assert model.config.stage_convs == (1, 2)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (
            "resnet",
            {},
            "unknown model 'resnet'; allowed: 'cross_stitch', 'deeplab_resnet', 'mtan', 'segnet'",
        ),
        ("segnet", {"depth": 3}, "unknown SegNetConfig parameter 'depth'; allowed: widths"),
        ("segnet", {"width_mult": 0}, r"width_mult must be a number in \(0"),
        ("segnet", {"width_mult": -1.0}, r"width_mult must be a number in \(0"),
        ("segnet", {"width_mult": "half"}, "width_mult must be of type float"),
        ("segnet", {"widths": ()}, "at least one stage width"),
        ("segnet", {"widths": (4, 0)}, r"widths\[i\] must be an integer in \[1"),
        ("segnet", {"convs_per_stage": 0}, r"convs_per_stage must be an integer in \[1"),
        ("segnet", {"convs_per_stage": (2, 2)}, "one int or 5 ints"),
        ("segnet", {"std": (1.0, 0.0, 1.0)}, r"std\[i\] must be a number in \(0"),
        ("segnet", {"mean": (0.5, 0.5)}, "SegNetConfig.mean must be of type"),
        ("segnet", {"classifier_hidden": 0}, r"classifier_hidden must be an integer in \[1"),
    ],
)
def test_bad_model_arguments_raise_config_error(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model(name, NYU_TASKS, **kwargs)


@pytest.mark.parametrize(
    ("task_specs", "message"),
    [
        ([], "at least one task spec"),
        ([NYU_TASKS[0], NYU_TASKS[0]], "duplicate task name 'segmentation'"),
        ({"seg": NYU_TASKS[0]}, "key 'seg' differs from its spec's name 'segmentation'"),
        (["depth"], "must be TaskSpec objects"),
    ],
)
def test_bad_task_specs_raise_config_error(task_specs: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("segnet", task_specs, **TINY)  # type: ignore[arg-type]


def test_task_names_that_are_module_attributes_work_and_round_trip() -> None:
    # nn.ModuleDict refuses these keys; "type" is a real task name (vehicle type).
    specs = [TaskSpec("type", "classification", 3), TaskSpec("train", "binary")]
    model = create_model("segnet", specs, **TINY)
    assert isinstance(model.heads["type"], ClassificationHead)
    assert model.task_names == ("type", "train")
    assert len(model.task_parameters("type")) == 2
    copy = create_model("segnet", specs, **TINY)
    copy.load_state_dict(model.state_dict())
    assert "heads.type.mlp.0.weight" in model.state_dict()
    images = torch.rand(2, 3, 8, 8)
    model.eval()
    copy.eval()
    assert torch.equal(model(images)["train"], copy(images)["train"])


def test_task_name_with_a_dot_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="without '.'"):
        create_model("segnet", [TaskSpec("a.b", "classification", 2)], **TINY)


@pytest.mark.parametrize("name", ["segnet", "cross_stitch", "mtan"])
def test_segnet_models_take_their_sizes_from_a_profile_like_every_model_factory(name) -> None:
    by_profile = create_model(name, NYU_TASKS, profile="cpu")
    explicit = create_model(name, NYU_TASKS, widths=(64, 128, 256, 512), width_mult=0.25)
    assert by_profile.config == explicit.config
    assert count_parameters(by_profile) == count_parameters(explicit)
    assert create_model(name, NYU_TASKS, profile="smoke").config.stage_widths == (8, 16)
    assert create_model(name, NYU_TASKS, profile="smoke", widths=(4,)).config.widths == (4,)
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        create_model(name, NYU_TASKS, profile="gpu")
