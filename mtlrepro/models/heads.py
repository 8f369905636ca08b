"""Task heads: a dense per-pixel head on decoder features and a classification head on pooled
encoder features; :func:`make_head` picks one from a :class:`~mtlrepro.tasks.TaskSpec`."""

from __future__ import annotations

from torch import Tensor, nn

from mtlrepro.tasks import TaskSpec


class DenseHead(nn.Sequential):
    """conv3x3 -> BN -> ReLU -> conv1x1: per-pixel raw outputs at the input resolution.

    MTAN's prediction layer is conv3x3 -> conv1x1 with nothing between them (so the two collapse
    into one linear 3x3 conv); here a BN and a ReLU sit between them, which makes the head a real
    two-layer per-task network (the usual choice in later SegNet MTL code).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Args:
        in_channels: channels of the shared feature map (and of the hidden layer).
        out_channels: raw output channels (classes, or 1 / 3 for depth / normals).
        """
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )


class ClassificationHead(nn.Module):
    """Global average pool -> (FC -> ReLU, optional) -> FC: logits of shape (B, classes)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int | None = None) -> None:
        """Args:
        in_channels: channels of the feature map that is pooled.
        num_classes: number of output logits.
        hidden: width of an optional hidden FC layer; ``None`` for a single linear layer.
        """
        super().__init__()
        layers: list[nn.Module] = []
        if hidden is not None:
            layers += [nn.Linear(in_channels, hidden), nn.ReLU(inplace=True)]
            in_channels = hidden
        layers.append(nn.Linear(in_channels, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """Args:
        features: feature map, shape (B, C, h, w).

        Returns:
            Logits, shape (B, num_classes).
        """
        return self.mlp(features.mean(dim=(2, 3)))


def make_head(
    spec: TaskSpec, dense_channels: int, pooled_channels: int, hidden: int | None = None
) -> nn.Module:
    """The head for one task: :class:`DenseHead` for dense kinds, else
    :class:`ClassificationHead`.

    Args:
        spec: the task; ``spec.out_channels`` sets the head's output channels.
        dense_channels: channels of the decoder feature map (input of dense heads).
        pooled_channels: channels of the encoder bottleneck (input of classification heads).
        hidden: hidden width of classification heads (``None``: one FC layer).
    """
    if spec.dense:
        return DenseHead(dense_channels, spec.out_channels)
    return ClassificationHead(pooled_channels, spec.out_channels, hidden)
