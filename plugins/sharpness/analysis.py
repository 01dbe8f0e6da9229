"""Sharpness of a loss landscape from Hessian-vector products: pure torch, usable from a notebook.

Operators are functions of a flat vector; algorithms take any such function (hessian-eigenthings'
split). ``lanczos_top`` finds the algebraically largest eigenvalues (not the largest magnitude, as
power iteration does), ``hutchpp`` the trace, ``slq`` the spectral density. ``HessianOperator`` is
the Hessian of a model's mean loss over fixed batches; ``hessian_eigs``, ``hessian_trace`` and
``spectral_density`` apply the algorithms to it. ``eos_threshold`` and ``adam_preconditioner`` read
the optimizer actually used, so the sharpness is compared with the right edge of stability.

Example::

    res = hessian_eigs(model, torch.nn.functional.cross_entropy, [(x, y)], k=2)
    res.values, res.n_matvec, res.converged
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call

NEAR_ZERO = 0.1  # eigenvalues below this share of the largest |θ| are judged on that scale
Matvec = Callable[[torch.Tensor], torch.Tensor]
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------------------
# Flat vectors
# ---------------------------------------------------------------------------------------------
def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(vec.split([p.numel() for p in like]), like)]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: got {value!r}, expected an integer ≥ {minimum}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Block Lanczos with full reorthogonalisation
# ---------------------------------------------------------------------------------------------
class _Krylov:
    """An orthonormal Krylov basis grown one block at a time, with T = QᵀAQ kept exactly.

    T is assembled from the reorthogonalisation coefficients (each product is projected on the
    whole basis anyway), so Rayleigh-Ritz holds even where a column was replaced after breakdown.
    """

    def __init__(self, matvec: Matvec, start: torch.Tensor, generator: torch.Generator):
        self.matvec, self.gen = matvec, generator
        self.dim = start.shape[0]
        self.Q = _orthonormalize(start, start[:, :0], start.norm(dim=0), generator)
        self.edges = [0, self.Q.shape[1]]  # block j is Q[:, edges[j]:edges[j+1]]
        self.coef: list[np.ndarray] = []  # coef[j] = Q[:, :edges[j+1]]ᵀ A Q_j, in float64
        self.residual = torch.zeros_like(start)  # the last products' part outside the basis
        self.n_matvec = 0

    def step(self) -> None:
        """Apply A to the newest block, orthogonalise (twice) against the basis, grow the basis
        (the last block is cut short where the basis would outgrow the space)."""
        lo, hi = self.edges[len(self.coef)], self.edges[len(self.coef) + 1]
        W = torch.stack([self.matvec(self.Q[:, c]) for c in range(lo, hi)], dim=1)
        self.n_matvec += hi - lo
        scale = torch.linalg.vector_norm(W, dim=0)
        C = self.Q.T @ W
        W = W - self.Q @ C
        C2 = self.Q.T @ W
        W = W - self.Q @ C2
        self.coef.append((C + C2).double().cpu().numpy())
        self.residual = W
        room = min(W.shape[1], self.dim - self.Q.shape[1])
        if room:
            self.Q = torch.cat([self.Q, _orthonormalize(W[:, :room], self.Q, scale, self.gen)], dim=1)
            self.edges.append(self.Q.shape[1])

    def rayleigh(self) -> np.ndarray:
        """T = QᵀAQ over the blocks already multiplied, from the upper blocks (float64)."""
        n = self.edges[len(self.coef)]
        M = np.zeros((n, n))
        for j, C in enumerate(self.coef):
            M[: C.shape[0], self.edges[j]:self.edges[j + 1]] = C
        return np.triu(M) + np.triu(M, 1).T

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), their coordinates in the basis, and their residual norms."""
        theta, S = np.linalg.eigh(self.rayleigh())
        last = S[-self.residual.shape[1]:]
        last = torch.as_tensor(last, dtype=self.residual.dtype, device=self.residual.device)
        resid = torch.linalg.vector_norm(self.residual @ last, dim=0).double().cpu().numpy()
        return theta, S, resid

    def vectors(self, S: np.ndarray) -> torch.Tensor:
        basis = self.Q[:, : S.shape[0]]
        return basis @ torch.as_tensor(S, dtype=basis.dtype, device=basis.device)


