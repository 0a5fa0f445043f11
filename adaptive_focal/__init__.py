"""adaptive_focal: focal loss whose gamma adjusts itself during training.

The core is an exact, fast focal loss for sigmoid and softmax outputs (:func:`sigmoid_focal_loss`,
:func:`softmax_focal_loss`, :class:`FocalLoss`) that accepts gamma as a float, a tensor (per class, per sample,
per element), a :class:`GammaTable`, a :class:`FocalMixture` or an :class:`AsymmetricGamma`, and can return
the batch's difficulty statistics (:class:`BatchStats`) computed in the same pass. Optional integrations (W&B, Optuna, Lightning, Transformers) are imported only when
used.
"""

from . import metrics
from .functional import class_balanced_weights, sigmoid_focal_loss, softmax_focal_loss
from .gamma_forms import AsymmetricGamma, FocalMixture
from .loss import FocalLoss
from .policy import GammaPolicy, create_policy, list_policies, policy_class, register_policy
from .stats import BatchStats
from .table import GammaTable
from .schedules import (  # noqa: E402  (registers the schedules)
    ConstantGamma, CosineGamma, CyclicalFocal, ExponentialGamma, FLSc531, LinearGamma, SequentialGamma, StepGamma,
)
from .controllers import (  # noqa: E402  (registers the controllers)
    AdaptiveAsymmetry, AutomatedGamma, EqualizedFocal, FLSD53, PIGamma,
)
from .controllers_adafocal import AdaFocal, ClasswiseAdaFocal  # noqa: E402
from .learned import BanditGamma, GammaNet, HypergradientGamma  # noqa: E402  (registers the learned controllers)

__version__ = "0.1.0"

__all__ = [
    "AdaFocal",
    "AdaptiveAsymmetry",
    "AsymmetricGamma",
    "AutomatedGamma",
    "BanditGamma",
    "BatchStats",
    "ClasswiseAdaFocal",
    "ConstantGamma",
    "CosineGamma",
    "CyclicalFocal",
    "EqualizedFocal",
    "ExponentialGamma",
    "FLSD53",
    "FLSc531",
    "FocalLoss",
    "FocalMixture",
    "GammaNet",
    "GammaPolicy",
    "GammaTable",
    "HypergradientGamma",
    "LinearGamma",
    "PIGamma",
    "SequentialGamma",
    "StepGamma",
    "__version__",
    "create_policy",
    "list_policies",
    "metrics",
    "policy_class",
    "register_policy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
]
