"""Optimizer levels (nldsl.runtime.optim): formulas against hand-written loops, convergence, state."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nldsl import schema
from nldsl.runtime.optim import (
    M3, NS_CUBIC, NS_QUINTIC, OPTIMIZERS, SGD, AdamW, DeepMomentum, Momentum, Muon, make_optimizer,
    newton_schulz, optimizer_args,
)
from nldsl.runtime.optim.deep_momentum import memory_grad, memory_read

F64 = torch.float64
KINDS = list(schema.OPTIMIZER_ARGS)


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: one intra-op thread is fastest and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rand(*shape, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------- problems


def quadratic():
    """f(W, b) = ½ Σ d ⊙ (W − T)² + ½ ‖b − c‖², d ∈ [0.5, 4.5]: convex, condition number 9."""
    g = torch.Generator().manual_seed(1)
    d = torch.rand(8, 6, generator=g, dtype=F64) * 4 + 0.5
    target, c = rand(8, 6, seed=2), rand(6, seed=3)
    return lambda W, b: 0.5 * (d * (W - target) ** 2).sum() + 0.5 * ((b - c) ** 2).sum()


def least_squares():
    """f(W, b) = ½ mean_rows ‖X W + b − Y‖², 64 rows, 8 → 6, a little noise."""
    X, W0, b0 = rand(64, 8, seed=4), rand(8, 6, seed=5), rand(6, seed=6)
    Y = X @ W0 + b0 + 0.01 * rand(64, 6, seed=7)
    return lambda W, b: 0.5 * ((X @ W + b - Y) ** 2).mean(0).sum()


# lr per kind for the two problems above, and the fraction of the initial loss that must remain at most
# after 200 steps. M3 is Algorithm 1 as written: its M1 and V are undecayed sums (a frictionless
# momentum whose step shrinks like 1/√t), so it only makes slow, uneven progress; its bound is loose.
CONVERGENCE = {
    'sgd': (dict(lr=0.1), 1e-3),
    'momentum': (dict(lr=0.02), 1e-3),
    'adamw': (dict(lr=0.05), 1e-3),
    'muon': (dict(lr=0.02), 0.05),
    'm3': (dict(lr=0.02, frequency=4), 0.95),
    'deep_momentum': (dict(lr=0.02), 1e-3),
}


def run(opt, loss_fn, params, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('problem', [quadratic, least_squares], ids=['quadratic', 'least_squares'])
@pytest.mark.parametrize('kind', KINDS)
def test_each_optimizer_decreases_the_loss(kind, problem):
    loss_fn = problem()
    params = [torch.zeros(8, 6, dtype=F64, requires_grad=True), torch.zeros(6, dtype=F64, requires_grad=True)]
    args, bound = CONVERGENCE[kind]
    opt = make_optimizer(kind, params, **args)
    start = loss_fn(*params).item()
    losses = run(opt, loss_fn, params, 200)
    final = loss_fn(*params).item()
    assert math.isfinite(final)
    assert final < bound * start, (kind, start, losses[::20], final)


# ---------------------------------------------------------------- factory


def test_make_optimizer_maps_every_spec_name_with_the_spec_defaults():
    assert set(OPTIMIZERS) == set(schema.OPTIMIZER_ARGS)
    p = torch.zeros(3, 2, requires_grad=True)
    for kind, spec_args in schema.OPTIMIZER_ARGS.items():
        accepted = optimizer_args(kind)
        for name, default in spec_args.items():
            assert name in accepted, (kind, name)
            assert accepted[name] == default, (kind, name, accepted[name], default)
        given = {k: (1e-3 if k == 'lr' else v) for k, v in spec_args.items()}
        opt = make_optimizer(kind, [p], **given)
        assert type(opt) is OPTIMIZERS[kind]
        assert isinstance(opt, torch.optim.Optimizer)
        for name, value in given.items():
            assert opt.param_groups[0][name] == value, (kind, name)


def test_make_optimizer_rejects_unknown_names_and_accepts_json_betas():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match='unknown optimizer'):
        make_optimizer('adam', [p], lr=1e-3)
    with pytest.raises(ValueError, match='unknown argument.*momentum'):
        make_optimizer('sgd', [p], lr=1e-3, momentum=0.9)
    with pytest.raises(ValueError, match='learning rate'):
        make_optimizer('muon', [p])
    with pytest.raises(ValueError, match='beta'):
        make_optimizer('momentum', [p], lr=1e-3, beta=1.0)
    with pytest.raises(ValueError, match='frequency'):
        make_optimizer('m3', [p], lr=1e-3, frequency=0)
    opt = make_optimizer('adamw', [p], lr=1e-3, betas=[0.9, 0.95])
    assert opt.param_groups[0]['betas'] == (0.9, 0.95)


# ---------------------------------------------------------------- SGD, momentum, AdamW


def grads_of(loss_fn, params):
    for p in params:
        p.grad = None
    loss_fn(*params).backward()


def test_sgd_matches_torch_sgd():
    loss_fn = least_squares()
    ours = [torch.zeros(8, 6, dtype=F64, requires_grad=True), torch.zeros(6, dtype=F64, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = SGD(ours, lr=0.05, weight_decay=0.01), torch.optim.SGD(theirs, lr=0.05, weight_decay=0.01)
    run(a, loss_fn, ours, 20)
    run(b, loss_fn, theirs, 20)
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-13)


def test_momentum_follows_the_papers_recurrence():
    """m ← β m − lr (g + wd θ); θ ← θ + m, with lr changed halfway (the form matters then)."""
    loss_fn = quadratic()
    W = torch.zeros(8, 6, dtype=F64, requires_grad=True)
    b = torch.zeros(6, dtype=F64, requires_grad=True)
    opt = Momentum([W, b], lr=0.02, beta=0.8, weight_decay=0.05)
    hand = [W.detach().clone(), b.detach().clone()]
    m = [torch.zeros_like(x) for x in hand]
    for step in range(12):
        lr = 0.02 if step < 6 else 0.005
        opt.param_groups[0]['lr'] = lr
        grads_of(loss_fn, [W, b])
        opt.step()
        hp = [x.clone().requires_grad_() for x in hand]
        loss_fn(*hp).backward()
        for i, x in enumerate(hp):
            m[i] = 0.8 * m[i] - lr * (x.grad + 0.05 * hand[i])
            hand[i] = hand[i] + m[i]
        torch.testing.assert_close(W.detach(), hand[0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(b.detach(), hand[1], rtol=1e-12, atol=1e-13)


def test_momentum_equals_torch_heavy_ball_at_constant_lr():
    loss_fn = least_squares()
    ours = [torch.zeros(8, 6, dtype=F64, requires_grad=True), torch.zeros(6, dtype=F64, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    run(Momentum(ours, lr=0.03, beta=0.9), loss_fn, ours, 30)
    run(torch.optim.SGD(theirs, lr=0.03, momentum=0.9), loss_fn, theirs, 30)
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_adamw_equals_torch_adamw_exactly():
    loss_fn = least_squares()
    ours = [rand(8, 6, seed=8).requires_grad_(), rand(6, seed=9).requires_grad_()]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    args = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    run(AdamW(ours, **args), loss_fn, ours, 15)
    run(torch.optim.AdamW(theirs, **args), loss_fn, theirs, 15)
    for x, y in zip(ours, theirs):
        assert torch.equal(x, y)


# ---------------------------------------------------------------- Newton–Schulz and Muon


@pytest.mark.parametrize('shape', [(32, 32), (64, 16), (16, 64), (3, 200), (100, 7)])
def test_newton_schulz_quintic_gives_near_orthogonal_matrices(shape):
    for seed in range(3):
        G = rand(*shape, seed=seed, dtype=torch.float32)
        s = torch.linalg.svdvals(newton_schulz(G, 5, NS_QUINTIC).double())
        assert s.min() > 0.6 and s.max() < 1.25, (shape, s.min().item(), s.max().item())


@pytest.mark.parametrize('shape', [(12, 12), (20, 8), (8, 20)])
def test_newton_schulz_cubic_converges_to_the_polar_factor(shape):
    """Enough cubic steps give U Vᵀ of G = U Σ Vᵀ exactly (well-conditioned G)."""
    G = rand(*shape, seed=11) + 3 * torch.eye(*shape, dtype=F64)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    X = newton_schulz(G, 40, NS_CUBIC)
    torch.testing.assert_close(X, U @ Vh, rtol=0, atol=1e-10)
    # the quintic keeps the singular vectors and lands within its band around the same polar factor
    Q = newton_schulz(G, 5, NS_QUINTIC)
    assert torch.linalg.matrix_norm(Q - U @ Vh, ord=2) < 0.35


def test_newton_schulz_edge_cases():
    assert torch.equal(newton_schulz(torch.zeros(4, 3), 5), torch.zeros(4, 3))
    out = newton_schulz(rand(6, 4, dtype=torch.bfloat16), 5)
    assert out.dtype == torch.bfloat16 and out.shape == (6, 4)
    with pytest.raises(ValueError):
        newton_schulz(torch.zeros(2, 3, 4), 5)


@pytest.mark.parametrize('shape', [(64, 64), (128, 32), (32, 128), (16, 4, 3, 3)])
def test_muon_update_rms_is_lr_for_every_shape(shape):
    p = torch.zeros(*shape, requires_grad=True)
    opt = Muon([p], lr=0.01)
    p.grad = rand(*shape, seed=3, dtype=torch.float32)
    opt.step()
    rms = p.detach().square().mean().sqrt().item()
    assert 0.006 < rms < 0.012, rms


def test_muon_matrix_step_and_vector_fallback_follow_the_formulas():
    W = rand(10, 6, seed=1).requires_grad_()
    b = rand(6, seed=2).requires_grad_()
    s = torch.tensor(0.5, dtype=F64, requires_grad=True)
    opt = Muon([W, b, s], lr=0.03, beta=0.9, ns_steps=4, weight_decay=0.1)
    hand = [x.detach().clone() for x in (W, b, s)]
    m = [torch.zeros_like(x) for x in hand]
    for step in range(4):
        gs = [rand(*x.shape, seed=100 + 3 * step + i) for i, x in enumerate(hand)]
        for x, g in zip((W, b, s), gs):
            x.grad = g.clone()
        opt.step()
        for i, g in enumerate(gs):
            m[i] = 0.9 * m[i] + g
            d = newton_schulz(m[i], 4, NS_QUINTIC) * math.sqrt(10) if i == 0 else m[i]
            hand[i] = hand[i] - 0.03 * 0.1 * hand[i] - 0.03 * d
        for x, h in zip((W, b, s), hand):
            torch.testing.assert_close(x.detach(), h, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- M3


def test_m3_follows_algorithm_1_step_by_step():
    """Frequency 3 over 7 steps against a loop written as Algorithm 1 (outer chunks k, inner steps t)."""
    f, T, lr, b1, b2, b3, alpha, eps = 3, 5, 0.05, 0.9, 0.99, 0.7, 0.8, 1e-8
    loss_fn = least_squares()
    W = rand(8, 6, seed=20).requires_grad_()
    b = rand(6, seed=21).requires_grad_()
    opt = M3([W, b], lr=lr, beta1=b1, beta2=b2, beta3=b3, alpha=alpha, frequency=f, ns_steps=T, eps=eps)

    def NS(x):
        return newton_schulz(x, T, NS_QUINTIC) if x.ndim == 2 else x

    theta = [W.detach().clone(), b.detach().clone()]
    M1 = [torch.zeros_like(x) for x in theta]
    M2 = [torch.zeros_like(x) for x in theta]
    V = [torch.zeros_like(x) for x in theta]
    chunk_grads = []            # g_i of the previous chunk
    t = 0
    for k in range(3):          # chunks of f steps: t = kf+1 … (k+1)f
        for i in range(2):      # slow memory, from the previous chunk's gradients (none for k = 0)
            M2[i] = M2[i] + b3 * sum((g[i] for g in chunk_grads), torch.zeros_like(theta[i]))
        O2 = [NS(x) for x in M2]
        chunk_grads = []
        for _ in range(f):
            t += 1
            if t > 7:
                break
            hp = [x.clone().requires_grad_() for x in theta]
            loss_fn(*hp).backward()
            g = [x.grad for x in hp]
            chunk_grads.append(g)
            for i in range(2):
                M1[i] = M1[i] + b1 * g[i]
                V[i] = V[i] + b2 * g[i] ** 2
                O1 = NS(M1[i])
                theta[i] = theta[i] - lr * (O1 + alpha * O2[i]) / (V[i].sqrt() + eps)
            grads_of(loss_fn, [W, b])
            opt.step()
            torch.testing.assert_close(W.detach(), theta[0], rtol=1e-12, atol=1e-12, msg=f'step {t}')
            torch.testing.assert_close(b.detach(), theta[1], rtol=1e-12, atol=1e-12, msg=f'step {t}')
    assert t == 8
    state = opt.state[W]
    assert state['step'] == 7
    torch.testing.assert_close(state['M1'], M1[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(state['V'], V[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(state['M2'], M2[0], rtol=1e-12, atol=0)     # refreshed after steps 3 and 6


def test_m3_moments_are_sums_not_averages():
    p = torch.zeros(3, requires_grad=True, dtype=F64)
    opt = M3([p], lr=1e-3, beta1=0.5, beta2=0.25, frequency=2)
    gs = [torch.tensor([1.0, -2.0, 3.0], dtype=F64) * (i + 1) for i in range(4)]
    for g in gs:
        p.grad = g.clone()
        opt.step()
    st = opt.state[p]
    torch.testing.assert_close(st['M1'], 0.5 * sum(gs))
    torch.testing.assert_close(st['V'], 0.25 * sum(g ** 2 for g in gs))
    torch.testing.assert_close(st['M2'], 0.9 * sum(gs))          # two windows of 2, both closed
    torch.testing.assert_close(st['O2'], st['M2'])                # NS is the identity for vectors
    assert torch.equal(st['window_sum'], torch.zeros(3, dtype=F64))


# ---------------------------------------------------------------- Deep momentum


def test_deep_momentum_memory_gradient_matches_autograd():
    u = rand(50, seed=30)
    w1, b1, w2 = rand(5, seed=31), rand(5, seed=32), rand(5, seed=33)
    loss, g1, gb, g2 = memory_grad(u, w1, b1, w2)
    params = [x.clone().requires_grad_() for x in (w1, b1, w2)]
    ref = 0.5 * (memory_read(u, *params) - u).square().mean()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    for mine, p in zip((g1, gb, g2), params):
        torch.testing.assert_close(mine, p.grad, rtol=1e-12, atol=1e-14)


def test_deep_momentum_starts_as_momentum_and_learns_its_memory():
    p = torch.zeros(40, 30, dtype=F64, requires_grad=True)
    q = torch.zeros(40, 30, dtype=F64, requires_grad=True)
    deep, plain = DeepMomentum([p], lr=0.1, beta=0.9), Momentum([q], lr=0.1, beta=0.9)
    g = rand(40, 30, seed=40)
    p.grad, q.grad = g.clone(), g.clone()
    deep.step()
    plain.step()
    assert (torch.linalg.vector_norm(p - q) / torch.linalg.vector_norm(q)).item() < 0.02

    # heavy-tailed gradients: the inner objective falls as the memory adapts to them
    st = deep.state[p]
    stream = [rand(40, 30, seed=50 + i) ** 3 for i in range(60)]

    def inner_loss(x):
        u = (x / x.square().mean().sqrt()).reshape(-1)
        return memory_grad(u, st['w1'], st['b1'], st['w2'])[0].item()

    before = [inner_loss(x) for x in stream[-5:]]
    for x in stream:
        p.grad = x.clone()
        deep.step()
        assert torch.isfinite(p).all()
    after = [inner_loss(x) for x in stream[-5:]]
    assert sum(after) < 0.8 * sum(before), (before, after)
    # its read-out stays bounded: an outlier of 1000 RMS is squashed to a few RMS
    out = memory_read(torch.tensor([1000.0], dtype=F64), st['w1'], st['b1'], st['w2'])
    assert abs(out.item()) < 20


def test_deep_momentum_zero_gradient_only_carries_the_velocity():
    p = torch.ones(5, 4, dtype=F64, requires_grad=True)
    opt = DeepMomentum([p], lr=0.1, beta=0.5)
    p.grad = rand(5, 4, seed=60)
    opt.step()
    v = opt.state[p]['momentum_buffer'].clone()
    before = p.detach().clone()
    p.grad = torch.zeros(5, 4, dtype=F64)
    opt.step()
    torch.testing.assert_close(p.detach(), before + 0.5 * v, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------- state, norms, loop contract


RESUME_ARGS = {
    'sgd': dict(lr=0.05, weight_decay=0.01),
    'momentum': dict(lr=0.02, beta=0.9, weight_decay=0.01),
    'adamw': dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.1),
    'muon': dict(lr=0.01, weight_decay=0.01),
    'm3': dict(lr=0.01, frequency=3),
    'deep_momentum': dict(lr=0.02, hidden=8),
}


def resume_problem():
    X, Y = rand(16, 6, seed=70, dtype=torch.float32), rand(16, 4, seed=71, dtype=torch.float32)

    def loss_fn(W, V, b, s):
        return ((torch.tanh(X @ W) @ V + b) * s - Y).square().mean()

    params = [rand(6, 5, seed=72, dtype=torch.float32), rand(5, 4, seed=73, dtype=torch.float32),
              torch.zeros(4), torch.tensor(1.0)]
    return loss_fn, params


def save_state(sd) -> tuple[bytes, str]:
    """A state_dict as the trainer stores it: tensors to safetensors, everything else to JSON."""
    tensors, numbers = {}, {}
    for index, state in sd['state'].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f'{index}/{key}'] = value.contiguous()
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
                numbers[f'{index}/{key}'] = value
    return st_save(tensors), json.dumps({'numbers': numbers, 'param_groups': sd['param_groups']})


def load_state(blob: bytes, text: str) -> dict:
    meta = json.loads(text)
    state: dict = {}
    for name, value in [*st_load(blob).items(), *meta['numbers'].items()]:
        index, key = name.split('/', 1)
        state.setdefault(int(index), {})[key] = value
    return {'state': state, 'param_groups': meta['param_groups']}


@pytest.mark.parametrize('kind', KINDS)
def test_state_dict_round_trip_resumes_bit_exactly(kind):
    loss_fn, init = resume_problem()
    straight = [x.clone().requires_grad_() for x in init]
    opt = make_optimizer(kind, straight, **RESUME_ARGS[kind])
    run(opt, loss_fn, straight, 10)

    first = [x.clone().requires_grad_() for x in init]
    opt1 = make_optimizer(kind, first, **RESUME_ARGS[kind])
    run(opt1, loss_fn, first, 5)
    blob, text = save_state(opt1.state_dict())
    resumed = [x.detach().clone().requires_grad_() for x in first]
    opt2 = make_optimizer(kind, resumed, **RESUME_ARGS[kind])
    opt2.load_state_dict(load_state(blob, text))
    run(opt2, loss_fn, resumed, 5)

    for a, b in zip(straight, resumed):
        assert torch.equal(a, b), kind
    for pa, pb in zip(straight, resumed):
        sa, sb = opt.state[pa], opt2.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            same = torch.equal(sa[key], sb[key]) if isinstance(sa[key], torch.Tensor) else sa[key] == sb[key]
            assert same, (kind, key)
    assert opt.last_update_norm == opt2.last_update_norm
    # the loaded optimizer owns its state: stepping it did not touch the first optimizer's
    blob_again, _ = save_state(opt1.state_dict())
    assert blob_again == blob


@pytest.mark.parametrize('kind', KINDS)
def test_last_update_norm_is_the_norm_of_the_whole_change(kind):
    loss_fn, init = resume_problem()
    params = [x.clone().requires_grad_() for x in init]
    frozen = torch.zeros(3, requires_grad=True)          # no gradient: skipped, no state
    opt = make_optimizer(kind, params + [frozen], **RESUME_ARGS[kind])
    assert opt.last_update_norm == 0.0
    for _ in range(3):
        before = [x.detach().clone() for x in params]
        opt.zero_grad()
        loss_fn(*params).backward()
        opt.step()
        change = math.sqrt(sum((x.detach() - y).double().square().sum().item() for x, y in zip(params, before)))
        assert change > 0
        assert opt.last_update_norm == pytest.approx(change, rel=1e-5)
    assert frozen.grad is None and len(opt.state[frozen]) == 0 and torch.equal(frozen, torch.zeros(3))


@pytest.mark.parametrize('kind', KINDS)
def test_step_takes_a_closure(kind):
    loss_fn, init = resume_problem()
    params = [x.clone().requires_grad_() for x in init]
    opt = make_optimizer(kind, params, **RESUME_ARGS[kind])

    def closure():
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    assert opt.last_update_norm > 0
    for _ in range(20):
        last = opt.step(closure).item()
    assert last < first


@pytest.mark.parametrize('kind', KINDS)
def test_an_optimizer_loaded_from_a_live_state_dict_owns_its_state(kind):
    loss_fn, init = resume_problem()
    first = [x.clone().requires_grad_() for x in init]
    opt1 = make_optimizer(kind, first, **RESUME_ARGS[kind])
    run(opt1, loss_fn, first, 3)
    saved = save_state(opt1.state_dict())[0]
    second = [x.detach().clone().requires_grad_() for x in first]
    opt2 = make_optimizer(kind, second, **RESUME_ARGS[kind])
    opt2.load_state_dict(opt1.state_dict())
    run(opt2, loss_fn, second, 3)
    assert save_state(opt1.state_dict())[0] == saved


@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_deep_momentum_fresh_memories_do_not_share_state(dtype):
    def first_two_steps():
        p = torch.zeros(6, 5, dtype=dtype, requires_grad=True)
        opt = DeepMomentum([p], lr=0.1, hidden=4)
        for seed in (80, 81):
            p.grad = rand(6, 5, seed=seed, dtype=dtype) ** 3
            opt.step()
        return p.detach().clone(), opt.state[p]['w2'].clone()

    p1, w1 = first_two_steps()
    p2, w2 = first_two_steps()
    assert torch.equal(p1, p2) and torch.equal(w1, w2)
