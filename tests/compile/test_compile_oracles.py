"""Known architectures (semantics.md §2.7) and the rule-order cases of §2.2, through compiled specs.

Each oracle below is the architecture's recurrence written out per sequence and head with explicit
matrices (S ∈ R^{dv×dk}, o = S q, no scaling), independent of the code generator and of the runtime's
memory library. The memory module under test is the one the compiler configured: it is taken from a
loaded model (`model.layer[0].<block>.<memory>`) and called with (B, T, heads·d) inputs and gates. Both
backends are checked, and the inputs that the generated model itself feeds the memory (captured with
a hook during a forward pass) are replayed through the oracle too, so the wiring of flows to gates is
covered as well.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compile_testkit import DTYPE, assert_close, build, tokens, write_spec
from nldsl.runtime import MemoryState

B = 2


# ------------------------------------------------------------------ inputs


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_flow(heads: int, length: int, dk: int, dv: int, seed: int) -> dict:
    """q, k unit-norm per head, v, and per-head gates eta ∈ (0.05, 0.45), alpha ∈ (0.6, 1),
    beta ∈ (0, 0.9), all (B, T, heads·d) or (B, T, heads)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DTYPE)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(B, length, heads, generator=gen, dtype=DTYPE)

    q = unit_rows(rand(B, length, heads, dk)).flatten(-2)
    k = unit_rows(rand(B, length, heads, dk)).flatten(-2)
    v = rand(B, length, heads * dv)
    return {"q": q, "k": k, "v": v, "eta": uniform(0.05, 0.45), "alpha": uniform(0.6, 1.0),
            "beta": uniform(0.0, 0.9)}


def per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, heads·d) -> (B, heads, T, d)."""
    return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(1, 2)


def gate_per_head(g) -> torch.Tensor:
    """(B, T, heads) -> (B, heads, T)."""
    return g.transpose(1, 2)


def run_memory(mem, flow: dict, gates: dict, state=None):
    """The compiled memory on both backends; asserts they agree and returns the reference's result."""
    results = {}
    for backend in ("reference", "chunked"):
        mem.backend = backend
        results[backend] = mem(q=flow["q"], k=flow["k"], v=flow["v"], gates=gates, state=state)
    mem.backend = "chunked"
    (y_ref, s_ref), (y_chk, s_chk) = results["reference"], results["chunked"]
    assert_close(y_ref, y_chk, "reference vs chunked output")
    for (name, a), b in zip(s_ref.to_tensors().items(), s_chk.to_tensors().values()):
        assert_close(a, b, f"reference vs chunked state {name}")
    return y_ref, s_ref


def capture_memory_calls(model, mem):
    """Run the model once and return the keyword arguments and the output of the memory's first call."""
    seen = []

    def hook(module, args, kwargs, output):
        if not seen:
            seen.append(({k: v for k, v in kwargs.items()}, output))

    handle = mem.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(tokens(model, B, 13, 7))
    finally:
        handle.remove()
    assert seen, "the memory was never called"
    return seen[0]


def carried_matrix_state(mem, seed: int, scale: float = 0.3) -> MemoryState:
    """A carried-in linear-memory state at position 0 with a random, non-zero W."""
    cfg = mem.cfg
    gen = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(B, mem.heads, cfg.dv, cfg.dk, generator=gen, dtype=DTYPE)
    return MemoryState({"W": w}, {"W": w}, None, 0)


