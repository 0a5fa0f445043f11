"""Gamma policies: objects that hold a :class:`~adaptive_focal.FocalLoss` and write its gamma during training.

=======================  ==================================================================================
module                   what it holds
=======================  ==================================================================================
``base``                 :class:`GammaPolicy` (the hooks a policy implements and the bookkeeping around
                         them), :class:`RunContext`, the registry (:func:`register_policy`,
                         :func:`create_policy`, :func:`list_policies`, :func:`policy_class`)
``space``                the search-space parameters :class:`Float`, :class:`Int`, :class:`Categorical`
``schedules``            open-loop policies: ``constant``, ``linear``, ``cosine``, ``step``, ``exponential``,
                         ``flsc531``, ``cyclical`` and the fixed per-p_t table ``flsd53``
``sequential``           ``sequential``: policies handing over to each other at milestones
``feedback``             controllers driven by each training batch's statistics: ``automated``, ``pi``,
                         ``efl``, ``asl_adaptive``
``adafocal``             controllers driven by validation calibration: ``adafocal``, ``classwise_adafocal``
``learned``              controllers optimising a validation objective, one module per method:
                         ``hypergradient``, ``gammanet``, ``bandit`` (``learned.common`` is what they share)
=======================  ==================================================================================

Example:
    >>> import adaptive_focal as af
    >>> loss = af.FocalLoss("softmax")
    >>> policy = af.create_policy("pi", loss, context=af.RunContext(epochs=2, steps_per_epoch=10))
    >>> sorted(p for p in af.list_policies() if not af.policy_class(p).applies_to("softmax"))
    ['asl_adaptive', 'efl']
"""

from .adafocal import AdaFocal, ClasswiseAdaFocal
from .base import GammaPolicy, RunContext, create_policy, list_policies, policy_class, register_policy
from .feedback import AdaptiveAsymmetry, AutomatedGamma, EqualizedFocal, PIGamma
from .learned import BanditGamma, GammaNet, HypergradientGamma, LearnedPolicy
from .schedules import (
    FLSD53,
    ConstantGamma,
    CosineGamma,
    CyclicalFocal,
    ExponentialGamma,
    FLSc531,
    LinearGamma,
    Schedule,
    StepGamma,
)
from .sequential import SequentialGamma
from .space import Categorical, Float, Int, as_param

__all__ = [
    "AdaFocal", "AdaptiveAsymmetry", "AutomatedGamma", "BanditGamma", "Categorical", "ClasswiseAdaFocal",
    "ConstantGamma", "CosineGamma", "CyclicalFocal", "EqualizedFocal", "ExponentialGamma", "FLSD53", "FLSc531",
    "Float", "GammaNet", "GammaPolicy", "HypergradientGamma", "Int", "LearnedPolicy", "LinearGamma", "PIGamma",
    "RunContext", "Schedule", "SequentialGamma", "StepGamma", "as_param", "create_policy", "list_policies",
    "policy_class", "register_policy",
]
