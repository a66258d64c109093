"""`make_optimizer`: a spec's optimizer name and arguments to an optimizer instance."""
from __future__ import annotations

import inspect

from .basic import SGD, AdamW, Momentum
from .deep_momentum import DeepMomentum
from .m3 import M3
from .muon import Muon

OPTIMIZERS = {
    'sgd': SGD,
    'momentum': Momentum,
    'adamw': AdamW,
    'muon': Muon,
    'm3': M3,
    'deep_momentum': DeepMomentum,
}


def optimizer_args(kind: str) -> dict:
    """The arguments `kind` takes besides params, with their defaults (None for a required one)."""
    cls = _class(kind)
    sig = inspect.signature(cls.__init__)
    return {name: (None if p.default is inspect.Parameter.empty else p.default)
            for name, p in sig.parameters.items() if name not in ('self', 'params')}


def make_optimizer(kind: str, params, **args):
    """The optimizer called `kind` in a spec (sgd, momentum, adamw, muon, m3, deep_momentum) over `params`.

    `args` use the spec's names (`lr`, `beta`, `betas`, `ns_steps`, `frequency`, `hidden`, ...); a
    list for `betas` (as JSON gives it back) is accepted. An unknown kind or argument raises
    ValueError naming what is accepted.
    """
    cls = _class(kind)
    accepted = optimizer_args(kind)
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(f'{kind}: unknown argument{"s" if len(unknown) > 1 else ""} {", ".join(unknown)}; '
                         f'{kind} takes {", ".join(accepted)}')
    if 'lr' not in args:
        raise ValueError(f'{kind} needs a learning rate (lr)')
    if 'betas' in args:
        args = {**args, 'betas': tuple(args['betas'])}
    return cls(params, **args)


def _class(kind: str):
    try:
        return OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f'unknown optimizer {kind!r}; expected one of {", ".join(OPTIMIZERS)}') from None
