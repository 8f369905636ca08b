"""Models: the SegNet backbone, task heads and the shared-bottom multi-task model.

Build one by name with :func:`create_model`; ``MODELS.names()`` lists the registered names.
Importing this package registers every model (explicit imports, below).
"""

from mtlrepro.models.heads import ClassificationHead, DenseHead, make_head
from mtlrepro.models.multitask import (
    MODELS,
    MultiTaskModel,
    TaskModuleDict,
    count_parameters,
    create_model,
)
from mtlrepro.models.segnet import MTAN_CONVS_PER_STAGE, MTAN_WIDTHS, SegNet, SegNetConfig

__all__ = [
    "MODELS",
    "MTAN_CONVS_PER_STAGE",
    "MTAN_WIDTHS",
    "ClassificationHead",
    "DenseHead",
    "MultiTaskModel",
    "SegNet",
    "SegNetConfig",
    "TaskModuleDict",
    "count_parameters",
    "create_model",
    "make_head",
]
