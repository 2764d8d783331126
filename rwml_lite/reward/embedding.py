"""The sim-to-real reward: how close a predicted next observation lands to the real one.

    d = 1 - cos(E(pred), E(real));  binary: r = 1 if d < tau_d else 0;  continuous: r = cos

E is a sentence-transformers embedder. A GRPO step scores batch x group predictions against
batch real states, so the reward is built to do little work per step: each real state is
encoded once and cached for the whole run, all predictions of a call go through the embedder
in one batch, and identical predictions (common once a group agrees) are encoded once.
A completion without a closed `<next_state>` tag scores 0 (with worldmodel.close_at_end, an open one is
read up to its end).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwml_lite.config import RewardSettings, WorldModelSettings
from rwml_lite.distributed import local_device
from rwml_lite.errors import RwmlError
from rwml_lite.prompts import closed_at_end, extract_next_state
from rwml_lite.reward.rouge import rounded_rouge
from rwml_lite.sources import resolve


class Embedder:
    """Unit-normalised sentence embeddings, so cosine similarity is a dot product.

    `precision` 8bit/4bit quantizes the embedder's linear layers with bitsandbytes, so that a
    Qwen3-Embedding model fits on the policy's GPU (8B weights: ~14 GiB in bf16, ~4 GiB in 4-bit).
    """

    def __init__(self, name_or_path: str, batch_size: int = 64, precision: str = "float32", device: str | None = None):
        from sentence_transformers import SentenceTransformer

        source = resolve(name_or_path)
        device = device or str(local_device())
        try:
            weights = _weights(precision, device)
            self.model = SentenceTransformer(
                source,
                device=None if "device_map" in weights else device,
                local_files_only=Path(source).exists(),
                model_kwargs=weights,
            )
        except OSError as e:
            raise RwmlError(f"Could not load the embedder `{name_or_path}` (reward.embedder): {e}") from None
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: RewardSettings) -> Embedder:
        return cls(settings.embedder, settings.batch_size, settings.precision)

    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        ).float()


def _weights(precision: str, device: str) -> dict:
    """model_kwargs for the embedder's transformers model at the recipe's precision."""
    if precision in ("float32", "bfloat16"):
        return {"dtype": getattr(torch, precision)}
    from transformers import BitsAndBytesConfig

    if precision == "8bit":  # LLM.int8() computes in float16
        compute, quantization = torch.float16, BitsAndBytesConfig(load_in_8bit=True)
    else:
        compute = torch.bfloat16 if device == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    return {"quantization_config": quantization, "dtype": compute, "device_map": {"": device}}


class NextStateReward:
    """Scores completions against real next observations; also a TRL reward function.

    One convention for the whole package: a completion is the whole assistant turn, including the
    text it was started with (`worldmodel.prefill`). Our generators return it that way, so the
    filter and the evaluation score what they get; TRL's GRPO rendered the prefill into the prompt
    and hands over only what the model wrote after it, so the TRL entry point (`__call__`) puts the
    prefill back, once.
    """

    def __init__(
        self, embedder: Embedder, tau_d: float, kind: str = "binary", prefill: str = "", close_at_end: bool = False
    ):
        """`close_at_end` (worldmodel.close_at_end): a prediction whose `<next_state>` is still open at its end
        (the reply stopped, or was cut at the token budget) is read up to there instead of scoring 0."""
        self.embedder, self.tau_d, self.kind, self.prefill = embedder, tau_d, kind, prefill
        self.close_at_end = close_at_end
        self._real: dict[str, torch.Tensor] = {}
        self.__name__ = "next_state_reward"  # TRL names the logged reward column after this

    @classmethod
    def from_settings(
        cls, settings: RewardSettings, worldmodel: WorldModelSettings | None = None, embedder: Embedder | None = None
    ) -> NextStateReward:
        embedder = embedder or Embedder.from_settings(settings)
        if worldmodel is None:
            return cls(embedder, settings.tau_d, settings.kind)
        return cls(embedder, settings.tau_d, settings.kind, worldmodel.prefill, worldmodel.close_at_end)

    def read(self, completions: list[str]) -> list[str]:
        """The completions as they are scored: with close_at_end, an open `<next_state>` is closed at the end."""
        return [closed_at_end(c) for c in completions] if self.close_at_end else list(completions)

    def similarities(self, completions: list[str], real_states: list[str]) -> list[float | None]:
        """Cosine of each prediction to its real state; None where the `<next_state>` tag is missing."""
        predictions = [extract_next_state(c) for c in completions]
        new_real = sorted({r for r in real_states if r not in self._real})
        if new_real:
            self._real.update(zip(new_real, self.embedder.encode(new_real)))
        unique = sorted({p for p in predictions if p is not None})
        pred_emb = dict(zip(unique, self.embedder.encode(unique))) if unique else {}
        return [None if p is None else float(pred_emb[p] @ self._real[r]) for p, r in zip(predictions, real_states)]

    def hit(self, similarity: float | None) -> float:
        """The binary reward: 1 if d = 1 - cos < tau_d."""
        return float(similarity is not None and 1.0 - similarity < self.tau_d)

    def reward_of(self, similarity: float | None) -> float:
        if self.kind == "continuous":
            return 0.0 if similarity is None else similarity
        return self.hit(similarity)

    def score(self, completions: list[str], real_states: list[str], measures: list[str] | None = None) -> list[float]:
        """The reward of each completion by its measure: "embedding" (the cosine reward), or "rouge" for
        structured text that embeddings blur (tau2's tool replies), ROUGE-L F1 rounded to 0.2, as docs/paper.md does."""
        return self.scored(completions, real_states, measures)[0]

    def scored(
        self, completions: list[str], real_states: list[str], measures: list[str] | None = None
    ) -> tuple[list[float], list[bool], list[float | None]]:
        """(rewards, hits, similarities): `score`'s rewards; whether each prediction hits, within tau_d of the real
        state in the embedding or a full rounded ROUGE-L (whatever the reward's kind); and the cosine of the
        embedding-measured ones (None without a tag, and for ROUGE-measured ones)."""
        measures = measures or ["embedding"] * len(completions)
        completions = self.read(completions)
        rewards, hits = [0.0] * len(completions), [False] * len(completions)
        similarities: list[float | None] = [None] * len(completions)
        embedded = [i for i, m in enumerate(measures) if m != "rouge"]
        if embedded:
            sims = self.similarities([completions[i] for i in embedded], [real_states[i] for i in embedded])
            for i, s in zip(embedded, sims):
                rewards[i], hits[i], similarities[i] = self.reward_of(s), bool(self.hit(s)), s
        for i, measure in enumerate(measures):
            if measure == "rouge":
                prediction = extract_next_state(completions[i])
                rewards[i] = 0.0 if prediction is None else rounded_rouge(prediction, real_states[i])
                hits[i] = rewards[i] >= 1.0
        return rewards, hits, similarities

    def __call__(self, prompts, completions, real_next_state, measure=None, log_metric=None, **kwargs) -> list[float]:
        """TRL's entry; through `log_metric` (TRL's) each step also logs its hit and tag rates, what tells
        whether GRPO's groups can see different rewards (train/grpo.py: SignalMonitor)."""
        turns = self.read([self.prefill + c for c in completions])  # TRL's completions start after the prefill
        rewards, hits, _ = self.scored(turns, list(real_next_state), list(measure) if measure is not None else None)
        if log_metric is not None:
            log_metric("hit_rate", sum(hits) / len(hits))
            log_metric("tag_rate", sum(extract_next_state(t) is not None for t in turns) / len(turns))
        return rewards
