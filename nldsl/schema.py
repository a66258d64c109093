"""What each kind of declaration accepts: its types, its property keys, and the builtin functions.

This table is the single source for key checking ("unknown key, did you mean"), for `nlc explain`
and for docs/language.md. Every entry is (name, one-line meaning).
"""

from __future__ import annotations

DECL_TYPES = {
    "memory": {
        "linear": "M(k) = W k, W ∈ R^{dv×dk}",
        "mlp": "mlp(depth, hidden, act, residual, bias): M(k) = [k +] W_d σ(… σ(W_1 k))",
    },
    "attention": {
        "softmax": "causal softmax attention; `window N` makes it sliding-window",
    },
    "cms": {
        "sequential": "y = MLP_k(… MLP_1(x)) (Eq. 70)",
        "independent": "independent(agg = sum|mean|weighted_sum): y = Agg(MLP_1(x), …) (Eq. 74)",
        "nested": "the initial state of level s+1 is a parameter of level s, reset every period of s (Eq. 72)",
    },
    "level": {
        "outer": "the outer training level: owns every parameter no faster level owns",
        "mlp": "a CMS member: mlp(expand = 4, act = gelu) or mlp(hidden = N)",
    },
    "optimizer": {
        "sgd": "sgd(lr)",
        "momentum": "momentum(lr, beta = 0.9)",
        "adamw": "adamw(lr, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.0)",
        "muon": "muon(lr, beta = 0.95, ns_steps = 5, weight_decay = 0.0)",
        "m3": "m3(lr, beta1 = 0.9, beta2 = 0.999, beta3 = 0.9, alpha = 1.0, frequency = 8, ns_steps = 5, eps = 1e-8)",
        "deep_momentum": "deep_momentum(lr, beta = 0.9, hidden = 16): the momentum is an MLP memory of gradients",
    },
}

