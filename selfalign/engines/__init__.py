"""Generation backends behind one interface (see base.py). Heavy imports happen on first use."""

from selfalign.engines.base import Engine, GenerationRequest, GenerationResult

__all__ = ["Engine", "GenerationRequest", "GenerationResult"]