def _orthonormalize(W: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor,
                    gen: torch.Generator) -> torch.Tensor:
    """W's columns, already orthogonal to the basis (``step`` projected them out twice), made
    orthonormal to each other; a column that vanishes (the Krylov space became invariant) is
    replaced by a random one made orthogonal to everything, so the search goes on."""
    out: list[torch.Tensor] = []
    tiny = 1e3 * torch.finfo(W.dtype).eps
    for c in range(W.shape[1]):
        w, ref = W[:, c], max(float(scale[c]), 1e-300)
        against = torch.stack(out, dim=1) if out else W[:, :0]
        for _ in range(3):
            for _ in range(2):
                w = w - against @ (against.T @ w)
            norm = torch.linalg.vector_norm(w)
            if float(norm) > tiny * ref:
                break
            w = torch.randn(W.shape[0], generator=gen, dtype=W.dtype).to(W.device)
            ref = float(torch.linalg.vector_norm(w))
            against = torch.cat([basis, *(v[:, None] for v in out)], dim=1)
        out.append(w / norm)
    return torch.stack(out, dim=1)


@dataclass
class LanczosResult:
    """Top-k eigenpairs of a symmetric operator and what they cost."""

    values: np.ndarray  # (k,) algebraically largest first
    vectors: torch.Tensor  # (dim, k), orthonormal
    residuals: np.ndarray  # (k,) ‖Av − θv‖
    n_matvec: int
    converged: bool
    smallest: float | None = None  # the algebraically smallest eigenvalue, when asked for
    smallest_vector: torch.Tensor | None = None
    basis: torch.Tensor | None = None  # (dim, m) the Krylov basis A was applied to
    basis_trace: float = 0.0  # tr(basisᵀ A basis): with ``deflated_trace``, a trace for little more


def _start_block(dim: int, b: int, v0, gen: torch.Generator, dtype, device) -> torch.Tensor:
    """v0's columns (a flat vector or a (dim, j) block), completed with Gaussian columns to b."""
    cols = []
    if v0 is not None:
        v0 = torch.as_tensor(v0)
        v0 = v0[:, None] if v0.dim() == 1 else v0
        if v0.dim() != 2 or v0.shape[0] != dim:
            raise ValueError(f"v0: got shape {tuple(v0.shape)}, expected ({dim},) or ({dim}, j)")
        cols = list(v0[:, :b].to(dtype=dtype, device=device).T)
    while len(cols) < b:
        cols.append(torch.randn(dim, generator=gen, dtype=dtype).to(device))
    return torch.stack(cols, dim=1)


def lanczos_top(matvec: Matvec, dim: int, k: int = 1, tol: float = 1e-4, max_iter: int = 100,
                v0=None, smallest: bool = False, seed: int = 0, dtype=None,
                device=None) -> LanczosResult:
    """The k algebraically largest eigenpairs of a symmetric operator by block Lanczos.

    Block size k with full reorthogonalisation, so a repeated eigenvalue shows up k times and no
    spurious copies appear. Stops when every wanted Ritz pair's residual r = ‖Av − θv‖ is below
    ``tol·|θ|`` (then an eigenvalue lies within r of θ, and in practice within r²/gap), or after
    ``max_iter`` blocks (``k·max_iter`` matvecs). θ near zero has no relative accuracy, so |θ| is
    floored at a tenth of the largest |θ|. The Ritz-gap estimate r²/δ is not used to stop: it
    misleads while a close second eigenvalue is still hidden.
    ``v0`` (a flat vector or a (dim, j) block, e.g. last time's eigenvectors) warm-starts it.
    ``smallest=True`` also converges the algebraically smallest eigenvalue.
    ``matvec`` takes and returns a flat tensor of length ``dim`` (default float64 on the CPU, else
    the dtype and device of ``v0``).
    """
    dim = _positive_int("dim", dim)
    k = _positive_int("k", k)
    max_iter = _positive_int("max_iter", max_iter)
    if k > dim:
        raise ValueError(f"k: got {k}, expected at most dim = {dim}")
    if not tol > 0:
        raise ValueError(f"tol: got {tol!r}, expected a positive number")
    if isinstance(v0, torch.Tensor):
        dtype, device = dtype or v0.dtype, device or v0.device
    dtype, device = dtype or torch.float64, device or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    kry = _Krylov(matvec, _start_block(dim, k, v0, gen, dtype, device), gen)
    wanted = list(range(-k, 0)) + ([0] if smallest else [])
    while True:
        kry.step()
        theta, S, resid = kry.ritz()
        scale = np.maximum(np.abs(theta), NEAR_ZERO * np.abs(theta).max(initial=1e-300))
        converged = bool(np.all(resid[wanted] <= tol * scale[wanted]))
        if converged or len(kry.coef) >= max_iter or len(kry.coef) == len(kry.edges) - 1:
            break
    top = list(range(len(theta) - 1, len(theta) - 1 - k, -1))
    return LanczosResult(
        values=theta[top], vectors=kry.vectors(S[:, top]), residuals=resid[top],
        n_matvec=kry.n_matvec, converged=converged,
        smallest=float(theta[0]) if smallest else None,
        smallest_vector=kry.vectors(S[:, :1])[:, 0] if smallest else None,
        basis=kry.Q[:, : S.shape[0]], basis_trace=float(np.trace(kry.rayleigh())))


