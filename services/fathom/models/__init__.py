"""Model backends: one async seam (``ModelBackend``) for policy, synthesizer, extractor and judge."""

from fathom.models.base import Completion, ModelBackend, SamplingParams, Usage

__all__ = ["Completion", "ModelBackend", "SamplingParams", "Usage"]
