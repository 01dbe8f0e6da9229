"""Known answers for plugins/sharpness/analysis.py: planted spectra, exact Hessians, closed forms."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from plugins.sharpness import analysis as A


# ---------------------------------------------------------------------------------------------
# Helpers: planted spectra and exact Hessians
# ---------------------------------------------------------------------------------------------
def planted(eigs, seed=0):
    """A dense symmetric matrix with the given eigenvalues in a random basis."""
    n = len(eigs)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return U @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ U.T


def spectrum(top, n=400, seed=0, bottom=None):
    """Top eigenvalues given, a Hessian-like bulk below 0.6 (mostly near zero, some negative)."""
    rng = np.random.default_rng(seed)
    e = np.concatenate([rng.uniform(-0.05, 0.6, n // 4), rng.exponential(0.03, n - n // 4)])
    e[: len(top)] = top
    if bottom is not None:
        e[-1] = bottom
    return e


def tiny_mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 8), nn.ReLU(),
                         nn.Linear(8, 3)).to(dtype)


def tiny_batches(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (30,), generator=g)
    return [(x[:20], y[:20]), (x[20:], y[20:])]  # unequal sizes: weights matter


def exact_hessian(model, loss_fn, batches):
    """The Hessian of the sample-weighted mean loss, by torch.autograd.functional.hessian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = A.flatten([p.detach() for p in model.parameters()])
    total = sum(len(x) for x, _ in batches)

    def f(flat):
        params = dict(zip(names, [c.view(s) for c, s in zip(flat.split([math.prod(s) for s in shapes]),
                                                              shapes)]))
        return sum(loss_fn(functional_call(model, params, (x,)), y) * len(x) / total for x, y in batches)

    return torch.autograd.functional.hessian(f, flat0)


# ---------------------------------------------------------------------------------------------
# Lanczos
# ---------------------------------------------------------------------------------------------
CASES = {
    "large gap": spectrum([1.0]),
    "ratio 0.95": spectrum([1.0, 0.95]),
    "ratio 0.99": spectrum([1.0, 0.99]),
    "|min| > max": spectrum([1.0], bottom=-3.0),
    "repeated top": spectrum([1.0, 1.0]),
}


@pytest.mark.parametrize("name", CASES)
def test_lanczos_top_eigenvalue_known_spectra(name):
    eigs = CASES[name]
    mat = planted(eigs)
    res = A.lanczos_top(lambda v: mat @ v, len(eigs), k=1, tol=1e-4)
    assert res.converged
    assert res.n_matvec <= 30
    assert res.values[0] == pytest.approx(1.0, rel=1e-4)  # algebraic max, even when |λ_min| = 3
    v = res.vectors[:, 0]
    assert float(v.norm()) == pytest.approx(1.0)
    assert float((mat @ v - res.values[0] * v).norm()) <= 1e-4 + 1e-12
    assert res.residuals[0] <= 1e-4


def test_lanczos_k3_finds_repeated_and_close_eigenvalues():
    eigs = spectrum([2.0, 2.0, 1.9])
    mat = planted(eigs, seed=3)
    res = A.lanczos_top(lambda v: mat @ v, len(eigs), k=3, tol=1e-6)
    assert res.converged
    np.testing.assert_allclose(res.values, [2.0, 2.0, 1.9], rtol=1e-6)
    V = res.vectors
    np.testing.assert_allclose((V.T @ V).numpy(), np.eye(3), atol=1e-10)
    np.testing.assert_allclose((mat @ V).numpy(), (V * torch.as_tensor(res.values)).numpy(), atol=1e-5)


def test_lanczos_smallest_eigenvalue():
    eigs = spectrum([1.0], bottom=-3.0)
    mat = planted(eigs)
    res = A.lanczos_top(lambda v: mat @ v, len(eigs), tol=1e-6, smallest=True)
    assert res.smallest == pytest.approx(-3.0, rel=1e-6)
    assert res.values[0] == pytest.approx(1.0, rel=1e-6)
    v = res.smallest_vector
    assert float((mat @ v + 3.0 * v).norm()) < 1e-5


def test_lanczos_warm_start_from_eigenvector_costs_little():
    eigs = CASES["ratio 0.99"]
    mat = planted(eigs)
    cold = A.lanczos_top(lambda v: mat @ v, len(eigs), tol=1e-4)
    perturbed = cold.vectors[:, 0] + 1e-3 * torch.randn(len(eigs), dtype=torch.float64)
    warm = A.lanczos_top(lambda v: mat @ v, len(eigs), tol=1e-4, v0=perturbed)
    assert warm.values[0] == pytest.approx(1.0, rel=1e-4)
    assert warm.n_matvec < cold.n_matvec / 2


