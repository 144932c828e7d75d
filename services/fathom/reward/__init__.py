"""Rewards for RAPO: answer matching, the format reward, the stage-1 and stage-2 formulas.

The judge (``reward.judge``), the step labeller (``reward.labels``) and the scorer that joins them
(``reward.service``) are imported from their modules; this face holds the pure parts only.
"""

from fathom.reward.answers import exact_match, normalize_answer, token_f1
from fathom.reward.formulas import (
    STEP_LABELS,
    VERDICTS,
    FormatReport,
    LabelledCall,
    RewardBreakdown,
    StepLabel,
    Verdict,
    format_checks,
    format_reward,
    stage1_reward,
    stage2_bounds,
    stage2_reward,
)

__all__ = [
    "STEP_LABELS", "VERDICTS", "FormatReport", "LabelledCall", "RewardBreakdown", "StepLabel", "Verdict",
    "exact_match", "format_checks", "format_reward", "normalize_answer", "stage1_reward", "stage2_bounds",
    "stage2_reward", "token_f1",
]
