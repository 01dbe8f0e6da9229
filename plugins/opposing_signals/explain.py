"""What the opposing-signals series say about one step: the pair whose losses moved most there."""
from __future__ import annotations

import math

from engine.plugin import Evidence

from .plugin import PREFIX, _sides, pair_moves

EXAMPLES = 3  # sample ids named in the summary


def evidence_at(run, step: int) -> list[Evidence]:
    if PREFIX + "groups" not in run.names():
        return []
    moves = pair_moves(run, step)
    if not moves:
        return []
    pair, move = moves[0]
    (da, db), (ba, bb), (na, nb) = move.change, move.before, move.at
    text = (f"The opposing pair that moved most at step {move.step:,}, {_sides(pair)} over {pair['feature']}: "
            f"side A's mean loss went from {ba:.4g} to {na:.4g} ({da:+.3g}), side B's from {bb:.4g} to {nb:.4g} "
            f"({db:+.3g}).")
    rise = max(na / ba if ba > 0 else math.inf, nb / bb if bb > 0 else math.inf)
    weight = float(min(1.0, math.log(rise) / math.log(4.0))) if rise > 1 else 0.0
    examples = [i for side in pair["sides"] for i in side["examples"][:2]][:EXAMPLES]
    anti = da * db < 0
    phrase = (f"samples {', '.join(map(str, examples))}, … (the pair over {pair['feature']}) "
              + ("swung in anti-phase" if anti else "moved together")
              + f", side {'B' if abs(db) > abs(da) else 'A'}'s loss ×{rise:.1f}")
    return [Evidence("opposing_signals", text, move.step, float(max(abs(da), abs(db))), "loss change", weight,
                     phrase if weight else "", PREFIX + "top_pair_loss")]
