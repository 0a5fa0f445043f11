"""adaptive_focal: focal loss whose gamma adjusts itself during training.

The core is an exact, fast focal loss for sigmoid and softmax outputs (:func:`sigmoid_focal_loss`,
:func:`softmax_focal_loss`, :class:`FocalLoss`) that accepts gamma as a float, a tensor (per class, per sample,
per element), a :class:`GammaTable`, a :class:`FocalMixture` or an :class:`AsymmetricGamma`, and can return
the batch's difficulty statistics (:class:`BatchStats`) computed in the same pass. Optional integrations (W&B,
Optuna, Lightning, Transformers) are imported only when used.

Example:
    >>> import torch
    >>> import adaptive_focal as af
    >>> logits, target = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0])
    >>> ce = torch.nn.functional.cross_entropy(logits, target)
    >>> bool(torch.isclose(af.softmax_focal_loss(logits, target, gamma=0.0), ce))  # gamma = 0 is cross-entropy
    True
    >>> bool(af.softmax_focal_loss(logits, target, gamma=2.0) < ce)  # a well-classified sample counts less
    True
"""

from . import metrics
from .functional import class_balanced_weights, sigmoid_focal_loss, softmax_focal_loss
from .gamma_forms import AsymmetricGamma, FocalMixture, GammaForm, GammaTable
from .loss import FocalLoss
from .policies import (  # the policies register themselves on import
    FLSD53,
    AdaFocal,
    AdaptiveAsymmetry,
    AutomatedGamma,
    BanditGamma,
    Categorical,
    ClasswiseAdaFocal,
    ConstantGamma,
    CosineGamma,
    CyclicalFocal,
    EqualizedFocal,
    ExponentialGamma,
    Float,
    FLSc531,
    GammaNet,
    GammaPolicy,
    HypergradientGamma,
    Int,
    LinearGamma,
    PIGamma,
    RunContext,
    SequentialGamma,
    StepGamma,
    create_policy,
    list_policies,
    policy_class,
    register_policy,
)
from .stats import BatchStats

__version__ = "0.1.0"

__all__ = [
    "AdaFocal",
    "AdaptiveAsymmetry",
    "AsymmetricGamma",
    "AutomatedGamma",
    "BanditGamma",
    "BatchStats",
    "Categorical",
    "ClasswiseAdaFocal",
    "ConstantGamma",
    "CosineGamma",
    "CyclicalFocal",
    "EqualizedFocal",
    "ExponentialGamma",
    "FLSD53",
    "FLSc531",
    "Float",
    "FocalLoss",
    "FocalMixture",
    "GammaForm",
    "GammaNet",
    "GammaPolicy",
    "GammaTable",
    "HypergradientGamma",
    "Int",
    "LinearGamma",
    "PIGamma",
    "RunContext",
    "SequentialGamma",
    "StepGamma",
    "__version__",
    "class_balanced_weights",
    "create_policy",
    "list_policies",
    "metrics",
    "policy_class",
    "register_policy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
]
