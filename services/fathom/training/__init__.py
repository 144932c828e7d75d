"""RAPO training (FATHOM.md, "RAPO"): the pure pieces of the objective in ``rapo``, the token-exact
rollouts in ``rollouts``, and the TRL-based trainer around them (docs/TRAINING.md).

Kept import-free on purpose: ``fathom.training.rapo`` needs only torch, and importing the package
must not pull in the trainer, TRL or a model.
"""
