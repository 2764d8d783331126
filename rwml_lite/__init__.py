"""rwml-lite: Reinforcement World Model Learning for LLM agents on one GPU."""

__version__ = "0.1.0"
