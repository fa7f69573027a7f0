"""The toy world: a character tokenizer, synthetic tasks, and tiny teacher / student models.

May import: distill.errors, distill.experts; nothing else of distill."""

from distill.toy.models import resolve_model

__all__ = ["resolve_model"]