def test_lanczos_exact_on_tiny_operator_and_float32():
    eigs = [3.0, -1.0, 0.5, 0.25, 2.0]
    mat = planted(eigs).float()
    res = A.lanczos_top(lambda v: mat @ v, 5, k=2, tol=1e-5, max_iter=10, dtype=torch.float32)
    assert res.vectors.dtype == torch.float32
    np.testing.assert_allclose(res.values, [3.0, 2.0], rtol=1e-5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(k=6), "k"), (dict(tol=0.0), "tol"), (dict(max_iter=0), "max_iter"),
    (dict(v0=torch.ones(4)), "v0")])
def test_lanczos_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        A.lanczos_top(lambda v: v, 5, **kwargs)


# ---------------------------------------------------------------------------------------------
# Hessians of a real model
# ---------------------------------------------------------------------------------------------
def test_hessian_eigs_match_exact_hessian_of_tiny_mlp():
    model, batches = tiny_mlp(), tiny_batches()
    loss_fn = nn.functional.cross_entropy
    H = exact_hessian(model, loss_fn, batches)
    exact = np.linalg.eigvalsh(H.numpy())
    res = A.hessian_eigs(model, loss_fn, batches, k=3, tol=1e-8, smallest=True)
    assert res.converged and res.vectors.dtype == torch.float64
    np.testing.assert_allclose(res.values, exact[::-1][:3], rtol=1e-6)
    assert res.smallest == pytest.approx(exact[0], rel=1e-6)


def test_hessian_operator_products_match_exact_and_keep_batchnorm_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    batches = tiny_batches()
    before = [b.clone() for b in model.buffers()]
    op = A.HessianOperator(model, nn.functional.cross_entropy, batches, shift=0.3)
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), before))
    H = exact_hessian(model, nn.functional.cross_entropy, batches)  # also in train mode
    v = torch.randn(op.dim, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v).numpy(), (H @ v + 0.3 * v).numpy(), rtol=1e-8, atol=1e-10)


def test_hutchpp_trace_within_one_percent_and_stderr_covers_truth():
    eigs = np.concatenate([np.linspace(10, 1, 20), np.random.default_rng(0).uniform(0, 0.3, 480)])
    mat = planted(eigs)
    truth = eigs.sum()
    est = A.hutchpp(lambda v: mat @ v, len(eigs), n_matvec=99)
    assert est.n_matvec == 99
    assert abs(est.value - truth) < 0.01 * truth
    assert abs(est.value - truth) < 3 * est.stderr
    covered = [abs(e.value - truth) < 2 * e.stderr for e in
               (A.hutchpp(lambda v: mat @ v, len(eigs), n_matvec=30, seed=s) for s in range(40))]
    assert np.mean(covered) >= 0.85  # a 2-sigma interval should cover about 95%


def test_hessian_trace_of_tiny_mlp():
    model, batches = tiny_mlp(), tiny_batches()
    truth = float(torch.trace(exact_hessian(model, nn.functional.cross_entropy, batches)))
    est = A.hessian_trace(model, nn.functional.cross_entropy, batches, n_hvp=60)
    assert abs(est.value - truth) < max(4 * est.stderr, 1e-9)


def test_slq_gauss_quadrature_moments_exact_on_diagonal_operator():
    # For a diagonal A every Rademacher z gives zᵀAᵖz = tr(Aᵖ): the quadrature must match exactly.
    a = torch.linspace(-1.0, 2.0, 60, dtype=torch.float64) ** 3
    nodes, weights = A.slq(lambda v: a * v, 60, n_vectors=2, n_steps=8)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    for p in range(1, 16):
        np.testing.assert_allclose((weights * nodes ** p).sum(axis=1), float((a ** p).mean()),
                                   rtol=1e-8, atol=1e-10)


def test_spectral_density_of_tiny_mlp_brackets_the_spectrum():
    model, batches = tiny_mlp(), tiny_batches()
    exact = np.linalg.eigvalsh(exact_hessian(model, nn.functional.cross_entropy, batches).numpy())
    sd = A.spectral_density(model, nn.functional.cross_entropy, batches, n_vectors=3, n_steps=40)
    assert sd.nodes.min() >= exact[0] - 1e-9 and sd.nodes.max() <= exact[-1] + 1e-9  # interlacing
    assert sd.nodes.max() == pytest.approx(exact[-1], rel=1e-6)
    integral = np.trapezoid(sd.density, sd.grid)
    assert integral == pytest.approx(1.0, abs=0.01)
    assert sd.n_matvec == 120


