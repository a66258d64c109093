"""Configuration of an in-context memory level: the update rules and the memory function.

`Rule` and `MemoryConfig` are the frozen, validated description that the code generator fills in from a
spec. Construction raises ``ValueError`` for every combination the semantics rule out, so a config that
exists is one both execution paths accept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

RULE_KINDS = ('retain', 'gd', 'momentum', 'delta', 'dgd')
GRADIENT_RULES = ('gd', 'momentum', 'dgd')
TRANSITION_RULES = ('delta', 'dgd')
POINTS = ('anchor', 'current')
READ_MODES = ('before', 'after', 'anchor')
FAMILIES = ('linear', 'mlp')
ACTIVATIONS = ('silu', 'gelu', 'relu', 'tanh', 'sigmoid', 'identity')

# Gates each rule reads: eta = write rate, alpha = retention, beta = momentum.
GATES_OF_RULE = {
    'retain': ('alpha',),
    'gd': ('eta',),
    'momentum': ('eta', 'beta'),
    'delta': ('eta',),
    'dgd': ('eta', 'alpha'),
}


@dataclass(frozen=True)
class Rule:
    """One update rule. `at` is where its gradient is taken; `per_layer` (delta/dgd on an MLP) makes every
    layer's transition use that layer's own input instead of only the key-input layer using k."""

    kind: str
    at: str = 'anchor'
    per_layer: bool = False

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown update rule {self.kind!r}; expected one of {', '.join(RULE_KINDS)}")
        if self.at not in POINTS:
            raise ValueError(f"rule {self.kind}: gradient point must be 'anchor' or 'current', got {self.at!r}")
        if self.per_layer and self.kind not in TRANSITION_RULES:
            raise ValueError(f"rule {self.kind}: per_layer only applies to delta and dgd")

    @property
    def uses_gradient(self) -> bool:
        return self.kind in GRADIENT_RULES


@dataclass(frozen=True)
class MemoryConfig:
    """A memory function M: R^dk -> R^dv, its update rules (applied per token in order), read mode and
    semantic chunk size C (anchor of token t: the state at position C*floor((t-1)/C))."""

    family: str
    dk: int
    dv: int
    depth: int = 1
    hidden: int = 0
    act: str = 'silu'
    residual: bool = False
    bias: bool = False
    rules: tuple[Rule, ...] = (Rule('gd'),)
    read: str = 'after'
    chunk: int = 1
    self_target: bool = False
    clip: Optional[float] = None  # per-token gradient-norm bound c: g_t scaled by min(1, c / ‖g_t‖)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'rules', tuple(self.rules))
        _check_memory_function(self)
        _check_rules(self)
        if self.read not in READ_MODES:
            raise ValueError(f"read mode must be one of {', '.join(READ_MODES)}, got {self.read!r}")
        if self.chunk < 1:
            raise ValueError(f"chunk size must be >= 1, got {self.chunk}")
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive number, got {self.clip!r}")
        if self.clip is not None and not self.has_gradient:
            raise ValueError("clip bounds the inner gradient, and no update rule takes one")
        if self.self_target and self.dk != self.dv:
            raise ValueError(f"a self-generated target M(v) needs dk == dv, got dk={self.dk}, dv={self.dv}")

    @property
    def layers(self) -> int:
        """Number of weight matrices of the memory function."""
        return 1 if self.family == 'linear' else self.depth

    @property
    def has_momentum(self) -> bool:
        return any(rule.kind == 'momentum' for rule in self.rules)

    @property
    def has_gradient(self) -> bool:
        return any(rule.uses_gradient for rule in self.rules)

    def affine(self, objective: object) -> Optional[tuple[float, float]]:
        """(a, b) when every gradient of this memory is a*y - b*v (objectives.affine_coefficients), else
        None; a clipped gradient is never affine."""
        from .objectives import affine_coefficients

        return None if self.clip is not None else affine_coefficients(objective, self.dv)

    def required_gates(self) -> tuple[str, ...]:
        needed = {gate for rule in self.rules for gate in GATES_OF_RULE[rule.kind]}
        return tuple(sorted(needed))


def _check_memory_function(cfg: MemoryConfig) -> None:
    if cfg.family not in FAMILIES:
        raise ValueError(f"memory family must be 'linear' or 'mlp', got {cfg.family!r}")
    if cfg.dk < 1 or cfg.dv < 1:
        raise ValueError(f"dk and dv must be positive, got dk={cfg.dk}, dv={cfg.dv}")
    if cfg.family == 'linear':
        if cfg.bias or cfg.residual:
            raise ValueError("a linear memory has no bias or residual; use family 'mlp' with depth=1")
        return
    if cfg.depth < 1:
        raise ValueError(f"mlp depth must be >= 1, got {cfg.depth}")
    if cfg.depth > 1 and cfg.hidden < 1:
        raise ValueError(f"mlp of depth {cfg.depth} needs a hidden width >= 1, got {cfg.hidden}")
    if cfg.act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.act!r}; expected one of {', '.join(ACTIVATIONS)}")
    if cfg.residual and cfg.dk != cfg.dv:
        raise ValueError(f"a residual memory k + mlp(k) needs dk == dv, got dk={cfg.dk}, dv={cfg.dv}")


def _check_rules(cfg: MemoryConfig) -> None:
    if not cfg.rules:
        raise ValueError("a memory needs at least one update rule")
    for rule in cfg.rules:
        if not isinstance(rule, Rule):
            raise ValueError(f"rules must be Rule objects, got {rule!r}")
        if rule.at == 'current' and cfg.chunk > 1:
            raise ValueError(
                f"rule {rule.kind}: a gradient at the current state needs chunk size 1, got chunk {cfg.chunk} "
                "(with C > 1 gradients are taken at the chunk anchor)")
    kinds = [rule.kind for rule in cfg.rules]
    if 'retain' in kinds and 'dgd' in kinds:
        raise ValueError("retain together with dgd applies the retention alpha twice (dgd already retains)")
    if kinds.count('momentum') > 1:
        raise ValueError("at most one momentum rule: the momentum s_t is a single state")
