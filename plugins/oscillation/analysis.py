"""Oscillation tracking after Nagel et al. 2022 ("Overcoming Oscillations in Quantization-Aware
Training"), in pure torch/numpy so that it works from a notebook with no engine.

An *oscillation* happens at an update where a weight's integer value changes and the direction of
the change is opposite to the direction of its previous non-zero change. ``OscillationTracker``
keeps, for every weight, an exponential moving average (EMA) of oscillations per update and an
exact count over a window, in 4 bytes a weight; ``Freezer`` is Nagel et al.'s remedy of freezing
weights that oscillate; the rest are small helpers the plugin and its findings share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

COUNT_BITS = 9  # oscillations since the last window boundary: 0 … window
MAX_WINDOW = (1 << COUNT_BITS) - 1
MAX_MOMENTUM = 0.25  # keeps one EMA increment, shifted into place, inside an int32
RESCALE_KEEP = 0.75  # the stored EMA is rescaled once it has decayed to this share (sets K below)
MAX_RELATIVE_ERROR = 0.1  # refuse a momentum too small for the EMA's bits (see the class docstring)


class OscillationTracker:
    """Per-weight oscillation frequency of ``n`` integer weights (or of the signs of updates).

    ``update(w_int)`` takes the current integer weights (1-D, integer dtype, in
    [−2^(bits−1), 2^(bits−1) − 1]) once per training step; the first call only records where they
    start; values are checked there and clamped into range after (checking would wait for the
    device every step), unless the caller says they are in range (``in_range``: read off a grid of
    at most ``bits`` bits). ``update_changes(delta)`` is the same definition applied to the changes themselves,
    e.g. ``delta = θ_t − θ_(t−1)`` of full-precision weights: a change is ``sign(delta)`` (0 for no
    change, so sign(0) never counts). Both return the oscillations of this update (bool).

    Frequencies, per weight:

    - ``ema_frequency()``: e_t = (1 − m)·e_(t−1) + m·o_t, bias-corrected as e_t / (1 − (1 − m)^t)
      (t updates so far), so it reads the true rate from the start. Its *phase ripple*: a weight
      oscillating every P updates reads m/(1 − (1 − m)^P) just after an oscillation and
      (1 − m)^(P−1) times that just before the next; its average over a period is exactly 1/P. At
      m = 0.01 that is +27 % / −23 % around 1/P for P = 50, ±5 % for P = 10, under 1 % for P ≤ 2.
    - ``window_frequency()``: oscillations counted over the last L updates, divided by L, exactly.
      Windows are tumbling: they end at every ``window``-th update, where L = ``window`` and the
      count is the exact count over the last ``window`` updates (before the first window fills,
      L is the number of updates seen). In between, L is the number of updates since the last
      window ended (``window_span``). An exact count over a window that slides by one update
      needs each weight's last ``window`` events, ``window``/8 bytes (32 at 256), for any event
      sequence: with 4 bytes it can be exact only on a cadence, and this is that cadence.

    Memory: one int32 word per weight holds all of it, ``bytes_per_weight() == 4`` (the anchor
    script kept 16–25). From the low bits up:

    - ``bits + 2`` bits: 4·(previous value + 2^(bits−1)) + 2 − d, d ∈ {−1, 0, +1} the direction of
      the weight's last change (0 before its first). With T = 4·(new value) + base − that field,
      T = 4·Δ + d; the direction after the update is clamp(T, −1, 1), the field moves by
      U = T − clamp(T, −1, 1), and U ≡ 2 (mod 4) exactly when Δ·d < 0: an oscillation. Nine
      elementwise integer operations per update, no branches, no transfer to the host.
    - 9 bits: oscillations since the last window boundary (so ``window`` ≤ 511).
    - the remaining 21 − bits bits (13 for 8-bit integers, 17 for 4-bit, 20 for update signs):
      the EMA as a fixed-point number G with e_t = G·(1 − m)^(t − t₀) / R, rescaled
      (G ← round(G·(1 − m)^K)) every K updates (t₀ the last rescaling; K chosen so that
      (1 − m)^K ≥ 3/4). Between rescalings an update without oscillation leaves G untouched and an
      oscillation adds round(m·R·(1 − m)^−(t − t₀)), so only oscillations and rescalings round.
      Error bound: |stored − exact| ≤ e_t·ε + 2/R with ε = 1/(2·m·R), the same after bias
      correction relative to the corrected value. At m = 0.01: ε = 0.05 % and 2/R = 2e-5 for 4-bit
      weights; ε = 0.8 % and 2/R = 3e-4 for 8-bit (``relative_error``, ``absolute_error``).
    """

    def __init__(self, n: int, momentum: float = 0.01, window: int = 256, bits: int = 8,
                 device: torch.device | str | None = None):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer (weights to track), got {n!r}")
        if not 0 < momentum <= MAX_MOMENTUM:
            raise ValueError(f"momentum must be in (0, {MAX_MOMENTUM}], got {momentum!r}")
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be an integer in [1, {MAX_WINDOW}], got {window!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an integer in [1, 8], got {bits!r}")
        self.n, self.momentum, self.window, self.bits = n, momentum, window, bits
        self.low, self.high = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        self._base = 4 * 2 ** (bits - 1) + 2
        self._count_shift = bits + 2
        self._ema_shift = self._count_shift + COUNT_BITS
        ema_bits = 32 - self._ema_shift
        self._field_mask = (1 << self._count_shift) - 1
        self._count_mask = MAX_WINDOW << self._count_shift
        self._ema_offset = 1 << (ema_bits - 1)  # stored as G − offset: the word never overflows
        self.rescale_every = max(1, int(math.log(RESCALE_KEEP) / math.log1p(-momentum)))
        self._rescale = (1 - momentum) ** self.rescale_every
        self.unit = math.floor(self._rescale * ((1 << ema_bits) - 3) - 0.5 / momentum)
        if self.unit < 1 or self.relative_error > MAX_RELATIVE_ERROR:
            raise ValueError(f"momentum {momentum} is too small for an EMA in {ema_bits} bits (bits = {bits}): "
                             f"use momentum ≥ {0.5 / (MAX_RELATIVE_ERROR * self._rescale * (1 << ema_bits)):.2g}")
        self._increments = [(1 << self._count_shift) + (round(momentum * self.unit * (1 - momentum) ** -j)
                                                        << self._ema_shift)
                            for j in range(1, self.rescale_every + 1)]
        self.steps = 0
        self.word = torch.full((n,), self._base - 2 ** 31, dtype=torch.int32, device=device)

    # -- errors of the stored EMA -------------------------------------------------------------
    @property
    def relative_error(self) -> float:
        return 0.5 / (self.momentum * self.unit)

    @property
    def absolute_error(self) -> float:
        return 0.5 / (1 - self._rescale) / self.unit

    def bytes_per_weight(self) -> float:
        """All per-weight state, in bytes (a few Python numbers besides)."""
        return self.word.element_size() * self.word.numel() / self.n

    # -- updates --------------------------------------------------------------------------------
    def update(self, w_int, in_range: bool = False) -> torch.Tensor:
        """Advance by one update given the current integer weights; returns its oscillations (bool)."""
        x = self._as_integers(w_int)
        if self.steps == 0:
            if x.numel() and (int(x.min()) < self.low or int(x.max()) > self.high):
                raise ValueError(f"integer weights must lie in [{self.low}, {self.high}] for bits = {self.bits}, "
                                 f"got values from {int(x.min())} to {int(x.max())}")
            self.word.add_(x, alpha=4)  # the previous value is now x; no change, no direction yet
            return self._count(torch.zeros_like(self.word))
        if not (in_range or x.dtype == torch.int8 and self.bits == 8):
            x = x.clamp(self.low, self.high)  # checked at the first update; kept in range cheaply after
        u = self._field_step(x)
        self.word.sub_(u)
        return self._count(u)

    def update_changes(self, delta) -> torch.Tensor:
        """Advance by one update given the changes themselves (their signs); returns its oscillations."""
        s = torch.sign(torch.as_tensor(delta, device=self.word.device)).to(torch.int32)
        self._check_shape(s)
        u = self._field_step(s)
        self.word.sub_(u).sub_(s, alpha=4)  # only the direction moves; the stored value stays at 0
        return self._count(u)

    def _field_step(self, x: torch.Tensor) -> torch.Tensor:
        """−U, the change of the low field (see the class docstring), from T'' = field − 4·x = base − T:
        clamp(T, −1, 1) = base − clamp(T'', base − 1, base + 1), so no constant needs adding."""
        t = torch.bitwise_and(self.word, self._field_mask).sub_(x, alpha=4)
        return t.sub_(t.clamp(self._base - 1, self._base + 1))

    def _count(self, u: torch.Tensor) -> torch.Tensor:
        """Count the oscillations (−U ≡ 2 mod 4) into the window and the EMA; returns them (bool)."""
        oscillated = u.bitwise_and_(3).eq(2)
        t = self.steps + 1
        if t > 1 and (t - 1) % self.window == 0:  # a new window starts with this update
            self.word.bitwise_and_(~self._count_mask)
        phase = t - self.rescale_every * ((t - 1) // self.rescale_every)  # 1 … K since the last rescaling
        self.word.add_(oscillated, alpha=self._increments[phase - 1])
        if t % self.rescale_every == 0:
            g = self._ema_numerator().mul_(self._rescale).round_().sub_(self._ema_offset)
            low = self.word.bitwise_and_((1 << self._ema_shift) - 1)
            low.add_(g.to(torch.int32).mul_(1 << self._ema_shift))
        self.steps = t
        return oscillated

    def _as_integers(self, w_int) -> torch.Tensor:
        x = torch.as_tensor(w_int, device=self.word.device)
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"integer weights must have an integer dtype, got {x.dtype}")
        self._check_shape(x)
        return x if x.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32) else x.to(torch.int32)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.shape != (self.n,):
            raise ValueError(f"expected a 1-D tensor of {self.n} values, got shape {tuple(x.shape)}")

    # -- frequencies ----------------------------------------------------------------------------
    def _ema_numerator(self) -> torch.Tensor:
        return (self.word >> self._ema_shift).add_(self._ema_offset).to(torch.float32)

    def ema_frequency(self) -> torch.Tensor:
        """Bias-corrected EMA of oscillations per update, per weight (float32)."""
        t = self.steps
        if t == 0:
            return torch.zeros(self.n, device=self.word.device)
        since = t - self.rescale_every * (t // self.rescale_every)
        m = self.momentum
        return self._ema_numerator().mul_((1 - m) ** since / self.unit / (1 - (1 - m) ** t))

    @property
    def window_span(self) -> int:
        """Updates the window count covers now: ``window`` right after a window ends."""
        return 0 if self.steps == 0 else self.steps - self.window * ((self.steps - 1) // self.window)

    @property
    def window_complete(self) -> bool:
        return self.steps > 0 and self.steps % self.window == 0

    def window_counts(self) -> torch.Tensor:
        """Exact oscillation counts over the last ``window_span`` updates, per weight (int32)."""
        return (self.word >> self._count_shift) & MAX_WINDOW

    def window_frequency(self) -> torch.Tensor:
        """Exact oscillations per update over the last ``window_span`` updates (float32)."""
        return self.window_counts().to(torch.float32).div_(max(1, self.window_span))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"word": self.word, "steps": self.steps, "momentum": self.momentum, "window": self.window,
                "bits": self.bits}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.n, self.momentum, self.window, self.bits)
        theirs = (state["word"].numel(), state["momentum"], state["window"], state["bits"])
        if mine != theirs:
            raise ValueError(f"tracker state for (n, momentum, window, bits) = {theirs}, this one has {mine}")
        self.word.copy_(state["word"])
        self.steps = int(state["steps"])


class Freezer:
    """Iterative weight freezing (Nagel et al. 2022): a weight whose oscillation frequency passes the
    threshold is frozen at its EMA integer value, rounded (the EMA as it stood before the update, as
    in their code). The caller holds frozen weights there; their EMA then stays put.

    State: the EMA of the integer values (float32: in fp16, 0.01·|x − EMA| drops below half a
    rounding step 0.2 short of x for integers above 4) and the frozen mask, 5 bytes a weight, only
    when freezing is on.
    """

    def __init__(self, n: int, momentum: float = 0.01, device: torch.device | str | None = None):
        self.momentum = momentum
        self.ema = torch.zeros(n, device=device)
        self.frozen = torch.zeros(n, dtype=torch.bool, device=device)
        self.started = False

    def update(self, w_int: torch.Tensor, frequency: torch.Tensor, threshold: float | None) -> torch.Tensor:
        """Freeze the weights whose ``frequency`` exceeds ``threshold`` (None: freeze nothing new);
        returns the newly frozen mask."""
        x = w_int.to(torch.float32)
        if not self.started:
            self.ema.copy_(x)
            self.started = True
        new = torch.zeros_like(self.frozen)
        if threshold is not None:
            new = (frequency > threshold) & ~self.frozen
            self.ema = torch.where(new, self.ema.round(), self.ema)
            self.frozen |= new
        self.ema = torch.where(self.frozen, self.ema, self.ema.lerp(x, self.momentum))
        return new

    def values(self) -> torch.Tensor:
        """The integer values frozen weights are held at (meaningful where ``frozen``)."""
        return self.ema.round().to(torch.int8)

    def state_dict(self) -> dict:
        return {"ema": self.ema, "frozen": self.frozen, "started": self.started}

    def load_state_dict(self, state: dict) -> None:
        self.ema.copy_(state["ema"])
        self.frozen.copy_(state["frozen"])
        self.started = bool(state["started"])


def dampening_gradient(latent: torch.Tensor, quantized: torch.Tensor, low, high, weight: float) -> torch.Tensor:
    """Gradient of Nagel et al.'s oscillation dampening, weight·‖clamp(w, low, high) − q(w)‖² with
    q(w) held fixed: pulls each latent weight inside the grid towards its grid point."""
    return 2 * weight * (torch.minimum(torch.maximum(latent, low), high) - quantized)


def cosine_schedule(progress: float, start: float, end: float, begin: float = 0.25) -> float:
    """``start`` until ``begin`` (a share of training), then half a cosine down (or up) to ``end``
    at the end of training: Nagel et al.'s annealing of the freezing threshold and dampening."""
    if progress <= begin:
        return start
    r = min(1.0, (progress - begin) / (1 - begin))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * r))


