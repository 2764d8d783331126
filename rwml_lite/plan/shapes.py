"""Model shapes: the numbers a memory or time estimate needs (a transformers config.json's), for the models the
shipped recipes name without a Hub connection, else read from a local folder or the Hub; and the bytes of a number
in each dtype."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rwml_lite.errors import RwmlError

GIB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "8bit": 1.0 + 4 / 64, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}


@dataclass(frozen=True)
class Architecture:
    """The shape numbers a memory estimate needs (the fields of a transformers config.json)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    experts: int = 0  # MoE: experts per layer, each an MLP of width `intermediate`
    active_experts: int = 0  # MoE: experts each token runs through

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int, int]]:
        """LoRA target name -> (in, out, copies per layer)."""
        h, i, mlp_copies = self.hidden, self.intermediate, max(self.experts, 1)
        return {
            "q_proj": (h, self.q_dim, 1),
            "k_proj": (h, self.kv_dim, 1),
            "v_proj": (h, self.kv_dim, 1),
            "o_proj": (self.q_dim, h, 1),
            "gate_proj": (h, i, mlp_copies),
            "up_proj": (h, i, mlp_copies),
            "down_proj": (i, h, mlp_copies),
        }

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer's linear layers (and MoE router): what offloading moves."""
        return sum(a * b * n for a, b, n in self.module_shapes().values()) + self.hidden * self.experts

    @property
    def linear_params(self) -> int:
        return self.layers * self.layer_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params

    def lora_params(self, r: int, targets: list[str], last_layers: int | None = None) -> int:
        shapes = self.module_shapes()
        return min(self.layers, last_layers or self.layers) * sum(
            r * (shapes[t][0] + shapes[t][1]) * shapes[t][2] for t in targets if t in shapes
        )

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_dim * 2

    @property
    def activation_bytes_per_token_layer(self) -> int:
        """bf16 tensors one decoder layer keeps for backward: norms, q/k/v, attention output (flash
        attention, no score matrix), residuals, and the gated MLP's gate/up/act/product/down input."""
        return 2 * (
            8 * self.hidden + self.q_dim + 2 * self.kv_dim + 5 * self.intermediate * max(self.active_experts, 1)
        )

    @classmethod
    def from_config(cls, c: dict) -> Architecture:
        experts = c.get("num_experts") or c.get("num_local_experts") or 0  # the Hub's configs; transformers 5 saves
        return cls(
            layers=c["num_hidden_layers"],
            hidden=c["hidden_size"],
            intermediate=c["moe_intermediate_size"] if experts else c["intermediate_size"],
            heads=c["num_attention_heads"],
            kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
            head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
            vocab=c["vocab_size"],
            tied=c.get("tie_word_embeddings", False),
            experts=experts,
            active_experts=c.get("num_experts_per_tok", 0) if experts else 0,
        )


def _qwen3(layers, hidden, intermediate, heads, kv_heads, vocab, tied, experts=0, active=0) -> Architecture:
    return Architecture(layers, hidden, intermediate, heads, kv_heads, 128, vocab, tied, experts, active)


#: Shapes of the models the shipped recipes and anchors name (from their config.json), so that
#: `plan` works without a Hub connection. Other models are read from a local config.json or the Hub.
KNOWN = {
    "Qwen/Qwen3-8B": _qwen3(36, 4096, 12288, 32, 8, 151936, False),
    "Qwen/Qwen2.5-7B-Instruct": _qwen3(28, 3584, 18944, 28, 4, 152064, False),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": _qwen3(48, 2048, 768, 32, 4, 151936, False, experts=128, active=8),
    "Qwen/Qwen3-Embedding-0.6B": _qwen3(28, 1024, 3072, 16, 8, 151669, True),
    "Qwen/Qwen3-Embedding-4B": _qwen3(36, 2560, 9728, 32, 8, 151665, True),
    "Qwen/Qwen3-Embedding-8B": _qwen3(36, 4096, 12288, 32, 8, 151665, False),
    "meta-llama/Llama-3.1-8B-Instruct": _qwen3(32, 4096, 14336, 32, 8, 128256, False),
    # The random Qwen3 that bench/gpu_peak.py builds (0.24B parameters).
    "bench/gpu_peak.py:qwen3": Architecture(16, 1024, 3072, 16, 8, 64, 32000, True),
}
# All of these have MiniLM's order of size or less: 22.7M parameters, 0.1 GB in float32.
SMALL_EMBEDDER_GIB = 0.1


def architecture(name_or_path: str) -> Architecture:
    """Shapes of a model: the table above, a local folder's config.json, or the Hub's."""
    for known, arch in KNOWN.items():
        if name_or_path.rstrip("/").endswith(known) or name_or_path.startswith(known + "-"):
            return arch
    from rwml_lite.sources import checkpoint_folder

    local = Path(checkpoint_folder(name_or_path))  # a GGUF file is converted (once) to read its config
    config = local / "config.json" if local.is_dir() else None
    if config is None or not config.exists():
        try:
            from huggingface_hub import hf_hub_download

            config = Path(hf_hub_download(name_or_path, "config.json"))
        except Exception as e:  # offline, gated, or not a Hub id: all end the same way for the user
            raise RwmlError(
                f"`plan` needs the shapes of `{name_or_path}` (model.name_or_path) and could not read its config.json "
                f"({type(e).__name__}). Use a local checkpoint folder, or run once where the Hub is reachable."
            ) from None
    data = json.loads(config.read_text())
    return Architecture.from_config(data.get("text_config", data))