# ---------------------------------------------------------------------------------------------
# Trace (Hutch++) and spectral density (stochastic Lanczos quadrature)
# ---------------------------------------------------------------------------------------------
@dataclass
class TraceEstimate:
    value: float
    stderr: float  # of the stochastic part, given the sketch
    n_matvec: int


def _rademacher(dim: int, n: int, gen: torch.Generator, dtype, device) -> torch.Tensor:
    return (torch.randint(0, 2, (dim, n), generator=gen) * 2 - 1).to(dtype=dtype, device=device)


def _apply(matvec: Matvec, V: torch.Tensor) -> torch.Tensor:
    return torch.stack([matvec(V[:, c]) for c in range(V.shape[1])], dim=1)


def hutchpp(matvec: Matvec, dim: int, n_matvec: int = 99, seed: int = 0, dtype=torch.float64,
            device="cpu") -> TraceEstimate:
    """tr(A) by Hutch++ (Meyer et al. 2021): exact trace on a sketched top subspace + Hutchinson on the rest.

    A third of the budget sketches the range, a third projects A on it, a third (at least two)
    samples the deflated remainder.
    """
    dim = _positive_int("dim", dim)
    n_matvec = _positive_int("n_matvec", n_matvec, 4)
    gen = torch.Generator().manual_seed(seed)
    s = min(n_matvec // 3, dim)
    Q, _ = torch.linalg.qr(_apply(matvec, _rademacher(dim, s, gen, dtype, device)))
    low_rank = float(torch.trace(Q.T @ _apply(matvec, Q)))
    est = deflated_trace(matvec, Q, low_rank, n_matvec - 2 * s, gen)
    return TraceEstimate(est.value, est.stderr, n_matvec)


def deflated_trace(matvec: Matvec, basis: torch.Tensor, basis_trace: float, n_samples: int,
                   gen: torch.Generator | int = 0) -> TraceEstimate:
    """tr(A) = tr(QᵀAQ) + Hutchinson on (I−QQᵀ)A(I−QQᵀ), for an orthonormal Q whose projected
    trace is known: Hutch++'s second half, and with a Lanczos basis (``LanczosResult.basis``) a
    trace for only ``n_samples`` more products. The standard error is that of the samples, so it
    is small exactly when Q caught the spectrum's heavy part (it is conditional on Q)."""
    n_samples = _positive_int("n_samples", n_samples, 2)
    gen = torch.Generator().manual_seed(gen) if isinstance(gen, int) else gen
    G = _rademacher(basis.shape[0], n_samples, gen, basis.dtype, basis.device)
    G = G - basis @ (basis.T @ G)
    samples = (G * _apply(matvec, G)).sum(dim=0).double().cpu().numpy()
    return TraceEstimate(basis_trace + float(samples.mean()),
                         float(samples.std(ddof=1) / math.sqrt(n_samples)), n_samples)


@dataclass
class SpectralDensity:
    nodes: np.ndarray  # (n_vectors, n_steps) Gauss quadrature nodes (Ritz values)
    weights: np.ndarray  # (n_vectors, n_steps), each row sums to 1
    grid: np.ndarray
    density: np.ndarray  # on grid, integrates to about 1
    sigma: float
    n_matvec: int


def slq(matvec: Matvec, dim: int, n_vectors: int = 4, n_steps: int = 30, seed: int = 0,
        dtype=torch.float64, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: per Rademacher vector, the nodes and weights of the Gauss
    quadrature of its spectral measure (Ritz values, squared first components); exact for
    polynomials of degree < 2·n_steps."""
    n_vectors = _positive_int("n_vectors", n_vectors)
    n_steps = min(_positive_int("n_steps", n_steps), dim)
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = np.zeros((n_vectors, n_steps)), np.zeros((n_vectors, n_steps))
    for i in range(n_vectors):
        kry = _Krylov(matvec, _rademacher(dim, 1, gen, dtype, device), gen)
        for _ in range(n_steps):
            kry.step()
        nodes[i], S = np.linalg.eigh(kry.rayleigh())
        weights[i] = S[0] ** 2
    return nodes, weights


def density_on_grid(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray,
                    sigma: float) -> np.ndarray:
    """The quadrature measure broadened by a Gaussian of width sigma, averaged over vectors."""
    z = (np.asarray(grid)[:, None] - nodes.reshape(-1)[None, :]) / sigma
    kernel = np.exp(-0.5 * z ** 2) / (sigma * math.sqrt(2 * math.pi))
    return kernel @ weights.reshape(-1) / nodes.shape[0]


# ---------------------------------------------------------------------------------------------
# The Hessian of a model's loss
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def buffers_kept(model: torch.nn.Module):
    """Run extra forward passes on copies of the buffers (BatchNorm running statistics), then put
    the originals back untouched. Swapping, not copying back, leaves any graph built meanwhile
    valid (batch norm saves its buffers for backward)."""
    saved = [(m, name, buf) for m in model.modules() for name, buf in m._buffers.items()
             if buf is not None]
    for m, name, buf in saved:
        m._buffers[name] = buf.clone()
    try:
        yield
    finally:
        for m, name, buf in saved:
            m._buffers[name] = buf


def trainable(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _check_batches(batches: Batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = list(batches)
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise ValueError("batches: expected a non-empty list of (inputs, targets) pairs, got "
                         f"{type(batches).__name__} of {len(batches)}")
    return batches


class HessianOperator:
    """v ↦ (H + shift·I)v, H the Hessian of the mean loss over ``batches`` (weighted by batch size).

    Each batch's gradient is computed once with its graph, in the model's current mode and dtype,
    so one product is one double-backward pass and dropout masks stay fixed across products (the
    operator must not change between Lanczos steps). BatchNorm statistics are restored afterwards.
    ``shift`` adds coupled weight decay (the Hessian of loss + shift/2·‖w‖²).
    """

    def __init__(self, model: torch.nn.Module, loss_fn, batches: Batches, shift: float = 0.0):
        batches = _check_batches(batches)
        self.params = trainable(model)
        if not self.params:
            raise ValueError("model: has no parameters that require grad")
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.shift = float(shift)
        self.n_matvec = 0
        total = sum(len(x) for x, _ in batches)
        with buffers_kept(model):
            self.grads = [self._grad(model, loss_fn, x, y, len(x) / total) for x, y in batches]

    def _grad(self, model, loss_fn, x, y, weight):
        loss = loss_fn(model(x), y) * weight
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)]

    def gradient(self) -> torch.Tensor:
        """The flat mean gradient (detached)."""
        return sum(flatten([g.detach() for g in gs]) for gs in self.grads)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        vs = unflatten(v.to(self.dtype), self.params)
        out = self.shift * v.to(self.dtype)
        for gs in self.grads:
            out = out + flatten(_hvp(gs, self.params, vs))
        self.n_matvec += 1
        return out


def _hvp(grads, params, vs) -> list[torch.Tensor]:
    """H v from gradients that carry their graph; parameters the gradient ignores give zeros."""
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    hv = torch.autograd.grad([grads[i] for i in live], params, [vs[i] for i in live],
                             retain_graph=True, allow_unused=True)
    return [h if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]


def scaled(matvec: Matvec, d: torch.Tensor) -> Matvec:
    """v ↦ D A D v with D = diag(d): for d = P^(-1/2), the symmetric form of P⁻¹A (same eigenvalues)."""
    return lambda v: d * matvec(d * v)


def hessian_eigs(model, loss_fn, batches: Batches, k: int = 1, tol: float = 1e-4,
                 max_iter: int = 100, v0=None, smallest: bool = False, seed: int = 0) -> LanczosResult:
    """Top-k Hessian eigenpairs of the mean loss over ``batches`` (see ``lanczos_top``)."""
    op = HessianOperator(model, loss_fn, batches)
    return lanczos_top(op.matvec, op.dim, k, tol, max_iter, v0, smallest, seed, op.dtype, op.device)


def hessian_trace(model, loss_fn, batches: Batches, n_hvp: int = 99, seed: int = 0) -> TraceEstimate:
    """Hessian trace by Hutch++ with ``n_hvp`` Hessian-vector products."""
    op = HessianOperator(model, loss_fn, batches)
    return hutchpp(op.matvec, op.dim, n_hvp, seed, op.dtype, op.device)


def spectral_density(model, loss_fn, batches: Batches, n_vectors: int = 4, n_steps: int = 30,
                     grid: np.ndarray | int = 256, sigma: float | None = None,
                     seed: int = 0) -> SpectralDensity:
    """Hessian eigenvalue density by SLQ, broadened by a Gaussian (default width: 1% of the range)."""
    op = HessianOperator(model, loss_fn, batches)
    nodes, weights = slq(op.matvec, op.dim, n_vectors, n_steps, seed, op.dtype, op.device)
    lo, hi = float(nodes.min()), float(nodes.max())
    sigma = sigma or max(0.01 * (hi - lo), 1e-12)
    if np.isscalar(grid):
        grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, _positive_int("grid", grid, 2))
    grid = np.asarray(grid, dtype=float)
    return SpectralDensity(nodes, weights, grid, density_on_grid(nodes, weights, grid, sigma), sigma,
                           op.n_matvec)


def batch_sharpness(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                    scale: torch.Tensor | None = None, shift: float = 0.0) -> float:
    """gᵀHg/‖g‖² for a mini-batch gradient g that carries its graph: one Hessian-vector product.

    With ``scale`` d = P^(-1/2) it is the preconditioned form, the Rayleigh quotient of DHD at
    x = Dg (the update direction seen by Adam), comparable with the preconditioned threshold.
    Get ``grads`` by ``torch.autograd.grad(loss, params, create_graph=True)``.
    """
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    g = flatten([t.detach() for t in grads])
    x = g if scale is None else scale * g
    u = x if scale is None else scale * x
    hu = flatten(_hvp(grads, params, unflatten(u, params)))
    denom = float(x @ x)
    if denom == 0.0:
        return float("nan")
    return (float(u @ hu) + shift * float(u @ u)) / denom


# ---------------------------------------------------------------------------------------------
# The edge of stability of the optimizer actually used
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    value: float  # the sharpness above which the optimizer is unstable on a quadratic
    preconditioned: bool  # compare with λ₁(P⁻¹H) rather than λ₁(H)
    rule: str  # the formula, in words


def eos_threshold(optimizer: torch.optim.Optimizer) -> Threshold:
    """The stability threshold of the optimizer at its current learning rate (param group 0).

    SGD: 2/η; heavy ball: (2+2β)/η (dampening τ scales η by 1−τ); Nesterov: (2+2β)/((1+2β)η);
    Adam/AdamW: (2+2β₁)/((1−β₁)η) for the preconditioned sharpness (Cohen et al. 2022).
    Other optimizers: NaN. At η = 0 no step is unstable: the threshold is infinite, and what it
    is compared with (preconditioned or not) is still the optimizer's.
    """
    g = optimizer.param_groups[0]
    lr = float(g["lr"])
    if isinstance(optimizer, torch.optim.SGD):
        beta, damp = float(g.get("momentum", 0.0)), float(g.get("dampening", 0.0))
        if beta == 0.0:
            factor, rule = 2.0, "2/η"
        elif g.get("nesterov", False):
            factor, rule = (2 + 2 * beta) / (1 + 2 * beta), "(2+2β)/((1+2β)η)"
        else:
            factor, rule = (2 + 2 * beta) / (1 - damp), "(2+2β)/η"
        preconditioned = False
    elif isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        b1 = float(g["betas"][0])
        factor, rule, preconditioned = (2 + 2 * b1) / (1 - b1), "(2+2β₁)/((1−β₁)η) on P⁻¹H", True
    else:
        return Threshold(float("nan"), False, f"unknown for {type(optimizer).__name__}")
    return Threshold(factor / lr if lr > 0 else float("inf"), preconditioned, rule)


def coupled_weight_decay(optimizer: torch.optim.Optimizer) -> float:
    """Weight decay that acts as an L2 term in the gradient (not AdamW's decoupled decay)."""
    if isinstance(optimizer, torch.optim.AdamW):
        return 0.0
    return float(optimizer.param_groups[0].get("weight_decay", 0.0))


def adam_preconditioner(optimizer: torch.optim.Optimizer,
                        params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """d = P^(-1/2) with P = diag(sqrt(v̂) + ε) from Adam's second-moment state; None before step 1.
    A parameter Adam never stepped (it had no gradient) has v̂ = 0 there."""
    eps = float(optimizer.param_groups[0]["eps"])
    b2 = float(optimizer.param_groups[0]["betas"][1])
    states = [optimizer.state.get(p, {}) for p in params]
    if not any("exp_avg_sq" in st for st in states):
        return None
    parts = []
    for p, st in zip(params, states):
        v = st["exp_avg_sq"] / (1 - b2 ** float(st["step"])) if "exp_avg_sq" in st else torch.zeros_like(p)
        parts.append(v.sqrt().add(eps).rsqrt().reshape(-1))
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# Loss slices (Li et al. 2018)
# ---------------------------------------------------------------------------------------------
@dataclass
class LossSlice:
    alphas: np.ndarray  # (steps,) coordinates along the first direction
    losses: np.ndarray  # (steps,) or (steps, steps) indexed [alpha, beta]
    directions: list[list[torch.Tensor]]  # per direction, one tensor per parameter


def filter_normalized_direction(params: Sequence[torch.Tensor],
                                gen: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction rescaled so each filter (row of a weight) has its weights' norm;
    biases and normalisation-layer parameters (1-D tensors) get zero."""
    out = []
    for p in params:
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device).flatten(1)
        rows = p.detach().flatten(1).norm(dim=1, keepdim=True)
        d = d * (rows / d.norm(dim=1, keepdim=True).clamp_min(1e-30))
        out.append(d.view_as(p))
    return out


def mean_loss(model, loss_fn, batches: Batches, params: dict | None = None) -> float:
    """Sample-weighted mean loss over the batches, at ``params`` (name → tensor) when given."""
    total = sum(len(x) for x, _ in batches)
    with torch.no_grad():
        return sum(float(loss_fn(functional_call(model, params or {}, (x,)), y)) * len(x)
                   for x, y in batches) / total


def loss_slice(model, loss_fn, batches: Batches, directions: int = 1, steps: int = 21,
               span: float = 1.0, seed: int = 0) -> LossSlice:
    """Mean loss on a 1-D line or 2-D plane through the current weights along filter-normalised
    random directions, at ``steps`` points in [-span, span] per axis. The weights are never
    written (each point is a functional call), so they and any graph holding them stay exactly
    as they were; buffers (BatchNorm statistics) are restored."""
    if directions not in (1, 2):
        raise ValueError(f"directions: got {directions!r}, expected 1 or 2")
    steps = _positive_int("steps", steps, 2)
    if not span > 0:
        raise ValueError(f"span: got {span!r}, expected a positive number")
    batches = _check_batches(batches)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    dirs = [filter_normalized_direction([p for _, p in named], gen) for _ in range(directions)]
    alphas = np.linspace(-span, span, steps)
    grid = [(a,) for a in alphas] if directions == 1 else [(a, b) for a in alphas for b in alphas]
    losses = []
    with buffers_kept(model):
        for coords in grid:
            moved = {n: p.detach() + sum(c * d[i] for c, d in zip(coords, dirs))
                     for i, (n, p) in enumerate(named)}
            losses.append(mean_loss(model, loss_fn, batches, moved))
    shape = (steps,) if directions == 1 else (steps, steps)
    return LossSlice(alphas, np.array(losses).reshape(shape), dirs)