def test_batch_sharpness_is_rayleigh_quotient_of_exact_hessian():
    model, batches = tiny_mlp(), tiny_batches()
    x, y = batches[0]
    params = list(model.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    H = exact_hessian(model, nn.functional.cross_entropy, [batches[0]])
    g = A.flatten([t.detach() for t in grads])
    assert A.batch_sharpness(grads, params) == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-8)
    d = torch.rand(len(g), dtype=torch.float64) + 0.5
    u = d * d * g
    expected = float(u @ H @ u + 0.1 * u @ u) / float((d * g) @ (d * g))
    assert A.batch_sharpness(grads, params, scale=d, shift=0.1) == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# Edge-of-stability thresholds: a quadratic just below the threshold converges, just above diverges
# ---------------------------------------------------------------------------------------------
def _escapes(update, steps=3000):
    """Iterate x ← update(); True when |x| blows up, False when it settles at 0."""
    for _ in range(steps):
        x = abs(update())
        if x > 1e6 or x < 1e-8:
            break
    return x > 1e6


def _sgd_escapes(make_opt, curvature):
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = make_opt([x])

    def update():
        opt.zero_grad()
        (0.5 * curvature * x ** 2).sum().backward()
        opt.step()
        return float(x.detach())
    return _escapes(update)


@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9), dict(momentum=0.5, dampening=0.3),
                                    dict(momentum=0.9, nesterov=True)])
def test_sgd_threshold_separates_stable_from_unstable(kwargs):
    def make(params):
        return torch.optim.SGD(params, lr=0.05, **kwargs)
    thr = A.eos_threshold(make([torch.zeros(1, requires_grad=True)]))
    assert not thr.preconditioned
    assert not _sgd_escapes(make, 0.98 * thr.value)
    assert _sgd_escapes(make, 1.02 * thr.value)


def test_adam_threshold_matches_frozen_preconditioner_dynamics():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01, betas=(0.9, 0.999))
    thr = A.eos_threshold(opt)
    assert thr.preconditioned

    def escapes(sharpness):  # Adam's update with P fixed: m ← β₁m + (1−β₁)g, x ← x − η m / P
        state = {"x": 1.0, "m": 0.0}

        def update():
            state["m"] = 0.9 * state["m"] + 0.1 * sharpness * state["x"]
            state["x"] -= 0.01 * state["m"]
            return state["x"]
        return _escapes(update)
    assert not escapes(0.98 * thr.value) and escapes(1.02 * thr.value)


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: torch.optim.Adam(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)],
                         ids=["sgd", "heavy ball", "adam", "adamw"])
def test_at_lr_zero_the_threshold_is_infinite_but_still_the_optimizers(make):
    # The end of a cosine schedule: no step size is unstable, yet Adam's sharpness is still the
    # preconditioned one (comparing the raw Hessian there made the last measurement collapse).
    opt = make([torch.zeros(1, requires_grad=True)])
    preconditioned = A.eos_threshold(opt).preconditioned
    opt.param_groups[0]["lr"] = 0.0
    at_zero = A.eos_threshold(opt)
    assert at_zero.value == float("inf") and at_zero.preconditioned == preconditioned
    assert preconditioned == isinstance(opt, torch.optim.Adam | torch.optim.AdamW)


def test_adam_preconditioner_of_a_parameter_adam_never_stepped():
    used, unused = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([used, unused], lr=0.01, eps=1e-8)
    used.grad = torch.tensor([0.5, -2.0])
    opt.step()  # `unused` had no gradient: Adam keeps no state for it
    d = A.adam_preconditioner(opt, [used, unused])
    torch.testing.assert_close(d, torch.cat([1 / torch.sqrt(torch.tensor([0.5, 2.0]) + 1e-8),
                                             torch.full((3,), 1e4)]), rtol=1e-5, atol=0)


def test_adam_preconditioner_and_weight_decay():
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, eps=1e-8, weight_decay=0.0)
    assert A.adam_preconditioner(opt, [w]) is None
    g = torch.tensor([0.5, -2.0, 1e-3])
    for _ in range(3):  # constant gradients: the bias-corrected v̂ equals g² exactly
        w.grad = g.clone()
        opt.step()
    d = A.adam_preconditioner(opt, [w])
    torch.testing.assert_close(d, 1 / torch.sqrt(g.abs() + 1e-8), rtol=1e-5, atol=0)
    assert A.coupled_weight_decay(torch.optim.SGD([w], lr=0.1, weight_decay=0.01)) == 0.01
    assert A.coupled_weight_decay(torch.optim.AdamW([w], lr=0.1, weight_decay=0.01)) == 0.0


