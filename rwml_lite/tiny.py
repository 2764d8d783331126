"""Tiny random Qwen3 (dense and MoE) checkpoints built locally, for tests and benchmarks on machines without the Hub.

A byte-level BPE tokenizer is trained on the caller's texts (so prompts tokenize compactly) and
padded with filler tokens up to `vocab_size`, because the vocabulary sets the size of the logits,
which a memory benchmark must exercise at a realistic width.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml_tokenizer(texts: list[str], bpe_size: int = 800, vocab_size: int | None = None):
    """A fast tokenizer with the ChatML template: BPE of at most `bpe_size` tokens trained on
    `texts`, then filler tokens up to `vocab_size` tokens in all, if given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    if vocab_size and len(tokenizer) < vocab_size:
        tokenizer.add_tokens([f"<filler{i}>" for i in range(vocab_size - len(tokenizer))])
    return tokenizer


def random_qwen3(tokenizer, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int, head_dim: int):
    """A randomly initialised Qwen3ForCausalLM over `tokenizer`'s vocabulary (seeded)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    return Qwen3ForCausalLM(config)


def random_qwen3_moe(tokenizer, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, experts: int,
                     active: int, expert_intermediate: int):  # fmt: skip
    """A randomly initialised Qwen3MoeForCausalLM (Qwen3-30B-A3B's architecture, every layer sparse):
    `experts` MLPs of width `expert_intermediate` per layer, `active` of them run per token (seeded)."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, num_experts=experts, num_experts_per_tok=active,
        moe_intermediate_size=expert_intermediate, intermediate_size=expert_intermediate, decoder_sparse_step=1,
        mlp_only_layers=[], max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    return Qwen3MoeForCausalLM(config)


def save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_embedder(tokenizer, folder: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A random BERT saved as a checkpoint folder that sentence-transformers loads (mean pooling):
    an embedder for benchmarks that measure memory and time, where the reward's values do not matter."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return save(BertModel(config), tokenizer, folder)
