"""report.md: what a user reads first after a run, and the pieces study.md shares with it.

Every rate comes with its 95 % interval over tasks (games for success, held-out games for the world
model), every trained policy is compared with the base model on the same games and triplets (paired),
and the plots show what a table cannot: the RWML reward and signal share per GRPO step, the distances
behind the thresholds, the policy stage's curves.
"""

from __future__ import annotations

from rwml_lite.config import Recipe
from rwml_lite.envs import benchmark
from rwml_lite.records import atomic_write_text, read_json, read_jsonl
from rwml_lite.runfolder import RunFolder
from rwml_lite.stages.eval import POOLED, versus
from rwml_lite.thresholds import run_reward

INTERVALS = (
    "Intervals are 95 % over tasks: success over the evaluated games (Wilson's score interval; one game is one "
    "trial, weighted by its share of won runs), world-model hits over the held-out games the validation triplets "
    "come from (cluster-robust, Student's t); differences are paired (same games, same triplets)."
)


def write_report(recipe: Recipe, folder: RunFolder, manifest: dict, results: dict[str, dict]) -> None:
    stages, e, bench = manifest["stages"], recipe.eval, benchmark(recipe.env.name)
    env = bench.describe(recipe.env)
    columns = [*e.splits, POOLED] if len(e.splits) > 1 else e.splits
    pooled = columns[-1]
    per_split = "all" if e.num_tasks is None else f"the first {e.num_tasks}"
    labels = {name: policy_label(recipe, name) for name in results}
    tau_d = run_reward(recipe, folder).tau_d
    lines = [
        f"# rwml-lite report: {folder.root}",
        "",
        f"Model `{recipe.model.name_or_path}` on {env}; embedder `{recipe.reward.embedder}` "
        f"({recipe.reward.kind} reward, tau_d {threshold_text(recipe.reward.tau_d, tau_d)}).",
        "",
        "## Evaluation",
        "",
        f"Task success % on {per_split} tasks of each split ({e.runs} run(s) per game, at most {e.max_steps} steps, "
        f"temperature {e.temperature}){_weighting(recipe, results)}. World model: {e.wm_samples} prediction(s) per held-out "
        f"validation triplet, from games no training triplet comes from; hits: share within tau_d {tau_d:.3g}; "
        f"similarity: mean cosine of the predictions with a `<next_state>` tag; tags: share with one. {INTERVALS}",
        "",
        "| policy | " + " | ".join(f"success % {_label(recipe, c)}" for c in columns)
        + " | invalid actions % | steps to success | world-model hits % | similarity | tags % |",
        "|---" * (len(columns) + 6) + "|",
    ]  # fmt: skip
    for name, r in results.items():
        steps = f"{r['steps_to_success']:.1f}" if r["steps_to_success"] is not None else "-"
        success = " | ".join(rate_cell(r["success"][c], "games") for c in columns)
        lines.append(
            f"| {labels[name]} | {success} | {r['invalid_action_rate']:.1f} | {steps} | "
            f"{rate_cell(r['wm_hits'], 'held-out games')} | {number_text(r['wm_similarity'])} | {r['wm_tag_rate']:.0f} |"
        )
    lines += versus_lines(results, labels)
    lines += [
        "",
        f"Mean +- std of success % over the {e.runs} run(s): the spread of the agent's sampling on the same games, "
        "not an uncertainty over games: " + "; ".join(
            f"{labels[n]} {r['success'][pooled]['run_mean']:.1f} +- {r['success'][pooled]['run_std']:.1f}"
            for n, r in results.items()
        ) + ".",
    ]  # fmt: skip
    lines += bench.report_lines(recipe.env, e.splits, results, labels)
    lines += _by_type(recipe, results)
    lines += _paper_section(recipe)
    lines += threshold_lines(folder)
    lines += rwml_lines(folder)
    if plot_policy(folder):
        lines += ["", "## Policy RL", "", f"Task success, return and invalid actions of the training episodes "
                  f"({policy_label(recipe, 'policy')}, {recipe.policy.tasks_per_step} tasks x {recipe.policy.group_size} "
                  f"episodes per step).", "", "![policy training](plots/policy.png)", ""]  # fmt: skip
    lines += ["", "## Data", ""]
    for stage in ("collect", "build", "filter", "rwml", "wm_sft", "policy"):
        if stage in stages and "summary" in stages[stage]:
            summary = ", ".join(f"{k} {_fmt(v)}" for k, v in stages[stage]["summary"].items() if k != "warning")
            lines.append(f"- **{stage}** ({stages[stage].get('seconds', 0):.0f} s): {summary}")
    atomic_write_text(folder.report, "\n".join(lines) + "\n")


def rate_cell(estimate: dict, units: str) -> str:
    """'31.2 [16.1, 51.8]': a rate with its 95 % interval; where there is none (fewer than two units), how many
    `units` it is over."""
    if estimate.get("mean") is None:
        return "-"
    if estimate.get("low") is None:
        return f"{estimate['mean']:.1f} (no interval: {estimate.get('units', estimate.get('games', 0))} {units})"
    return f"{estimate['mean']:.1f} [{estimate['low']:.1f}, {estimate['high']:.1f}]"


