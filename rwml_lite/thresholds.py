"""`tau_d: auto`: distance thresholds measured for the recipe's own embedder, once per run.

The paper set its thresholds (ALFWorld: 0.1 for the filter, 0.2 for training) for Qwen3-Embedding-8B.
Distances d = 1 - cos spread differently in another embedder (a small one puts unrelated sentences
closer or farther), so the same number can mark every prediction a hit or none: GRPO's groups then all
see one reward and carry no gradient. `auto` sets each threshold where it does what the paper's value
was chosen to do, from distances of real predictions:

- the filter's: where the paper's rule (at least one of K filter predictions within tau_d) marks
  `worldmodel.filter.easy_target` (about 30 %) of the training triplets easy, never looser than
  the training threshold (easy means solved at least as strictly as training rewards);
- the reward's: where the starting policy's own predictions (a group of `grpo.group_size` for each of
  `reward.calibration_triplets` training triplets) hit at a rate inside `reward.auto_hit_rate`, choosing
  in that band the threshold under which most groups see both a hit and a miss, and never looser than
  `reward.auto_max_tau_d` (past it, vague predictions would be paid).
"""

from __future__ import annotations

from dataclasses import dataclass

from rwml_lite.config import Recipe, RewardSettings
from rwml_lite.errors import RwmlError
from rwml_lite.records import read_json
from rwml_lite.runfolder import RunFolder


def threshold_for_share(distances: list[float], share: float, ceiling: float = 2.0) -> float:
    """The threshold below which `share` of `distances` lie (inf counts as never below), at most `ceiling`:
    halfway between the k-th and (k+1)-th smallest distance, k = round(share * n)."""
    finite = sorted(d for d in distances if d < ceiling)
    k = min(round(share * len(distances)), len(finite))
    if k == 0:
        return _between(0.0, finite[0]) if finite else ceiling
    return _between(finite[k - 1], finite[k] if k < len(finite) else ceiling)


def _between(low: float, high: float) -> float:
    """A threshold strictly above `low` (a distance that must count as below it) and at most `high`."""
    return (low + high) / 2 if high > low else low + 1e-6


@dataclass(frozen=True)
class Calibrated:
    tau_d: float
    hit_rate: float  # share of the predictions within tau_d
    signal_share: float  # share of groups with both a hit and a miss: GRPO's groups with a gradient
    in_band: bool


def reward_threshold(groups: list[list[float]], band: tuple[float, float], ceiling: float) -> Calibrated:
    """The training threshold for groups of the starting policy's prediction distances: among thresholds
    whose hit rate lies in `band`, the one with the most groups that see both a hit and a miss (the strictest
    of equals); when none lies in the band, the one whose hit rate comes closest to it. Never above `ceiling`,
    which is itself a candidate."""
    flat = sorted({d for g in groups for d in g if d < ceiling})
    candidates = [_between(a, b) for a, b in zip([0.0, *flat], [*flat, ceiling]) if b > a] + [ceiling]
    total = sum(len(g) for g in groups)

    def measured(tau: float) -> Calibrated:
        hits = [sum(d < tau for d in g) for g in groups]
        hit_rate = sum(hits) / total if total else 0.0
        mixed = sum(0 < h < len(g) for h, g in zip(hits, groups)) / max(len(groups), 1)
        return Calibrated(tau, hit_rate, mixed, band[0] <= hit_rate <= band[1])

    options = [measured(tau) for tau in candidates]
    inside = [o for o in options if o.in_band]
    if inside:
        return max(inside, key=lambda o: (o.signal_share, -o.tau_d))
    # below the band the loosest of equals (what hits once predictions close their tags), above it the strictest
    return min(
        options,
        key=lambda o: (max(band[0] - o.hit_rate, o.hit_rate - band[1]), -o.signal_share,
                       o.tau_d if o.hit_rate > band[1] else -o.tau_d),
    )  # fmt: skip


def run_reward(recipe: Recipe, folder: RunFolder) -> RewardSettings:
    """The recipe's reward settings with tau_d as this run uses it: the recipe's number, or (auto) the value the
    filter stage measured and kept in wm/thresholds.json."""
    if recipe.reward.tau_d != "auto":
        return recipe.reward
    path = folder.wm("thresholds.json")
    measured = read_json(path).get("reward") if path.exists() else None
    if measured is None:
        raise RwmlError(
            f"reward.tau_d is auto, and {path} holds no measured value: the filter stage measures it. Add filter to "
            f"`stages` (or run `rwml-lite train RECIPE` with it once), or set reward.tau_d to a number."
        )
    return recipe.reward.model_copy(update={"tau_d": measured["tau_d"]})