OPTIMIZER_ARGS = {
    "sgd": {"lr": None, "weight_decay": 0.0},
    "momentum": {"lr": None, "beta": 0.9, "weight_decay": 0.0},
    "adamw": {"lr": None, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "muon": {"lr": None, "beta": 0.95, "ns_steps": 5, "weight_decay": 0.0},
    "m3": {"lr": None, "beta1": 0.9, "beta2": 0.999, "beta3": 0.9, "alpha": 1.0, "frequency": 8,
           "ns_steps": 5, "eps": 1e-8},
    "deep_momentum": {"lr": None, "beta": 0.9, "hidden": 16},
}

MLP_MEMORY_ARGS = {"depth": 2, "hidden": None, "act": "silu", "residual": False, "bias": False}
CMS_MLP_ARGS = {"expand": 4, "hidden": None, "act": "gelu", "bias": True}

KEYS = {
    "memory": {
        "clock": "how often the state updates: `every 1 token` (in-context memories update per token)",
        "chunk": "the semantic chunk size C: gradients are taken at the state of the previous chunk's end",
        "key": "the key k_t the memory writes with (an expression of the block's values)",
        "value": "the value v_t it learns to return for k_t; `self(v)` makes it generate its own target",
        "query": "the default query when the memory is read as `m()`",
        "lr": "the write rate η_t (a per-head gate, a number or an expression)",
        "retain": "the retention α_t ∈ (0, 1] (a per-head gate)",
        "log_retain": "the retention given in log space: α_t = exp(log_retain)",
        "momentum": "the momentum gate β_t ∈ [0, 1] used by the `momentum` rule",
        "objective": "the inner loss: l2, sq, mse, dot, l1, huber(δ), lp(p) or custom(<expression of r>)",
        "update": "the update rules in the order applied: retain, gd, momentum, delta, dgd [at anchor|at current]",
        "clip": "per-token gradient-norm clipping: each token's inner gradient is scaled to a norm of at most c",
        "read": "when a read sees the state: `before write`, `after write` or `at anchor`",
        "state": "`reset per sequence` or `persist` (carried across sequences and saved)",
        "init": "who learns the initial state: `by <level>` (a meta edge) or `zero`",
    },
    "attention": {
        "clock": "always `every 1 token`: the KV cache grows every token",
        "key": "the keys",
        "value": "the values",
        "query": "the default query when read as `a()`",
        "window": "sliding window length in tokens (omit for full causal attention)",
        "scale": "the logit scale (default head_dim ** -0.5)",
        "segment": "attend within segments of N tokens: a query sees its own segment only (Titans MAC)",
        "persistent": "N learned persistent tokens every query sees, in the block input's space ([T] §3.3)",
        "context": "tokens prepended to each segment, one per token: a memory read there reads the memory "
                   "as it was at the segment's start (Titans MAC's h = M*(q))",
    },
    "cms": {
        "taught": "`by <level>`: whose loss gradient drives the window updates (default: the outer level)",
        "update": "the optimizer applied at every window end (default sgd(lr = 1e-2))",
        "state": "`persist` (default) or `reset per sequence`",
        "flush": "what happens to a partial window at a sequence end: `partial` (default) or `drop`",
        "lr": "the per-level learning rate η^(ℓ) scaling each token's gradient (default 1)",
    },
    "cms_level": {
        "clock": "the period: `every N tokens`, or `never` (a frozen MLP)",
        "update": "an optimizer for this member, overriding the chain's",
        "lr": "the per-level learning rate η^(ℓ)",
    },
    "level": {
        "clock": "`every N steps`: how often the outer optimizer steps (gradient accumulation in between)",
        "objective": "`next_token`: the language-model loss",
        "update": "the optimizer: a call such as adamw(lr = 3e-4) or the name of an `optimizer` declaration",
        "clip": "gradient-norm clipping threshold",
        "bptt": "`truncated` (default): gradients stop where a CMS level updates; `full`: the step's graph is kept across CMS updates",
        "warmup": "learning-rate warm-up steps",
        "schedule": "`constant` (default) or `cosine`",
    },
    "optimizer": {},  # an optimizer ticks with each level it serves (it is a template: one state per level)
}

# Words people reach for instead of a key (for "did you mean" when spelling is not close).
KEY_ALIASES = {
    "optimizer": "update", "optimiser": "update", "rule": "update", "rules": "update", "opt": "update",
    "loss": "objective", "period": "clock", "every": "clock", "eta": "lr", "rate": "lr",
    "learning_rate": "lr", "alpha": "retain", "decay": "retain", "forget": "retain", "beta": "momentum",
    "keys": "key", "values": "value", "queries": "query", "lifetime": "state", "taught_by": "taught",
    "chunk_size": "chunk", "clipping": "clip", "grad_clip": "clip",
}

BUILTINS = {
    # vector → vector functions usable in blocks
    "linear": "linear(x, out, bias = false): a learned projection to width `out`",
    "conv": "conv(x, window = 4): a short causal depthwise convolution",
    "l2norm": "l2norm(x): normalise each head's vector to unit length",
    "rmsnorm": "rmsnorm(x) or `rmsnorm` in a pipeline: RMS normalisation with a learned gain",
    "layernorm": "layernorm(x): layer normalisation with learned gain and bias",
    "silu": "silu(x)", "gelu": "gelu(x)", "relu": "relu(x)", "tanh": "tanh(x)",
    "sigmoid": "sigmoid(x): squashes to (0, 1)", "softplus": "softplus(x): squashes to (0, ∞)",
    "exp": "exp(x)", "log": "log(x)", "abs": "abs(x)", "sqrt": "sqrt(x)",
    "self": "self(v): a self-generated target v̂ = M(v) at the anchor (in a memory's `value`)",
    # network combinators
    "embed": "embed(vocab, dim): token embedding",
    "lm_head": "lm_head(tied = true): the output projection to the vocabulary",
    "residual": "residual(f): x + f(x)",
    "stack": "stack(f, n): n copies of f in sequence, each with its own parameters and levels",
    # custom objective helpers
    "sign": "sign(r)", "min": "min(a, b)", "max": "max(a, b)",
}

# functions allowed in `custom(<expression of r>)`: elementwise, with known derivatives
OBJECTIVE_FUNCTIONS = ("abs", "sign", "exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "min", "max")
GATE_KEYS = ("lr", "retain", "log_retain", "momentum")
FLOW_KEYS = ("key", "value", "query") + GATE_KEYS
RULES = ("retain", "gd", "momentum", "delta", "dgd")
GRADIENT_RULES = ("gd", "momentum", "dgd")  # the rules that take a gradient of the objective
OBJECTIVES = ("l2", "sq", "mse", "dot", "l1", "huber", "lp", "custom")
ACTIVATIONS = ("silu", "gelu", "relu", "tanh", "sigmoid", "identity")