def randomise_initial_state(mem, seed: int, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mem.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# ------------------------------------------------------------------ the oracles (per sequence and head)


def oracle_matrix(flow, gates_bht, S0, heads, step, read="after", chunk=1):
    """Drive `S_t = step(S_{t-1}, anchor, t, k, v, g)` over every sequence and head; o_t by `read`.

    S0: (B, heads, dv, dk). The anchor is S at the end of the previous chunk of `chunk` tokens."""
    q, k, v = per_head(flow["q"], heads), per_head(flow["k"], heads), per_head(flow["v"], heads)
    length = q.shape[2]
    out = torch.zeros(B, heads, length, v.shape[-1], dtype=DTYPE)
    final = torch.zeros_like(S0)
    for b in range(B):
        for h in range(heads):
            S = S0[b, h].clone()
            anchor = S.clone()
            for t in range(length):
                g = {name: gate[b, h, t] for name, gate in gates_bht.items()}
                previous = S
                S = step(S, anchor, k[b, h, t], v[b, h, t], g)
                read_from = {"after": S, "before": previous, "anchor": anchor}[read]
                out[b, h, t] = read_from @ q[b, h, t]
                if (t + 1) % chunk == 0:
                    anchor = S.clone()
            final[b, h] = S
    return out.transpose(1, 2).flatten(-2), final


def eye(n):
    return torch.eye(n, dtype=DTYPE)


def linear_attention_step(S, A, k, v, g):
    return S + torch.outer(v, k)


def deltanet_step(S, A, k, v, g):
    return S @ (eye(len(k)) - g["eta"] * torch.outer(k, k)) + g["eta"] * torch.outer(v, k)


def gated_deltanet_step(S, A, k, v, g):
    return g["alpha"] * S @ (eye(len(k)) - g["eta"] * torch.outer(k, k)) + g["eta"] * torch.outer(v, k)


def titans_without_momentum_step(S, A, k, v, g):
    """[retain, gd at anchor], l2, C = 1: W_{t-1}(α_t I − η_t k kᵀ) + η_t v kᵀ."""
    return S @ (g["alpha"] * eye(len(k)) - g["eta"] * torch.outer(k, k)) + g["eta"] * torch.outer(v, k)


def hope_matrix_step(S, A, k, v, g):
    """W_t = W_{t−1}(α_t I − η_t k kᵀ) − η_t (W_{c(t)} k − v̂) kᵀ with v̂ = W_{c(t)} v."""
    v_hat = A @ v
    return S @ (g["alpha"] * eye(len(k)) - g["eta"] * torch.outer(k, k)) - g["eta"] * torch.outer(A @ k - v_hat, k)


def ttt_linear_oracle(flow, gates_bht, W0, heads, chunk):
    """W_t = W_{c(t)} − Σ_{j in t's chunk, j ≤ t} η_j (W_{c(t)} k_j − v_j) k_jᵀ, o_t = W_t q_t."""
    q, k, v = per_head(flow["q"], heads), per_head(flow["k"], heads), per_head(flow["v"], heads)
    length = q.shape[2]
    out = torch.zeros(B, heads, length, v.shape[-1], dtype=DTYPE)
    final = torch.zeros(B, heads, *W0.shape[1:], dtype=DTYPE)
    for b in range(B):
        for h in range(heads):
            anchor = W0[h].clone()
            W = anchor
            for t in range(length):
                start = chunk * (t // chunk)
                W = anchor - sum(gates_bht["eta"][b, h, j] * torch.outer(anchor @ k[b, h, j] - v[b, h, j], k[b, h, j])
                                 for j in range(start, t + 1))
                out[b, h, t] = W @ q[b, h, t]
                if (t + 1) % chunk == 0:
                    anchor = W
            final[b, h] = W
    return out.transpose(1, 2).flatten(-2), final


def momentum_oracle(flow, gates_bht, W0, heads, chunk, order):
    """Linear memory, l2, gradients at the anchor with momentum, in either order:
    [retain, momentum]: W ← α W; s ← β s − η g; W ← W + s.   [momentum, retain]: s ← β s − η g; W ← α (W + s).
    Read after write."""
    q, k, v = per_head(flow["q"], heads), per_head(flow["k"], heads), per_head(flow["v"], heads)
    length = q.shape[2]
    out = torch.zeros(B, heads, length, v.shape[-1], dtype=DTYPE)
    for b in range(B):
        for h in range(heads):
            W = W0[h].clone()
            anchor, s = W.clone(), torch.zeros_like(W)
            for t in range(length):
                g = {n: gates_bht[n][b, h, t] for n in ("eta", "alpha", "beta")}
                grad = torch.outer(anchor @ k[b, h, t] - v[b, h, t], k[b, h, t])
                if order == ("retain", "momentum"):
                    W = g["alpha"] * W
                    s = g["beta"] * s - g["eta"] * grad
                    W = W + s
                else:
                    s = g["beta"] * s - g["eta"] * grad
                    W = g["alpha"] * (W + s)
                out[b, h, t] = W @ q[b, h, t]
                if (t + 1) % chunk == 0:
                    anchor = W.clone()
    return out.transpose(1, 2).flatten(-2)


def titans_mlp_oracle(flow, gates_bht, params0, heads, chunk):
    """Titans with a residual 2-layer SiLU MLP memory M(x) = x + W2 silu(W1 x), ℓ = mean((M(k) − v)²):
    s_t = β_t s_{t−1} − η_t ∇ℓ(M_{c(t)}; k_t, v_t) (by autograd), M_t = α_t M_{t−1} + s_t,
    read at anchor: y_t = M_{c(t)}(q_t)."""
    q, k, v = per_head(flow["q"], heads), per_head(flow["k"], heads), per_head(flow["v"], heads)
    length = q.shape[2]
    out = torch.zeros(B, heads, length, v.shape[-1], dtype=DTYPE)

    def memory(W1, W2, x):
        return x + W2 @ F.silu(W1 @ x)

    finals = []
    for b in range(B):
        for h in range(heads):
            M = [params0["W1"][h].detach().clone(), params0["W2"][h].detach().clone()]
            anchor = [p.clone() for p in M]
            s = [torch.zeros_like(p) for p in M]
            for t in range(length):
                at = [p.clone().requires_grad_(True) for p in anchor]
                loss = (memory(*at, k[b, h, t]) - v[b, h, t]).pow(2).mean()
                grads = torch.autograd.grad(loss, at)
                a, beta, eta = gates_bht["alpha"][b, h, t], gates_bht["beta"][b, h, t], gates_bht["eta"][b, h, t]
                s = [beta * s_i - eta * g_i for s_i, g_i in zip(s, grads)]
                M = [a * m_i + s_i for m_i, s_i in zip(M, s)]
                out[b, h, t] = memory(*anchor, q[b, h, t])
                if (t + 1) % chunk == 0:
                    anchor = [p.clone() for p in M]
            finals.append(M)
    return out.transpose(1, 2).flatten(-2), finals


# ------------------------------------------------------------------ the compiled examples


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(f"examples/{name}.nl", tmp_path_factory.mktemp(name))
        return cache[name]
    return get


MATRIX_EXAMPLES = {
    # example: (block, memory, step, gates the spec gives the memory, read)
    "linear_attention": ("linear_attn", "fast", linear_attention_step, {"lr"}),
    "deltanet": ("delta_block", "fast", deltanet_step, {"lr"}),
    "gated_deltanet": ("gdn_block", "fast", gated_deltanet_step, {"lr", "log_retain"}),
}


def oracle_gates(gates: dict, like: torch.Tensor) -> dict:
    """The spec's gate roles (lr, retain, log_retain, momentum) as the oracles' (B, H, T) eta, alpha, beta."""
    out = {}
    for role, value in gates.items():
        if not isinstance(value, torch.Tensor):
            value = torch.full(like.shape, float(value), dtype=DTYPE)
        value = value.expand(*like.shape[:2], like.shape[2]) if value.shape[-1] == 1 else value
        name = {"lr": "eta", "retain": "alpha", "momentum": "beta"}.get(role, role)
        if role == "log_retain":
            name, value = "alpha", torch.exp(value)
        out[name] = gate_per_head(value.detach())
    return out


@pytest.mark.parametrize("name", sorted(MATRIX_EXAMPLES))
def test_chunk_one_matrix_memories_follow_their_recurrence(name, examples):
    model = examples(name)
    block, memory, step, roles = MATRIX_EXAMPLES[name]
    mem = getattr(getattr(model.layer[0], block), memory)
    heads, dk, dv = mem.heads, mem.cfg.dk, mem.cfg.dv
    flow = random_flow(heads, 10, dk, dv, seed=11)
    like = flow["eta"]
    gates = {"lr": flow["eta"]}
    if "log_retain" in roles:
        gates["log_retain"] = torch.log(flow["alpha"])
    if name == "linear_attention":
        gates = {"lr": 1}  # the spec's constant write rate
    state = carried_matrix_state(mem, seed=12)
    y, final = run_memory(mem, flow, gates, state)
    expected, S = oracle_matrix(flow, oracle_gates(gates, like), state.params["W"], heads, step)
    assert_close(expected, y, f"{name} output")
    assert_close(S, final.params["W"], f"{name} final state")

    # the flows the generated model gives this memory: gate roles as in the spec, replayed through the oracle
    kwargs, (y_model, _) = capture_memory_calls(model, mem)
    assert set(kwargs["gates"]) == roles
    if name == "linear_attention":
        assert kwargs["gates"]["lr"] == 1
    W0 = torch.zeros(B, heads, dv, dk, dtype=DTYPE)  # init zero
    expected, _ = oracle_matrix(kwargs, oracle_gates(kwargs["gates"], kwargs["k"][..., :heads]), W0, heads, step)
    assert_close(expected, y_model, f"{name} output inside the model")


def test_ttt_linear_follows_the_mini_batch_recurrence(examples):
    model = examples("ttt_linear")
    mem = model.layer[0].ttt_block.inner
    heads, dk, dv, chunk = mem.heads, mem.cfg.dk, mem.cfg.dv, mem.cfg.chunk
    assert chunk == 16
    randomise_initial_state(mem, seed=21)  # W_0 is learned; start it away from zero
    flow = random_flow(heads, 21, dk, dv, seed=22)
    y, final = run_memory(mem, flow, {"lr": flow["eta"]})
    expected, W = ttt_linear_oracle(flow, oracle_gates({"lr": flow["eta"]}, flow["eta"]), mem.W.detach(), heads, chunk)
    assert_close(expected, y, "ttt_linear output")
    assert_close(W, final.params["W"], "ttt_linear final state")

    kwargs, (y_model, _) = capture_memory_calls(model, mem)
    assert set(kwargs["gates"]) == {"lr"}
    expected, _ = ttt_linear_oracle(kwargs, oracle_gates(kwargs["gates"], kwargs["k"][..., :heads]),
                                    mem.W.detach(), heads, chunk)
    assert_close(expected, y_model, "ttt_linear output inside the model")


def test_titans_mlp_memory_follows_the_titans_recurrence(examples):
    model = examples("titans")
    mem = model.layer[0].lmm_block.mem
    cfg = mem.cfg
    assert (cfg.family, cfg.depth, cfg.act, cfg.residual, cfg.read, cfg.chunk) == ("mlp", 2, "silu", True, "anchor", 16)
    heads = mem.heads
    flow = random_flow(heads, 20, cfg.dk, cfg.dv, seed=31)
    gates = {"lr": flow["eta"], "retain": flow["alpha"], "momentum": flow["beta"]}
    y, final = run_memory(mem, flow, gates)
    expected, finals = titans_mlp_oracle(flow, oracle_gates(gates, flow["eta"]), mem.params0(), heads, cfg.chunk)
    assert_close(expected, y, "titans output")
    for i, (W1, W2) in enumerate(finals):
        b, h = divmod(i, heads)
        assert_close(W1, final.params["W1"][b, h], "titans final W1")
        assert_close(W2, final.params["W2"][b, h], "titans final W2")

    kwargs, (y_model, _) = capture_memory_calls(model, mem)
    assert set(kwargs["gates"]) == {"lr", "retain", "momentum"}
    expected, _ = titans_mlp_oracle(kwargs, oracle_gates(kwargs["gates"], kwargs["k"][..., :heads]),
                                    mem.params0(), heads, cfg.chunk)
    assert_close(expected, y_model, "titans output inside the model")


# ------------------------------------------------------------------ specs written here

MEMORY_SPEC = """
nl 1
model probe {{
  vocab    = 32
  dim      = 8
  heads    = 2
  head_dim = dim / heads
  context  = 64

  level pretrain : outer {{
    clock     every 1 step
    objective next_token
    update    adamw(lr = 1e-3)
  }}

  block mix(x) {{
    memory mem : linear per head {{
      chunk     {chunk}
      key       k
      value     {value}
      lr        eta
      retain    alpha
      momentum  beta
      objective {objective}
      update    {update}
      read      {read}
    }}
    q     = l2norm(linear(x, dim))
    k     = l2norm(linear(x, dim))
    v     = linear(x, dim)
    eta   = 0.25 * sigmoid(linear(x, heads))
    alpha = 0.5 + 0.5 * sigmoid(linear(x, heads))
    beta  = 0.9 * sigmoid(linear(x, heads))
    return linear(mem(q), dim)
  }}

  network = embed(vocab, dim) -> residual(rmsnorm -> mix) -> rmsnorm -> lm_head(tied = true)
}}
"""


def compiled_memory(tmp_path, name, update, objective="l2", chunk=1, read="after write", value="v"):
    text = MEMORY_SPEC.format(update=update, objective=objective, chunk=chunk, read=read, value=value)
    if "momentum" not in update:
        text = text.replace("      momentum  beta\n", "")
    if "retain" not in update and "dgd" not in update:
        text = text.replace("      retain    alpha\n", "")
    spec = write_spec(tmp_path, text, f"{name}.nl")
    model = build(spec, tmp_path / f"{name}_out")
    return model, model.mix.mem


def all_gates(flow):
    return {"lr": flow["eta"], "retain": flow["alpha"], "momentum": flow["beta"]}


def used_gates(mem, flow):
    need = {"eta": "lr", "alpha": "retain", "beta": "momentum"}
    return {need[g]: flow[g] for g in mem.cfg.required_gates()}


def test_hope_matrix_memory_follows_dgd_with_a_self_generated_target(tmp_path):
    model, mem = compiled_memory(tmp_path, "hope_matrix", "dgd", chunk=4, read="at anchor", value="self(v)")
    assert mem.cfg.self_target and mem.cfg.read == "anchor"
    randomise_initial_state(mem, seed=41)
    flow = random_flow(mem.heads, 14, mem.cfg.dk, mem.cfg.dv, seed=42)
    gates = used_gates(mem, flow)
    assert set(gates) == {"lr", "retain"}
    y, final = run_memory(mem, flow, gates)
    W0 = mem.W.detach().unsqueeze(0).expand(B, *mem.W.shape)
    expected, W = oracle_matrix(flow, oracle_gates(gates, flow["eta"]), W0, mem.heads, hope_matrix_step,
                                read="anchor", chunk=4)
    assert_close(expected, y, "hope matrix output")
    assert_close(W, final.params["W"], "hope matrix final state")


def test_gated_deltanet_two_ways_are_the_same_model(tmp_path):
    """[retain, gd at current] with l2 = [retain, delta, gd] with dot (C = 1), and both are GDN."""
    _, current = compiled_memory(tmp_path, "gdn_current", "retain, gd at current")
    _, split = compiled_memory(tmp_path, "gdn_delta_dot", "retain, delta, gd", objective="dot")
    flow = random_flow(2, 9, 4, 4, seed=51)
    gates = {"lr": flow["eta"], "retain": flow["alpha"]}
    state = carried_matrix_state(current, seed=52)
    y1, s1 = run_memory(current, flow, gates, state)
    y2, s2 = run_memory(split, flow, gates, state)
    assert_close(y1, y2, "[retain, gd at current] vs [retain, delta, gd(dot)]")
    assert_close(s1.params["W"], s2.params["W"], "final states")
    expected, _ = oracle_matrix(flow, oracle_gates(gates, flow["eta"]), state.params["W"], 2, gated_deltanet_step)
    assert_close(expected, y1, "Gated DeltaNet recurrence")


def test_retain_then_gd_at_anchor_is_the_closed_form_not_gated_deltanet(tmp_path):
    _, mem = compiled_memory(tmp_path, "retain_gd_anchor", "retain, gd at anchor")
    flow = random_flow(2, 9, 4, 4, seed=61)
    gates = {"lr": flow["eta"], "retain": flow["alpha"]}
    state = carried_matrix_state(mem, seed=62)
    y, _ = run_memory(mem, flow, gates, state)
    og = oracle_gates(gates, flow["eta"])
    expected, _ = oracle_matrix(flow, og, state.params["W"], 2, titans_without_momentum_step)
    assert_close(expected, y, "[retain, gd at anchor] closed form")
    gdn, _ = oracle_matrix(flow, og, state.params["W"], 2, gated_deltanet_step)
    assert (gdn - y).abs().max().item() > 1e-3, "[retain, gd at anchor] should differ from Gated DeltaNet"


def test_momentum_and_retain_do_not_commute(tmp_path):
    outputs = {}
    for order in (("retain", "momentum"), ("momentum", "retain")):
        _, mem = compiled_memory(tmp_path, "_".join(order), ", ".join(order), chunk=3)
        randomise_initial_state(mem, seed=71)  # the same W_0 for both (same seed, zero start)
        flow = random_flow(2, 10, 4, 4, seed=72)
        gates = {"lr": flow["eta"], "retain": flow["alpha"], "momentum": flow["beta"]}
        y, _ = run_memory(mem, flow, gates)
        expected = momentum_oracle(flow, oracle_gates(gates, flow["eta"]), mem.W.detach(), 2, 3, order)
        assert_close(expected, y, f"[{', '.join(order)}]")
        outputs[order] = y
    diff = (outputs[("retain", "momentum")] - outputs[("momentum", "retain")]).abs().max().item()
    assert diff > 1e-3, f"[retain, momentum] and [momentum, retain] agree to {diff:.2e}"


def test_the_gradient_point_is_read_from_the_spec(tmp_path):
    """At C = 1 the current state of a first rule is the anchor, so `gd at current` = `gd` = the delta
    rule; after a `retain` they differ (the point is the state the preceding rules left)."""
    _, current = compiled_memory(tmp_path, "gd_current", "gd at current")
    _, anchor = compiled_memory(tmp_path, "gd_anchor", "gd")
    assert [r.at for r in current.cfg.rules] == ["current"]
    assert [r.at for r in anchor.cfg.rules] == ["anchor"]
    flow = random_flow(2, 6, 4, 4, seed=81)
    state = carried_matrix_state(current, seed=82)
    expected, _ = oracle_matrix(flow, oracle_gates({"lr": flow["eta"]}, flow["eta"]), state.params["W"], 2, deltanet_step)
    for mem in (current, anchor):
        y, _ = run_memory(mem, flow, {"lr": flow["eta"]}, state)
        assert_close(expected, y, "a lone gd at C = 1 is the delta rule")
    _, retain_current = compiled_memory(tmp_path, "retain_gd_current", "retain, gd at current")
    _, retain_anchor = compiled_memory(tmp_path, "retain_gd", "retain, gd")
    gates = {"lr": flow["eta"], "retain": flow["alpha"]}
    y1, _ = run_memory(retain_current, flow, gates, state)
    y2, _ = run_memory(retain_anchor, flow, gates, state)
    assert (y1 - y2).abs().max().item() > 1e-3


@pytest.mark.parametrize("memory_type", ["linear", "mlp(depth = 2, hidden = 4, act = silu)"])
def test_init_zero_starts_from_zero_and_init_by_learns_theta0(memory_type, tmp_path):
    """`init zero`: θ_0 = 0 (not learned, also for an MLP memory); `init by pretrain`: θ_0 is a parameter."""
    for init in ("zero", "by pretrain"):
        text = MEMORY_SPEC.format(update="gd", objective="l2", chunk=2, read="after write", value="v")
        text = text.replace("memory mem : linear per head {", f"memory mem : {memory_type} per head {{\n      init      {init}")
        text = text.replace("      retain    alpha\n", "").replace("      momentum  beta\n", "")
        name = f"init_{'zero' if init == 'zero' else 'by'}"
        model = build(write_spec(tmp_path, text, f"{name}.nl"), tmp_path / name)
        mem = model.mix.mem
        params = dict(mem.named_parameters(recurse=False))
        buffers = dict(mem.named_buffers(recurse=False))
        if init == "zero":
            assert not params and buffers
            assert all(torch.count_nonzero(b) == 0 for b in buffers.values()), "init zero is not zero"
        else:
            assert params and not buffers
