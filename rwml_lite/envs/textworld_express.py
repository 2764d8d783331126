"""TextWorldExpress: the embedded default environment (pip-installable, offline, ~1,300 steps/s).

The engine is a Java program driven over py4j, so a Java runtime must be on PATH. Tasks are the
engine's seeded games of one fold: task id `"<fold>-<seed>"`, e.g. `"train-3"`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess

from rwml_lite.config import TextWorldExpressSettings
from rwml_lite.envs.base import Benchmark, Step
from rwml_lite.errors import RwmlError

FOLDS = TextWorldExpressSettings.SPLITS


def require_java() -> str:
    """Path of `java`, or a clear error saying how to install it."""
    java = shutil.which("java")
    if java is None:
        raise RwmlError(
            "TextWorldExpress needs a Java runtime (it runs the game engine as a Java program), and "
            "`java` is not on PATH. Install one with `sudo apt-get install -y openjdk-17-jre-headless` "
            "(Debian/Ubuntu) or `brew install openjdk@17` (macOS), then run the command again."
        )
    return java


class TextWorldExpress:
    role = "You are an expert agent playing a text-based household game."

    def __init__(self, game: str, game_params: str, max_steps: int, brief_rooms: bool = False):
        require_java()
        from textworld_express import TextWorldExpressEnv

        self.game, self.game_params, self.max_steps, self.brief_rooms = game, game_params, max_steps, brief_rooms
        # The engine's own limit is set past ours so that `max_steps` alone decides when we stop.
        self._env = TextWorldExpressEnv(envStepLimit=max_steps + 1)
        self._env.load(gameName=game, gameParams=game_params)
        self._seeds = {
            "train": self._env.getValidSeedsTrain,
            "dev": self._env.getValidSeedsDev,
            "test": self._env.getValidSeedsTest,
        }
        self.goal = ""
        self._admissible: list[str] = []
        self._steps = 0

    def tasks(self, split: str) -> list[str]:
        if split not in FOLDS:
            raise RwmlError(f"TextWorldExpress split {split!r} does not exist; use one of {', '.join(FOLDS)}.")
        return [f"{split}-{seed}" for seed in self._seeds[split]()]

    def task_type(self, task_id: str) -> str:
        return self.game

    def reset(self, task_id: str, seed: int = 0) -> str:
        # Each task is one procedurally generated game; `seed` does not change it (the engine is
        # deterministic given the game seed), so repeated rollouts differ only by the agent's sampling.
        fold, _, game_seed = task_id.rpartition("-")
        if fold not in FOLDS or not game_seed.isdigit():
            raise RwmlError(f"TextWorldExpress task id {task_id!r} must look like 'train-3' (fold-seed).")
        observation, info = self._env.reset(seed=int(game_seed), gameFold=fold, generateGoldPath=True)
        self.goal = info["taskDescription"]
        self._admissible = list(info["validActions"])
        self._steps = 0
        return self._shown(observation)

    def step(self, action: str) -> Step:
        valid = action in self._admissible
        observation, reward, done, info = self._env.step(action)
        self._steps += 1
        self._admissible = list(info["validActions"])
        won = bool(info["tasksuccess"])
        return Step(
            observation=self._shown(observation),
            reward=float(reward),
            done=bool(done) or won or self._steps >= self.max_steps,
            won=won,
            valid=valid,
            info={"score": info["score"]},
        )

    def _shown(self, observation: str) -> str:
        return brief_room(observation, self._admissible) if self.brief_rooms else observation.strip()

    def admissible_actions(self) -> list[str]:
        return list(self._admissible)

    def gold_actions(self) -> list[str]:
        """The engine's solution of the current task (after the initial 'look around')."""
        return [a for a in self._env.getGoldActionSequence() if a != "look around"]

    def close(self) -> None:
        self._env.close()
        # The engine's own __del__ closes again, and writes to the Java process's stdin if that
        # process has not exited yet: a BrokenPipeError printed for every game. Wait for the exit.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._env._gateway.java_process.wait(timeout=10)


_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def brief_room(observation: str, admissible: list[str]) -> str:
    """A room description cut to what an agent acts on: where it is, the things it can take, the exits.
    The engine writes "You are in the X. <a sentence per piece of furniture> \\n<To the East you see the Y. ...>";
    the furniture sentences, five to ten per room and the same in every game, are dropped (other observations
    are returned as they are). Prompts become several times shorter, which a CPU demo needs."""
    head, newline, exits = observation.strip().partition("\n")
    if not head.startswith("You are in the") or not newline:
        return observation.strip()
    takeable = [a.removeprefix("take ") for a in admissible if a.startswith("take ")]
    first, *rest = _SENTENCE_END.split(head.strip())
    kept = [first] + [s for s in rest if any(thing in s for thing in takeable)]
    return " ".join(kept + [exits.strip()])


class TextWorldExpressBenchmark(Benchmark):
    """The demo's games: the paper did not run them, so no paper numbers and one success column per split."""

    name = "textworld_express"

    def make_env(self, settings: TextWorldExpressSettings, max_steps: int, users=None) -> TextWorldExpress:
        return TextWorldExpress(settings.game, settings.game_params, max_steps, settings.brief_rooms)

    def describe(self, settings: TextWorldExpressSettings) -> str:
        return f"{self.name} `{settings.game}`"

    def requirements(self) -> list[tuple[str, bool | None, str]]:
        java = shutil.which("java")
        if not java:
            return [("Java (TextWorldExpress)", False, "not found: sudo apt-get install -y openjdk-17-jre-headless")]
        out = subprocess.run([java, "-version"], capture_output=True, text=True)
        return [("Java (TextWorldExpress)", True, (out.stderr or out.stdout).splitlines()[0])]


BENCHMARK = TextWorldExpressBenchmark()