def segment_sums(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Sums of consecutive segments of ``x`` (e.g. layers laid end to end); exact (int64) for
    integer and bool ``x``."""
    return torch.stack([part.sum() for part in x.split(sizes)])


def segment_cosines(a: torch.Tensor, b: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Cosine between ``a`` and ``b`` on each segment; NaN where either is zero there."""
    return gram_cosines(torch.stack([part @ part.T for part in torch.stack([a, b]).split(sizes, dim=1)]))


def gram_cosines(grams: torch.Tensor) -> torch.Tensor:
    """Cosines from Gram matrices (..., 2, 2) of pairs (a, b); NaN where either is zero."""
    norms = grams[..., 0, 0].sqrt() * grams[..., 1, 1].sqrt()  # not sqrt(a²·b²): small gradients would underflow
    return torch.where(norms > 0, grams[..., 0, 1] / norms, math.nan)


def frequency_histogram(frequency: torch.Tensor, bins: int) -> np.ndarray:
    """Share of all weights per equal-width frequency bin over (0, 1]; weights at 0 are left out,
    so the bars add up to the share that oscillated at all."""
    nonzero = frequency[frequency > 0]
    counts = torch.histc(nonzero, bins=bins, min=0.0, max=1.0) if nonzero.numel() else torch.zeros(bins)
    return counts.cpu().numpy() / max(1, frequency.numel())


def settled_since(steps, values, level: float) -> int:
    """The step from which ``values`` stay at or above ``level`` to the end (the last step if the
    last value is below it)."""
    v = np.asarray(values, dtype=float)
    below = np.flatnonzero(~(v >= level))
    return int(steps[min(below[-1] + 1, len(v) - 1) if len(below) else 0])


@dataclass(frozen=True)
class Jump:
    """A series rose at ``step``: the mean of the rows from it on against the mean of those before."""

    step: int
    before: float
    after: float

    @property
    def rise(self) -> float:
        return self.after - self.before


def find_jumps(steps, values, window: int = 5, min_rise: float = 0.1, z: float = 4.0) -> list[Jump]:
    """Where a step-indexed series rises and stays up. At each row, the mean of the ``window`` rows
    from it on is compared with the mean of the ``window`` rows before it; a jump rises by at least
    ``min_rise`` and by ``z`` standard errors of the two windows' scatter. Jumps are taken largest
    first, at least ``window`` rows apart, and returned in step order. NaN rows are skipped."""
    s, v = np.asarray(steps), np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    s, v = s[keep], v[keep]
    n = len(v)
    if n < 2 * window:
        return []
    c1 = np.concatenate([[0.0], np.cumsum(v)])
    c2 = np.concatenate([[0.0], np.cumsum(v * v)])
    i = np.arange(window, n - window + 1)
    before = (c1[i] - c1[i - window]) / window
    after = (c1[i + window] - c1[i]) / window
    scatter = np.clip((c2[i] - c2[i - window] + c2[i + window] - c2[i]) / window - before ** 2 - after ** 2,
                      0.0, None)
    rise = after - before
    significant = (rise >= min_rise) & (rise > z * np.sqrt(scatter / window))
    taken: list[int] = []
    jumps = []
    for k in np.argsort(-rise, kind="stable"):
        if significant[k] and all(abs(i[k] - j) >= window for j in taken):
            taken.append(int(i[k]))
            jumps.append(Jump(int(s[i[k]]), float(before[k]), float(after[k])))
    return sorted(jumps, key=lambda j: j.step)
