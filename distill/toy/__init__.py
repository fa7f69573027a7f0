"""The toy world: a character tokenizer, synthetic tasks, and tiny teacher / student models."""

from distill.toy.models import resolve_model

__all__ = ["resolve_model"]
