"""A scripted stand-in for Fathom-Synthesizer-4B (a 4B model cannot run in the test suite).

It answers the two completions of the unguided protocol the way the real model does: the plan up
to ``</think>``, then the report up to end of turn. The report is realistic: the full layout,
a table, valid citations, plus the mistakes real models make (an invented URL, a citation with a
changed trailing slash, a Sources list with duplicates and the invented URL).
"""

from __future__ import annotations

from fathom.models.base import ChatMessage, Completion, SamplingParams, Usage
from fathom.models.chatml import render_chatml

from .traces import ARIANE, ESA, L2, NASA, SMACS, STSCI, WIKI

INVENTED = "https://www.space-rumours.example.com/webb-delay"

PLAN = f"""Sub-questions:
1. When, where and on what rocket did Webb launch?
2. How did the deployment to L2 proceed?
3. What did the first images show?

Evidence map:
| Section | Item | Content | Confidence |
| --- | --- | --- | --- |
| S1 | {WIKI} | 25 December 2021, Ariane 5, Kourou | high |
| S1 | {ARIANE} | flight VA256 | medium |
| S1 | {ESA} | precise launch saved fuel | high |
| S2 | {L2} | L2 is 1.5 million km away | medium |
| S2 | {WIKI} | 18 segments, 6.5 m mirror, five-layer sunshield | high |
| S3 | {STSCI} | SMACS 0723 deep field, 4.6 billion years ago | high |
| S3 | {SMACS} | cluster in Volans | low |
| - | {NASA} | NASA leads with ESA and CSA | medium |

Insight strategies:
1. Compare launch precision with fuel lifetime.
2. Contrast the mirror size with earlier telescopes.
3. Explain why L2 matters for an infrared observatory.
4. Tie the deep field's look-back time to Webb's science goals.
"""

REPORT = f"""# How the James Webb Space Telescope Reached Space and What It First Saw

## Executive Summary

- Webb launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana. [{WIKI}]
- The launch was flown as Ariane 5 flight VA256, one of the rocket's final missions. [{ARIANE}]
- The precise launch saved fuel, extending Webb's expected life well beyond ten years. [{ESA}]
- Webb arrived at the Sun-Earth L2 point in January 2022. [{WIKI}]
- Its first deep field showed thousands of galaxies in galaxy cluster SMACS 0723. [{STSCI}]
- Launch was postponed by a further month because of a fuel leak. [{INVENTED}]

## S1. Launch

The James Webb Space Telescope is an international programme led by NASA with ESA and the \
Canadian Space Agency. [{NASA.rstrip('/')}] It lifted off on 25 December 2021 aboard an Ariane 5 \
from Kourou, French Guiana. [{WIKI}] Europe provided the launch service and the NIRSpec \
instrument. [{ESA}] Ariane 5 was a heavy-lift vehicle that has since been retired. [{ARIANE}]
The trajectory was so accurate that less propellant was needed for course corrections.

## S2. Deployment

| Component | Figure |
| --- | --- |
| Primary mirror diameter | 6.5 m |
| Mirror segments | 18 |
| Sunshield layers | 5 |

The primary mirror is made of 18 hexagonal gold-plated beryllium segments that together span \
6.5 metres. [{WIKI}] The five-layer sunshield is about the size of a tennis court. [{WIKI}] The \
observatory settled at the Sun-Earth L2 point, about 1.5 million kilometres from Earth. [{L2}]

## S3. First images

On 12 July 2022 NASA released the first deep field, the deepest and sharpest infrared image of \
the distant universe to date. [{STSCI}] It shows the galaxy cluster SMACS 0723 as it appeared \
4.6 billion years ago. [{STSCI}] The cluster lies in the southern constellation Volans. [{SMACS}]

## Recommendations

1. Readers comparing observatories should weigh Webb's fuel margin, which stems from the launch \
accuracy. [{ESA}]
2. Follow the official release pages for calibrated data products. [{STSCI}]

## Conclusion

Webb reached space on an Ariane 5 on Christmas Day 2021. [{WIKI}] It unfolded its mirror and \
sunshield on the way to L2. [{WIKI}] Its first deep field looked back 4.6 billion years. [{STSCI}]

## Sources used

- {WIKI}
- {ARIANE}
- {WIKI}
- {INVENTED}
"""


class ScriptedSynthesizerModel:
    name = "scripted-synthesizer"

    def __init__(self, skip_plan: bool = False, report: str = REPORT) -> None:
        self.prompts: list[tuple[str, SamplingParams]] = []
        self.skip_plan = skip_plan  # behave like a model that closes its think at once and ends the turn
        self.report = report

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        self.prompts.append((prompt, params))
        if self.skip_plan:
            text, stop = "</think>\n" + self.report, "<|im_end|>"
        elif "</think>" in params.stop:
            text, stop = PLAN, "</think>"
        else:
            text, stop = "\n" + self.report, "<|im_end|>"
        return Completion(text=text, finish_reason="stop", stop=stop, model=self.name,
                          usage=Usage(self.count_tokens(prompt), self.count_tokens(text)))

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return [await self.complete(p, params) for p in prompts]

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        return await self.complete(self.render_chat(messages), params)

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        return render_chatml(messages, add_generation_prompt)

    async def aclose(self) -> None:
        return None
