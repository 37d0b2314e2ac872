"""Aligner-style correction: a learned corrector that rewrites an answer into a better one.

Built in steps. This package holds what needs no model: the training triples a corrector learns from,
made from what a run already stores. Training the corrector, the correct stage and serving it in front of
another model come next.
"""
