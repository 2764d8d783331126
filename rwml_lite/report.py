"""report.md: what a user reads first after a run, plus a plot of the RWML training reward."""

from __future__ import annotations

from rwml_lite.config import Recipe
from rwml_lite.envs import report_section
from rwml_lite.records import atomic_write_text, read_jsonl
from rwml_lite.runfolder import RunFolder

#: how the paper names the ALFWorld evaluation splits; "all" is ours: every evaluated game pooled
SPLIT_LABELS = {"valid_seen": "ID", "valid_unseen": "OOD", "all": "pooled"}

#: The paper's success % (PAPER.md, mean of 3 runs), in the columns our report uses. ALFWorld rows:
#: Qwen2.5-7B-Instruct, full fine-tuning; its AVG fits 2/3 ID + 1/3 OOD, not a pooling of the games.
#: tau2 rows: Qwen3-8B; AVG = 0.4 retail + 0.4 telecom + 0.2 airline.
PAPER = {
    "alfworld": (
        ("ID", "OOD", "AVG (~2/3 ID + 1/3 OOD)"),
        {"base model (ReAct)": (16.2, 6.8, 13.0), "WM SFT": (3.1, 2.1, 2.8), "RWML": (34.4, 29.2, 32.6),
         "Policy RL": (82.1, 79.2, 81.0), "RWML + Policy RL": (86.7, 90.1, 87.9)},
    ),
    "tau2": (
        ("retail", "telecom", "airline", "AVG"),
        {"base model (ReAct)": (37.7, 31.2, 21.6, 31.9), "WM SFT": (32.3, 24.1, 26.9, 27.9), "RWML": (40.8, 40.5, 31.3, 38.8),
         "Policy RL": (40.8, 39.2, 30.0, 38.0), "RWML + Policy RL": (44.2, 45.8, 38.3, 43.7)},
    ),
}  # fmt: skip


def write_report(recipe: Recipe, folder: RunFolder, manifest: dict, results: dict[str, dict]) -> None:
    stages, e = manifest["stages"], recipe.eval
    env = f"{recipe.env.name} `{recipe.env.game}`" if recipe.env.name == "textworld_express" else recipe.env.name
    columns = [*e.splits, "all"]
    per_split = "all" if e.num_tasks is None else f"the first {e.num_tasks}"
    lines = [
        f"# rwml-lite report: {folder.root}",
        "",
        f"Model `{recipe.model.name_or_path}` on {env}; embedder `{recipe.reward.embedder}` "
        f"({recipe.reward.kind} reward, tau_d {recipe.reward.tau_d}).",
        "",
        "## Evaluation",
        "",
        f"Task success % on {per_split} tasks of each split, mean +- std over {e.runs} runs (at most "
        f"{e.max_steps} steps, temperature {e.temperature}); pooled is over all evaluated games together"
        f"{_weighting(results)}. "
        f"World-model score: mean reward of {e.wm_samples} prediction(s) per held-out validation triplet "
        f"({recipe.reward.kind} reward); hits: share of predictions within tau_d {recipe.reward.tau_d}; "
        f"tags: share of predictions with a `<next_state>` tag.",
        "",
        "| policy | "
        + " | ".join(_label(c) for c in columns)
        + " | invalid actions % | steps to success | world-model score | hits % | tags % |",
        "|---" * (len(columns) + 6) + "|",
    ]
    for name, r in results.items():
        name = policy_label(recipe, name)
        steps = f"{r['steps_to_success']:.1f}" if r["steps_to_success"] is not None else "-"
        success = " | ".join(f"{r['success'][c]['mean']:.1f} +- {r['success'][c]['std']:.1f}" for c in columns)
        lines.append(
            f"| {name} | {success} | {r['invalid_action_rate']:.1f} | {steps} "
            f"| {r['wm_score']:.3f} ({r['wm_triplets']} triplets) | {r['wm_hit_rate']:.1f} | {r['wm_tag_rate']:.0f} |"
        )
    if recipe.env.name == "alfworld" and {"valid_seen", "valid_unseen"} <= set(e.splits):
        lines += ["", "Weighted as the paper's AVG (2/3 ID + 1/3 OOD): " + ", ".join(
            f"{name} {2 / 3 * r['success']['valid_seen']['mean'] + 1 / 3 * r['success']['valid_unseen']['mean']:.1f}"
            for name, r in results.items()) + "."]  # fmt: skip
    types = sorted({t for r in results.values() for t in r["success_by_type"]})
    own = report_section(recipe.env, results)
    if own is not None:
        lines += own
    elif len(types) > 1:
        lines += ["", "Success % by task type (all splits, mean over runs):", ""]
        lines += ["| task type | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
        lines += [
            f"| {t} | " + " | ".join(f"{r['success_by_type'].get(t, 0.0):.1f}" for r in results.values()) + " |"
            for t in types
        ]
    lines += _paper_section(recipe.env.name)
    lines += ["", "## Data", ""]
    for stage in ("collect", "build", "filter", "rwml", "wm_sft", "policy"):
        if stage in stages and "summary" in stages[stage]:
            summary = ", ".join(f"{k} {_fmt(v)}" for k, v in stages[stage]["summary"].items())
            lines.append(f"- **{stage}** ({stages[stage].get('seconds', 0):.0f} s): {summary}")
    if _plot_training(folder):
        lines += ["", "## RWML training", "", "![training reward](plots/rwml_reward.png)", ""]
    if _plot_policy(folder):
        lines += ["", "## Policy RL", "", f"Task success, return and invalid actions of the training episodes "
                  f"({policy_label(recipe, 'policy')}, {recipe.policy.tasks_per_step} tasks x {recipe.policy.group_size} "
                  f"episodes per step).", "", "![policy training](plots/policy.png)", ""]  # fmt: skip
    atomic_write_text(folder.report, "\n".join(lines) + "\n")


def _weighting(results: dict[str, dict]) -> str:
    """How many of the pooled games come from each split (the paper's AVG is not a pooling)."""
    episodes = next(iter(results.values()), {}).get("episodes_by_split", {})
    total = sum(episodes.values())
    if len(episodes) < 2 or not total:
        return ""
    return " (" + ", ".join(f"{100 * n / total:.0f} % {_label(split)}" for split, n in episodes.items()) + ")"


def _paper_section(env: str) -> list[str]:
    if env not in PAPER:
        return []
    columns, rows = PAPER[env]
    lines = ["", f"The paper's success % for comparison ({'Qwen2.5-7B-Instruct' if env == 'alfworld' else 'Qwen3-8B'}, "
             "full fine-tuning on 2-8 B200s, mean of 3 runs; PAPER.md):", ""]  # fmt: skip
    lines += ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for name, values in rows.items()]
    return lines