# ---------------------------------------------------------------------------------------------
# Loss slices
# ---------------------------------------------------------------------------------------------
def test_loss_slice_of_least_squares_is_the_exact_quadratic():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randn(40, 2, dtype=torch.float64)
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]
    before = [p.detach().clone() for p in model.parameters()]
    sl = A.loss_slice(model, nn.functional.mse_loss, batches, directions=1, steps=11, span=0.5)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    dW, db = sl.directions[0]
    assert torch.equal(db, torch.zeros_like(db))  # biases are not moved
    torch.testing.assert_close(dW.norm(dim=1), model.weight.detach().norm(dim=1))  # filter-normalised
    # mse over 2 outputs: L(W) = ‖xWᵀ + b − y‖² / (2n)  →  curvature along dW = ‖x dWᵀ‖² / n
    curvature = float((x @ dW.T).pow(2).sum() / len(x))
    coef = np.polyfit(sl.alphas, sl.losses, 2)
    np.testing.assert_allclose(np.polyval(coef, sl.alphas), sl.losses, atol=1e-12)
    assert 2 * coef[0] == pytest.approx(curvature, rel=1e-9)
    assert sl.losses[5] == pytest.approx(A.mean_loss(model, nn.functional.mse_loss, batches), rel=1e-12)


def test_loss_slice_2d_matches_direct_evaluation_and_restores_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    batches = tiny_batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sl = A.loss_slice(model, nn.functional.cross_entropy, batches, directions=2, steps=5, span=1.0)
    assert sl.losses.shape == (5, 5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    d1, d2 = sl.directions
    names = [n for n, _ in model.named_parameters()]
    moved = {n: p.detach() + 0.5 * a - 1.0 * b for n, p, a, b in zip(names, model.parameters(), d1, d2)}
    total = 30
    with torch.no_grad():
        direct = sum(float(nn.functional.cross_entropy(functional_call(model, moved, (x,)), y)) * len(x)
                     for x, y in batches) / total
    assert sl.losses[3, 0] == pytest.approx(direct, rel=1e-10)  # alphas[3] = 0.5, alphas[0] = -1


def test_loss_slice_rejects_three_directions():
    with pytest.raises(ValueError, match="directions"):
        A.loss_slice(tiny_mlp(), nn.functional.cross_entropy, tiny_batches(), directions=3)


# ---------------------------------------------------------------------------------------------
# The edge of stability itself (Cohen et al. 2021): full-batch GD, MSE, a small tanh MLP
# ---------------------------------------------------------------------------------------------
def test_full_batch_gd_sharpens_to_two_over_lr_and_hovers():
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = torch.sin(x @ torch.randn(8, 2))
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    assert sum(p.numel() for p in model.parameters()) <= 2000
    lr = 0.2
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    assert A.eos_threshold(opt).value == pytest.approx(2 / lr)
    lam, v = {}, None
    for step in range(700):
        if step % 25 == 0:
            res = A.hessian_eigs(model, nn.functional.mse_loss, [(x, y)], tol=1e-3, v0=v)
            lam[step], v = res.values[0], res.vectors
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    thr = 2 / lr
    assert lam[0] < 0.3 * thr  # starts far below the edge ...
    late = [val for s, val in lam.items() if s >= 400]
    assert abs(np.median(late) / thr - 1) < 0.1  # ... and hovers at it
    assert max(late) < 1.3 * thr


def test_filter_normalisation_of_conv_filters():
    conv = nn.Conv2d(3, 4, 3)
    bn = nn.BatchNorm2d(4)
    d_conv, d_bias, d_bn = A.filter_normalized_direction([conv.weight, conv.bias, bn.weight],
                                                         torch.Generator().manual_seed(0))
    torch.testing.assert_close(d_conv.flatten(1).norm(dim=1), conv.weight.detach().flatten(1).norm(dim=1))
    assert not d_bias.any() and not d_bn.any()


def test_deflated_trace_on_a_lanczos_basis():
    eigs = np.concatenate([np.linspace(10, 1, 20), np.random.default_rng(0).uniform(0, 0.3, 480)])
    mat = planted(eigs)
    res = A.lanczos_top(lambda v: mat @ v, len(eigs), tol=1e-8)
    assert res.basis_trace == pytest.approx(float(torch.trace(res.basis.T @ mat @ res.basis)), rel=1e-10)
    est = A.deflated_trace(lambda v: mat @ v, res.basis, res.basis_trace, 10)
    assert est.n_matvec == 10
    assert abs(est.value - eigs.sum()) < min(0.01 * eigs.sum(), 3 * est.stderr)
