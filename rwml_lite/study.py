"""`rwml-lite study RECIPE`: the paper's comparison from one command.

Each variant (base, WM SFT, RWML, Policy RL, WM SFT + Policy RL, RWML + Policy RL, and the ablations
on request) is the recipe with a few fields changed, run by the ordinary pipeline in its own folder
`variants/<name>/`, so each resumes like `train`. Work two variants would do alike is done once:
collect, build and filter run in the study folder, and a variant links in every finished stage of
an earlier folder whose stage key (the hash of what the stage's result depends on) equals its own,
so RWML + Policy RL starts from the RWML variant's adapter. Every variant is evaluated with the same
R runs on the same tasks; `study.json`, `study.md` and `plots/study.png` gather the results in the
layout of the paper's Table 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rwml_lite.config import STAGE_NAMES, VARIANTS, Recipe, build_recipe, marked_lines
from rwml_lite.distributed import barrier, is_main
from rwml_lite.envs import benchmark
from rwml_lite.pipeline import link_finished, run, supersede
from rwml_lite.records import atomic_write_json, atomic_write_text, read_json
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import EpisodeRecord, read_episodes
from rwml_lite.stages.eval import success_rate
from rwml_lite.stages.report import INTERVALS, number_text, rate_cell, rwml_lines, threshold_lines, versus_lines


@dataclass(frozen=True)
class Variant:
    label: str  # the paper's name for the row
    stages: list[str]
    evaluated: str  # the policy whose evaluation is the variant's row
    overrides: dict = field(default_factory=dict)
    paper_row: str | None = None  # the row of its benchmark's paper_rows (Table 1) or paper_ablations (Table 4)


_C, _B, _F = "collect", "build", "filter"
SPECS = {
    "base": Variant("base model", [_C, _B, "eval"], "base", paper_row="base model (ReAct)"),
    "wm_sft": Variant("WM SFT", [_C, _B, _F, "wm_sft", "eval"], "wm_sft", paper_row="WM SFT"),
    "rwml": Variant("RWML", [_C, _B, _F, "rwml", "eval"], "rwml", paper_row="RWML"),
    "policy": Variant("Policy RL", [_C, _B, "policy", "eval"], "policy", {"policy.start": "base"}, "Policy RL"),
    "wm_sft+policy": Variant(
        "WM SFT + Policy RL", [_C, _B, _F, "wm_sft", "policy", "eval"], "policy", {"policy.start": "wm_sft"},
        "WM SFT + Policy RL",
    ),
    "rwml+policy": Variant(
        "RWML + Policy RL", [_C, _B, _F, "rwml", "policy", "eval"], "policy", {"policy.start": "rwml"},
        "RWML + Policy RL",
    ),
    "rwml_no_filter": Variant(
        "RWML without too-easy subsampling", [_C, _B, _F, "rwml", "eval"], "rwml",
        {"worldmodel.filter.enabled": False}, "without too-easy subsampling",
    ),
    "rwml_judge_binary": Variant(
        "RWML, binary LLM-judge reward", [_C, _B, _F, "rwml", "eval"], "rwml", {"reward.kind": "judge_binary"},
        "binary LLM-as-a-judge reward",
    ),
    "rwml_judge_continuous": Variant(
        "RWML, continuous LLM-judge reward", [_C, _B, _F, "rwml", "eval"], "rwml",
        {"reward.kind": "judge_continuous"}, "continuous LLM-as-a-judge reward",
    ),
    "rwml_continuous": Variant(
        "RWML, continuous cosine reward [ours: not in the paper]", [_C, _B, _F, "rwml", "eval"], "rwml",
        {"reward.kind": "continuous"},
    ),
}  # fmt: skip
assert set(SPECS) == set(VARIANTS)


def variant_recipe(recipe: Recipe, name: str, root: Path) -> Recipe:
    """The recipe of one variant: its stages, its evaluated policy, its own folder, its overrides."""
    spec = SPECS[name]
    data = recipe.model_dump(mode="json")
    # the filter stage measures reward.tau_d: auto, which every evaluation needs (linked from the study folder)
    measured = recipe.reward.tau_d == "auto" and _F not in spec.stages
    data["stages"] = [_C, _B, _F, *spec.stages[2:]] if measured else spec.stages
    data["eval"]["policies"] = [spec.evaluated]
    data["run"]["dir"] = str(root / "variants" / name)
    overrides = [f"{key}={json.dumps(value)}" for key, value in spec.overrides.items()]
    return build_recipe(data, overrides, f"study variant {name}")


def planned_recipe(recipe: Recipe) -> Recipe:
    """The recipe with every stage some variant runs: what `plan` and the memory check must cover."""
    stages = [s for s in STAGE_NAMES if any(s in SPECS[v].stages for v in recipe.study.variants)]
    if recipe.reward.tau_d == "auto" and _F not in stages:  # measured there for every variant (variant_recipe)
        stages.insert(stages.index(_B) + 1, _F)
    return build_recipe(recipe.model_dump(mode="json"), [f"stages={json.dumps(stages)}", "eval.policies=null"], "study")


def run_study(recipe: Recipe, redo: str | None = None, source: Path | None = None) -> RunFolder:
    """Run the shared stages, then every variant in the order of VARIANTS (a variant that builds on
    another comes after it); write study.json, study.md and the chart. Rerunning resumes. `redo`
    supersedes that stage and the later ones in the shared folder and in every variant, each variant's
    before the stages that earlier variants finished again are linked into it. `source`, the recipe's file, gives
    study.md its list of where the recipe leaves the paper."""
    root = RunFolder(Path(recipe.run.dir))
    wanted = [v for v in VARIANTS if v in recipe.study.variants]
    recipes = {name: variant_recipe(recipe, name, root.root) for name in wanted}
    shared = [s for s in (_C, _B, _F) if any(s in r.stages for r in recipes.values())]
    run(build_recipe(recipe.model_dump(mode="json"), [f"stages={json.dumps(shared)}", "eval.policies=null"], "study"),
        shared, redo if redo in shared else None)  # fmt: skip
    finished = [root]
    results = {}
    for name in wanted:
        folder = RunFolder(Path(recipes[name].run.dir))
        if is_main():  # under accelerate launch: the others wait for the links
            if redo:
                supersede(folder, redo)
            link_finished(finished, folder, recipes[name])
        barrier()
        run(recipes[name], recipes[name].stages)
        finished.append(folder)
        results[name] = _result(recipes[name], folder, SPECS[name].evaluated)
    if is_main():
        write_study(recipe, root, results, marked_lines(source) if source else [])
    return root


def _result(recipe: Recipe, folder: RunFolder, policy: str) -> dict:
    evaluation = read_json(folder.eval(f"{policy}.json"))
    episodes = read_episodes(folder.eval(f"episodes_{policy}.jsonl"))
    return {"folder": str(folder.root), "columns": columns(recipe, episodes), **evaluation}


def columns(recipe: Recipe, episodes: list[EpisodeRecord]) -> dict[str, dict]:
    """The benchmark's success columns (the paper's where it has them: ALFWorld ID / OOD / AVG, tau2 per domain and
    its weighted AVG; otherwise one per split), each as success % over games with its 95 % interval and the per-run
    rates."""
    table = benchmark(recipe.env.name).columns(recipe.env, recipe.eval.splits)
    return {
        column: success_rate(
            [(weight, [ep for ep in episodes if keep(ep)]) for weight, keep in parts], recipe.eval.runs
        )
        for column, parts in table.items()
    }


def write_study(recipe: Recipe, root: RunFolder, results: dict[str, dict], deviations: list[str] = ()) -> None:
    env, bench = recipe.env.name, benchmark(recipe.env.name)
    paper_columns, paper_rows, ablations = bench.paper_columns, bench.paper_rows, bench.paper_ablations
    atomic_write_json(
        root.root / "study.json",
        {
            "env": env,
            "model": recipe.model.name_or_path,
            "eval": {"splits": recipe.eval.splits, "num_tasks": recipe.eval.num_tasks, "runs": recipe.eval.runs},
            "variants": [{"name": name, "label": SPECS[name].label, **r} for name, r in results.items()],
            "paper": {"columns": list(paper_columns), "rows": paper_rows, "ablations_avg": ablations},
        },
    )
    ours = list(next(iter(results.values()))["columns"]) if results else []
    header = ["variant", *(f"success % {c}" for c in ours), "world-model hits %", "similarity", "invalid actions %"]
    if paper_columns:
        header += [f"paper {c}" for c in paper_columns]
    e = recipe.eval
    lines = [
        f"# rwml-lite study: {root.root}",
        "",
        f"Model `{recipe.model.name_or_path}` on {env}. Task success % over the same games for every variant "
        f"({'all' if e.num_tasks is None else e.num_tasks} per split, {e.runs} run(s) each, at most {e.max_steps} "
        f"steps, temperature {e.temperature}); world-model hits: share of {e.wm_samples} prediction(s) per held-out "
        "triplet within tau_d (binary, whatever reward trained it), on games no training triplet comes from. "
        + INTERVALS
        + (_paper_note(bench.paper_model) if paper_columns else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    lines += ["| " + " | ".join(_row(name, r, ours, bench)) + " |" for name, r in results.items()]
    lines += versus_lines(results, {name: SPECS[name].label for name in results})
    lines += ["", "![task success by variant](plots/study.png)"]
    if "rwml" in results:
        trained = Path(results["rwml"]["folder"])
        lines += rwml_lines(RunFolder(trained), prefix=f"{trained.relative_to(root.root)}/")
    lines += threshold_lines(root)
    if deviations:
        lines += [
            "",
            "## Where this study leaves the paper",
            "",
            "As the recipe marks it ([ours]: our choice or the paper's silence; [demo]: shrunk for a CPU):",
            "",
        ]
        lines += [f"- `{line}`" for line in deviations]  # fmt: skip
    lines += ["", "Each variant's own report:", ""]
    lines += [f"- {SPECS[n].label}: `{Path(r['folder']).relative_to(root.root)}/report.md`" for n, r in results.items()]
    atomic_write_text(root.root / "study.md", "\n".join(lines) + "\n")
    _chart(results, ours, root.plot("study.png"))


def _row(name: str, result: dict, ours: list[str], bench) -> list[str]:
    """A variant's cells: its success columns, world model and invalid actions, then the paper's numbers for its
    row (Table 1), or the AVG alone for an ablation (Table 4)."""
    cells = [SPECS[name].label, *(rate_cell(result["columns"][c], "games") for c in ours)]
    cells += [rate_cell(result["wm_hits"], "held-out games"), number_text(result["wm_similarity"]),
              f"{result['invalid_action_rate']:.1f}"]  # fmt: skip
    row = SPECS[name].paper_row
    if not bench.paper_columns:
        return cells
    if row in bench.paper_rows:
        return cells + [f"{v:.1f}" for v in bench.paper_rows[row]]
    avg = bench.paper_ablations.get(row)
    return cells + ["-"] * (len(bench.paper_columns) - 1) + [f"{avg:.1f}" if avg is not None else "-"]


def _paper_note(model: str) -> str:
    return (
        f" The paper's columns: {model}, full fine-tuning on 2-8 B200s, mean of 3 runs (Table 1; ablations: Table 4, "
        "AVG only); compare with care where our model, adapter or budget differ."
    )


def _chart(results: dict[str, dict], columns_: list[str], target: Path) -> None:
    """Grouped bars: one group per column, one bar per variant, error bars = the 95 % interval over games."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(columns_) * max(len(results), 1) / 3), 4))
    for i, (name, r) in enumerate(results.items()):
        xs = [c + (i - (len(results) - 1) / 2) * width for c in range(len(columns_))]
        means = [r["columns"][c]["mean"] for c in columns_]
        spans = [[m - r["columns"][c]["low"] for c, m in zip(columns_, means)],
                 [r["columns"][c]["high"] - m for c, m in zip(columns_, means)]]  # fmt: skip
        ax.bar(xs, means, width, yerr=spans, capsize=3, label=SPECS[name].label)
    ax.set_xticks(range(len(columns_)), columns_)
    ax.set_ylabel("task success % (95 % interval over games)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
