"""Models: the SegNet and dilated-ResNet backbones, task heads and the shared-bottom model.
The cross-stitch and MTAN SegNets (``cross_stitch``, ``mtan``) sit beside the shared-bottom one.

Build one by name with :func:`create_model`; ``MODELS.names()`` lists the registered names.
Importing this package registers every model (explicit imports, below).
"""

from mtlrepro.models.cross_stitch import CrossStitchSegNet
from mtlrepro.models.deeplab import (
    DEEPLAB_PRESETS,
    ASPPHead,
    ConvFCClassificationHead,
    DeepLabConfig,
    DilatedBasicBlock,
    DilatedResNet,
    deeplab_config,
    scale_atrous_rates,
)
from mtlrepro.models.heads import ClassificationHead, DenseHead, make_head
from mtlrepro.models.mtan import AttentionMask, MTANSegNet
from mtlrepro.models.multitask import (
    MODELS,
    MultiTaskModel,
    TaskBranchModel,
    TaskModuleDict,
    count_parameters,
    create_model,
)
from mtlrepro.models.segnet import (
    MTAN_CONVS_PER_STAGE,
    MTAN_WIDTHS,
    SEGNET_PRESETS,
    SegNet,
    SegNetConfig,
    segnet_config,
)

__all__ = [
    "DEEPLAB_PRESETS",
    "MODELS",
    "MTAN_CONVS_PER_STAGE",
    "MTAN_WIDTHS",
    "ASPPHead",
    "AttentionMask",
    "CrossStitchSegNet",
    "ClassificationHead",
    "ConvFCClassificationHead",
    "DeepLabConfig",
    "DenseHead",
    "DilatedBasicBlock",
    "DilatedResNet",
    "MTANSegNet",
    "MultiTaskModel",
    "SegNet",
    "SEGNET_PRESETS",
    "SegNetConfig",
    "TaskBranchModel",
    "TaskModuleDict",
    "count_parameters",
    "create_model",
    "deeplab_config",
    "make_head",
    "scale_atrous_rates",
    "segnet_config",
]
