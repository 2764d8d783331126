"""ALFWorld: the paper's headline benchmark, the real text games (alfworld 0.4.2 + TextWorld).

Games are the `game.tw-pddl` files under `$ALFWORLD_DATA/json_2.1.1/<split>/<task-dir>/<trial>/`
(what `alfworld-download` writes); a task id is the game's folder relative to `json_2.1.1`, e.g.
`valid_seen/pick_and_place_simple-Mug-None-Desk-308/trial_T20190908_...`, and its task type is
the first dash-separated token of the task folder. Object names are demangled as the official
wrapper does ("cabinet 3"); the engine's "Nothing happens." marks an action that did nothing,
counted invalid like an inadmissible one.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from rwml_lite.config import ALFWorldSettings
from rwml_lite.envs.base import Benchmark, Step, data_folder
from rwml_lite.errors import RwmlError

TASK_TYPES = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)
NOTHING_HAPPENS = "Nothing happens."
_WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
_GOAL = "Your task is to: "


def games_root() -> Path:
    """$ALFWORLD_DATA/json_2.1.1, or an error saying where games were looked for and how to get them."""
    data = Path(os.environ.get("ALFWORLD_DATA", Path.home() / ".cache" / "alfworld")).expanduser()
    root = data / "json_2.1.1"
    if not root.is_dir():
        raise RwmlError(
            f"No ALFWorld games: looked for {root} (from {'$ALFWORLD_DATA' if 'ALFWORLD_DATA' in os.environ else 'the default ~/.cache/alfworld'}). "
            f"Download them with `pip install 'rwml-lite[alfworld]' && alfworld-download` (writes ~/.cache/alfworld), "
            f"or point ALFWORLD_DATA at the folder that holds json_2.1.1/."
        )
    return root


def list_games(root: Path, split: str) -> list[str]:
    """Task ids of the solvable games of a split, the task types taken in turn (so that the first
    N tasks of a split cover every type), each type in sorted order."""
    if split not in ALFWorldSettings.SPLITS:
        raise RwmlError(f"ALFWorld split {split!r} does not exist; use one of {', '.join(ALFWorldSettings.SPLITS)}.")
    games = sorted((root / split).glob("*/*/game.tw-pddl"))
    # every game file states whether the planner solved it; unsolvable ones cannot be won
    solvable = [str(g.parent.relative_to(root)) for g in games if '"solvable": true' in g.read_text()]
    by_type = [[t for t in solvable if task_type(t) == kind] for kind in TASK_TYPES]
    return [task for turn in itertools.zip_longest(*by_type) for task in turn if task is not None]


def task_type(task_id: str) -> str:
    return Path(task_id).parent.name.split("-")[0]


class ALFWorld:
    role = "You are an expert agent operating in the ALFRED embodied environment (a household simulator)."

    def __init__(self, max_steps: int):
        try:
            import textworld  # noqa: F401
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler  # noqa: F401
        except ImportError:
            raise RwmlError(
                "ALFWorld needs its engine: `pip install 'rwml-lite[alfworld]'` (alfworld 0.4.2 + textworld)."
            ) from None
        self.root = games_root()
        self.max_steps = max_steps
        self.goal = ""
        self._env = None
        self._admissible: list[str] = []
        self._steps = 0
        self._last: Step | None = None

    def tasks(self, split: str) -> list[str]:
        return list_games(self.root, split)

    def task_type(self, task_id: str) -> str:
        return task_type(task_id)

    def reset(self, task_id: str, seed: int = 0) -> str:
        # The games are fixed PDDL problems: `seed` does not change them; rollouts differ by sampling.
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

        game = self.root / task_id / "game.tw-pddl"
        if not game.is_file():
            raise RwmlError(f"ALFWorld task {task_id!r} has no game file at {game}.")
        self.close()
        infos = textworld.EnvInfos(won=True, admissible_commands=True)
        self._env = textworld.start(str(game), infos, wrappers=[AlfredDemangler(shuffle=False)])
        state = self._env.reset()
        text = state.feedback.replace(_WELCOME, "").strip()
        observation, _, goal = text.partition(_GOAL)
        self.goal = goal.strip()
        self._admissible = list(state["admissible_commands"])
        self._steps = 0
        self._last = None
        return observation.strip()

    def step(self, action: str) -> Step:
        if self._last is not None and self._last.done:  # as alfworld's own env: a finished game repeats itself
            return Step(self._last.observation, 0.0, True, self._last.won, False)
        state, reward, done = self._env.step(action)
        observation = state.feedback.strip()
        # the engine executes an admissible command whatever spaces surround it, so validity must agree
        valid = action.strip() in self._admissible and observation != NOTHING_HAPPENS
        self._admissible = list(state["admissible_commands"])
        self._steps += 1
        won = bool(state["won"])
        self._last = Step(observation, float(reward), bool(done) or won or self._steps >= self.max_steps, won, valid)
        return self._last

    def admissible_actions(self) -> list[str]:
        return list(self._admissible)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class ALFWorldBenchmark(Benchmark):
    """The paper's ALFWorld numbers (Qwen2.5-7B-Instruct, full fine-tuning, mean of 3 runs; docs/paper.md): its
    AVG fits 2/3 ID (valid_seen) + 1/3 OOD (valid_unseen), not a pooling of the games."""

    name = "alfworld"
    paper_model = "Qwen2.5-7B-Instruct"
    paper_columns = ("ID", "OOD", "AVG (~2/3 ID + 1/3 OOD)")
    paper_rows = {
        "base model (ReAct)": (16.2, 6.8, 13.0), "WM SFT": (3.1, 2.1, 2.8), "RWML": (34.4, 29.2, 32.6),
        "Policy RL": (82.1, 79.2, 81.0), "WM SFT + Policy RL": (76.2, 82.3, 80.4),  # 80.4: not 2/3 ID + 1/3 OOD
        "RWML + Policy RL": (86.7, 90.1, 87.9),
    }  # fmt: skip
    paper_ablations = {"binary LLM-as-a-judge reward": 14.5, "continuous LLM-as-a-judge reward": 3.6,
                       "without too-easy subsampling": 2.9}  # fmt: skip
    #: the evaluation splits as the paper names them
    SEEN, UNSEEN = "valid_seen", "valid_unseen"

    def make_env(self, settings: ALFWorldSettings, max_steps: int, users=None) -> ALFWorld:
        return ALFWorld(max_steps)

    def requirements(self) -> list[tuple[str, bool | None, str]]:
        fix = "alfworld-download (needs the alfworld extra), then export ALFWORLD_DATA=~/.cache/alfworld"
        return [data_folder("ALFWORLD_DATA", "json_2.1.1", fix)]

    def columns(self, settings: ALFWorldSettings, splits: list[str]):
        if not {self.SEEN, self.UNSEEN} <= set(splits):
            return super().columns(settings, splits)
        seen, unseen = (lambda ep: ep.split == self.SEEN), (lambda ep: ep.split == self.UNSEEN)
        return {"ID": [(1.0, seen)], "OOD": [(1.0, unseen)], "AVG": [(2 / 3, seen), (1 / 3, unseen)]}

    def report_lines(self, settings: ALFWorldSettings, splits: list[str], results: dict, labels: dict) -> list[str]:
        if not {self.SEEN, self.UNSEEN} <= set(splits):
            return []
        return ["", "Weighted as the paper's AVG (2/3 ID + 1/3 OOD): " + ", ".join(
            f"{labels[name]} {2 / 3 * r['success'][self.SEEN]['mean'] + 1 / 3 * r['success'][self.UNSEEN]['mean']:.1f}"
            for name, r in results.items()) + "."]  # fmt: skip


BENCHMARK = ALFWorldBenchmark()
