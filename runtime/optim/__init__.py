"""Optimizer levels (``nldsl.runtime.optim``): torch.optim.Optimizer subclasses for the spec's optimizers.

An optimizer is a level over gradients whose state is a memory of past gradients ([A] §4,
docs/semantics.md §7). These classes are ordinary torch optimizers and work outside nlc too:

    `SGD`, `Momentum`, `AdamW`, `Muon`, `M3`, `DeepMomentum`, and `make_optimizer(kind, params, **args)`
    mapping the spec's names (sgd, momentum, adamw, muon, m3, deep_momentum) and arguments to them.

Every optimizer exposes `last_update_norm` (‖Δθ‖ of the last step over all its parameters) and keeps
only tensors and Python numbers in its per-parameter state, so `state_dict()` can be saved as
safetensors + JSON and `load_state_dict()` resumes bit-exactly.
"""
from .basic import SGD, AdamW, Momentum
from .deep_momentum import DeepMomentum
from .factory import OPTIMIZERS, make_optimizer, optimizer_args
from .m3 import M3
from .muon import Muon
from .newton_schulz import NS_CUBIC, NS_QUINTIC, newton_schulz

__all__ = [
    'AdamW', 'DeepMomentum', 'M3', 'Momentum', 'Muon', 'NS_CUBIC', 'NS_QUINTIC', 'OPTIMIZERS', 'SGD',
    'make_optimizer', 'newton_schulz', 'optimizer_args',
]
