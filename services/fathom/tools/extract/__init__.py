"""Goal-conditioned evidence extraction for ``query_url``: page text + goal -> Rationale / Evidence / Summary.

Public face: ``EvidenceExtractor``, ``Evidence``, ``ExtractionCache``, ``format_query_url_result``.
"""

from fathom.tools.extract.answer import ParsedAnswer, assemble_answer, parse_answer
from fathom.tools.extract.cache import ExtractionCache
from fathom.tools.extract.evidence import Evidence, EvidenceSource, ExtractMethod
from fathom.tools.extract.extractor import EvidenceExtractor
from fathom.tools.extract.render import format_query_url_result
from fathom.tools.extract.verify import QuoteCheck, check_quotes, relevant_sentences

__all__ = [
    "Evidence",
    "EvidenceExtractor",
    "EvidenceSource",
    "ExtractMethod",
    "ExtractionCache",
    "ParsedAnswer",
    "QuoteCheck",
    "assemble_answer",
    "check_quotes",
    "format_query_url_result",
    "parse_answer",
    "relevant_sentences",
]