def difference_cell(estimate: dict) -> str:
    """'+12.5 [3.1, 21.9]': a paired difference in points with its 95 % interval; marked * when the interval
    excludes 0."""
    if estimate.get("mean") is None:
        return "-"
    if estimate.get("low") is None:
        return f"{estimate['mean']:+.1f} (no interval)"
    beyond = estimate["low"] > 0 or estimate["high"] < 0
    return f"{estimate['mean']:+.1f} [{estimate['low']:+.1f}, {estimate['high']:+.1f}]{' *' if beyond else ''}"


def versus_lines(results: dict[str, dict], labels: dict[str, str], baseline: str = "base") -> list[str]:
    """The paired comparison of every policy with the baseline (the base model), when it was evaluated."""
    if baseline not in results or len(results) < 2:
        return []
    lines = [
        "",
        f"Against the {labels[baseline]} (paired; * where the 95 % interval excludes 0):",
        "",
        "| policy | success, points | games better / worse / same (sign test p) | world-model hits, points |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        if name == baseline:
            continue
        v = versus(r, results[baseline])
        games = v["success"]["games"]
        lines.append(
            f"| {labels[name]} | {difference_cell(v['success'])} | {games['better']} / {games['worse']} / "
            f"{games['same']} (p {games['p']:.2g}) | {difference_cell(v['wm_hit_rate'])} |"
        )
    return lines


def threshold_text(configured, used: float) -> str:
    return f"{used:.3g} (auto: measured for this embedder)" if configured == "auto" else f"{used:.3g}"


def threshold_lines(folder: RunFolder) -> list[str]:
    """The filter's easy fraction against the paper's target, the thresholds this run measured (tau_d: auto),
    and a histogram of the distances they were measured from."""
    path = folder.wm("filter.json")
    if not path.exists():
        return []
    stats = read_json(path)
    lines = ["", "## Too-easy filter and thresholds", ""]
    if stats.get("filter_enabled"):
        lines.append(
            f"The filter marked {100 * stats['easy_fraction']:.0f} % of the {stats['train_triplets']} training triplets "
            f"easy at tau_d {number_text(stats.get('filter_tau_d'))} (the paper's recipe aims at about "
            f"{100 * stats.get('easy_target', 0.3):.0f} %) and kept {stats['kept']}."
        )
    else:
        lines.append(f"The too-easy filter was off: all {stats['train_triplets']} training triplets kept.")
    if stats.get("warning"):
        lines += ["", f"**Warning:** {stats['warning']}"]
    measured = read_json(folder.wm("thresholds.json")) if folder.wm("thresholds.json").exists() else {}
    if "reward" in measured:
        m = measured["reward"]
        lines += ["", (
            f"reward.tau_d auto = {m['tau_d']:.3f}: the starting policy's predictions hit at {100 * m['hit_rate']:.0f} % "
            f"(band {100 * m['band'][0]:.0f}-{100 * m['band'][1]:.0f} %{'' if m['in_band'] else ', not reached'}), and "
            f"{100 * m['signal_share']:.0f} % of its groups saw both a hit and a miss; {100 * m['tag_rate']:.0f} % of "
            "its predictions had a tag."
        )]  # fmt: skip
    if "filter" in measured:
        lines += ["", f"worldmodel.filter.tau_d auto = {measured['filter']['tau_d']:.3f}."]
    if plot_thresholds(folder, stats, measured):
        lines += ["", "![distances behind the thresholds](plots/thresholds.png)"]
    return lines


def rwml_lines(folder: RunFolder, prefix: str = "") -> list[str]:
    """The RWML stage's curves, and its signal warning if it gave one; `prefix` leads from the document to the
    run folder (study.md links a variant's plot)."""
    logs = read_jsonl(folder.metrics("rwml")) if folder.metrics("rwml").exists() else []
    if not plot_rwml(logs, folder.plot("rwml_reward.png")):
        return []
    lines = [
        "",
        "## RWML training",
        "",
        "Per GRPO step: the mean reward, the share of groups whose rewards differ (signal: only they carry gradient), "
        "the hit rate at tau_d, the share of completions with a `<next_state>` tag, and the share cut at "
        "grpo.max_completion_length.",
        "",
        f"![RWML training]({prefix}plots/rwml_reward.png)",
    ]
    warning = next((m["signal_warning"] for m in logs if "signal_warning" in m), None)
    return lines + (["", f"**Warning:** {warning}"] if warning else [])


#: metrics-file key -> the curve it draws in the RWML plot
RWML_CURVES = {
    "reward": "reward mean",
    "signal_share": "groups with signal",
    "hit_rate": "hit rate",
    "tag_rate": "tag rate",
    "completions/clipped_ratio": "cut at budget",
}


def plot_rwml(logs: list[dict], target) -> bool:
    """RWML_CURVES per GRPO step; False when nothing was trained."""
    from rwml_lite.train.grpo import logged_steps

    steps = logged_steps(logs)
    if not steps:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, label in RWML_CURVES.items():
        if key in steps[0]:
            style = {"marker": "o", "linewidth": 2} if key == "reward" else {"linestyle": "--"}
            ax.plot([m["step"] for m in steps], [m[key] for m in steps], label=label, **style)
    ax.set_xlabel("GRPO step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, target)
    return True


def plot_thresholds(folder: RunFolder, stats: dict, measured: dict) -> bool:
    """Histograms of the distances (d = 1 - cos) behind each measured threshold, with the thresholds drawn."""
    panels = []
    if "reward" in measured:
        flat = [d for g in measured["reward"]["distances"] for d in g if d is not None]
        panels.append(("starting policy's predictions", flat, measured["reward"]["tau_d"], "reward tau_d"))
    if "filter" in measured:
        closest = [d for d in measured["filter"]["closest"] if d is not None]
        panels.append(("closest of the filter's K predictions", closest, measured["filter"]["tau_d"], "filter tau_d"))
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, values, tau, label) in zip(axes[0], panels):
        ax.hist(values, bins=30, range=(0, max([1.0, *values])), color="tab:blue", alpha=0.8)
        ax.axvline(tau, color="tab:red", label=f"{label} {tau:.3f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("d = 1 - cos (untagged predictions left out)")
        ax.legend(fontsize=8)
    _save(fig, folder.plot("thresholds.png"))
    return True


def plot_policy(folder: RunFolder) -> bool:
    """Success %, invalid-action % and mean return per policy step; False when nothing was trained."""
    from rwml_lite.train.policy import read_policy_metrics

    logs = read_policy_metrics(folder.metrics("policy"))
    if not logs:
        return False
    plt = _pyplot()
    steps = [m["step"] for m in logs]
    fig, (rates, returns) = plt.subplots(1, 2, figsize=(9, 3.5))
    rates.plot(steps, [m["success"] for m in logs], marker="o", label="success %")
    rates.plot(steps, [m["invalid_rate"] for m in logs], linestyle="--", label="invalid actions %")
    returns.plot(steps, [m["reward"] for m in logs], marker="o", color="tab:green", label="mean return")
    for ax in (rates, returns):
        ax.set_xlabel("policy step")
        ax.legend()
        ax.grid(alpha=0.3)
    _save(fig, folder.plot("policy.png"))
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, target) -> None:
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    _pyplot().close(fig)


def policy_label(recipe: Recipe, name: str) -> str:
    """How a row names an evaluated policy: its stage, and for the policy stage what it started from
    (the names `rwml-lite study` gives its variants)."""
    return (
        name
        if name != "policy"
        else {"base": "policy", "rwml": "rwml+policy", "wm_sft": "wm_sft+policy"}[recipe.policy.start]
    )


def _by_type(recipe: Recipe, results: dict[str, dict]) -> list[str]:
    """The environment's own section, or success by task type where there are several."""
    own = benchmark(recipe.env.name).report_section(recipe.env, results)
    if own is not None:
        return own
    types = sorted({t for r in results.values() for t in r["success_by_type"]})
    if len(types) < 2:
        return []
    lines = ["", "Success % by task type (all splits, mean over games):", ""]
    lines += ["| task type | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    lines += [
        f"| {t} | " + " | ".join(f"{r['success_by_type'].get(t, 0.0):.1f}" for r in results.values()) + " |"
        for t in types
    ]
    return lines


def _weighting(recipe: Recipe, results: dict[str, dict]) -> str:
    """How many of the pooled games come from each split (the paper's AVG is not a pooling)."""
    episodes = next(iter(results.values()), {}).get("episodes_by_split", {})
    total = sum(episodes.values())
    if len(episodes) < 2 or not total:
        return ""
    return "; pooled: " + ", ".join(f"{100 * n / total:.0f} % {_label(recipe, split)}" for split, n in episodes.items())


def _paper_section(recipe: Recipe) -> list[str]:
    bench = benchmark(recipe.env.name)
    if not bench.paper_rows:
        return []
    columns = bench.paper_columns
    lines = ["", f"The paper's success % for comparison ({bench.paper_model}, "
             "full fine-tuning on 2-8 B200s, mean of 3 runs; docs/paper.md):", ""]  # fmt: skip
    lines += ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for name, values in bench.paper_rows.items()
    ]
    return lines


def _label(recipe: Recipe, split: str) -> str:
    """A split as the paper names it (ALFWorld's valid_seen: "ID (valid_seen)"); the pooled column as "pooled"."""
    if split == POOLED:
        return "pooled"
    named = recipe.env.SPLIT_NAMES.get(split)
    return f"{named} ({split})" if named else split


def number_text(value) -> str:
    """A number with 3 significant digits, or '-' for a missing one."""
    return "-" if value is None else f"{value:.3g}"


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