def _plot_training(folder: RunFolder) -> bool:
    """Reward mean and share of zero-variance groups per GRPO step; False when nothing was trained."""
    path = folder.metrics("rwml")
    logs = [m for m in read_jsonl(path) if "reward" in m] if path.exists() else []
    if not logs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in logs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [m["reward"] for m in logs], marker="o", label="reward mean")
    if "frac_reward_zero_std" in logs[0]:
        ax.plot(steps, [m["frac_reward_zero_std"] for m in logs], linestyle="--", label="zero-variance groups")
    ax.set_xlabel("GRPO step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    target = folder.plot("rwml_reward.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return True


def policy_label(recipe: Recipe, name: str) -> str:
    """How a row names an evaluated policy: its stage, and for the policy stage what it started from
    (the names `rwml-lite study` gives its variants)."""
    return (
        name
        if name != "policy"
        else {"base": "policy", "rwml": "rwml+policy", "wm_sft": "wm_sft+policy"}[recipe.policy.start]
    )


def _plot_policy(folder: RunFolder) -> bool:
    """Success %, invalid-action % and mean return per policy step; False when nothing was trained."""
    from rwml_lite.train.policy import read_policy_metrics

    logs = read_policy_metrics(folder.metrics("policy"))
    if not logs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in logs]
    fig, (rates, returns) = plt.subplots(1, 2, figsize=(9, 3.5))
    rates.plot(steps, [m["success"] for m in logs], marker="o", label="success %")
    rates.plot(steps, [m["invalid_rate"] for m in logs], linestyle="--", label="invalid actions %")
    returns.plot(steps, [m["reward"] for m in logs], marker="o", color="tab:green", label="mean return")
    for ax in (rates, returns):
        ax.set_xlabel("policy step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    target = folder.plot("policy.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return True


def _label(split: str) -> str:
    return (
        f"{SPLIT_LABELS[split]} ({split})"
        if split in SPLIT_LABELS and split != "all"
        else SPLIT_LABELS.get(split, split)
    )


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
