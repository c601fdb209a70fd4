"""tiered_slm: the local tier's llama.cpp server (OpenAI-compatible, measured, drain-safe)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
