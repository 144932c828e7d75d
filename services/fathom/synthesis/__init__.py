"""The synthesizer (Fathom-Synthesizer-4B protocol): a search trace in, a checked cited report out."""

from fathom.synthesis.citations import CitationCheck, check_citations
from fathom.synthesis.guided import GuidedConfig
from fathom.synthesis.protocol import citable_urls, parse_output, reformat_trace
from fathom.synthesis.report import Report, ReportSection
from fathom.synthesis.synthesizer import ProgressCallback, Synthesizer
from fathom.synthesis.writer import write_report

__all__ = [
    "CitationCheck",
    "GuidedConfig",
    "ProgressCallback",
    "Report",
    "ReportSection",
    "Synthesizer",
    "check_citations",
    "citable_urls",
    "parse_output",
    "reformat_trace",
    "write_report",
]
