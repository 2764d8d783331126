"""The world model's rewards: how close a predicted next state lands to the real one.

embedding.py  the embedder and NextStateReward (binary at tau_d, or continuous cosine), the paper's reward
rouge.py      rounded ROUGE-L, for the targets an embedding blurs (tau2's tool replies)
judge.py      an LLM judge's binary or continuous score (the paper's ablation, Table 4)
"""

from rwml_lite.reward.embedding import Embedder, NextStateReward
from rwml_lite.reward.rouge import rouge_l_f1, rounded_rouge

__all__ = ["Embedder", "NextStateReward", "rouge_l_f1", "rounded_rouge"]
