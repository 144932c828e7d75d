"""How text becomes index terms, shared by the index builder and the searcher.

Tantivy does not store custom analyzers in the index, so whoever opens an index must register the
same analyzer under the same name; keeping both in one place is what makes that safe.
"""

from __future__ import annotations

import tantivy

ANALYZER_NAME = "fathom_en"
# Bump when the analyzer changes: an index built with another version must be rebuilt.
ANALYZER_VERSION = 1

# Words that carry no topic in a search query. Only queries drop them; the index keeps every
# word, so phrase-like matches on titles ("The Who") still work through the title field.
_STOPWORD_TEXT = """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was we were what when
    where which while who whom whose why will with would you your yours yourself yourselves
    name named one ones many much"""
QUERY_STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())


def build_analyzer() -> tantivy.TextAnalyzer:
    # Unicode-aware word split, ASCII folding (Zürich == Zurich) and English Snowball stemming.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def register_analyzer(index: tantivy.Index) -> None:
    index.register_tokenizer(ANALYZER_NAME, build_analyzer())


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("title", stored=True, tokenizer_name=ANALYZER_NAME)
    builder.add_text_field("text", stored=True, tokenizer_name=ANALYZER_NAME)
    builder.add_text_field("url", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("source", stored=True, tokenizer_name="raw", index_option="basic")
    return builder.build()


class QueryAnalyzer:
    """Turns free user text into index terms. Never parses query syntax, so no input can raise."""

    def __init__(self) -> None:
        self._analyzer = build_analyzer()
        self._stems_of_stopwords = (
            frozenset(t for w in QUERY_STOPWORDS for t in self._analyzer.analyze(w)) | QUERY_STOPWORDS
        )

    def content_tokens(self, text: str) -> list[str]:
        """Every non-stopword token of a text, repeats kept (for term statistics)."""
        return [t for t in self._analyzer.analyze(text) if t not in self._stems_of_stopwords]

    def terms(self, query: str) -> list[str]:
        """Distinct content terms in query order; all terms if every one is a stopword."""
        tokens = self._analyzer.analyze(query)
        seen: dict[str, None] = {}
        for tok in tokens:
            if tok not in self._stems_of_stopwords:
                seen.setdefault(tok, None)
        if not seen:
            for tok in tokens:
                seen.setdefault(tok, None)
        return list(seen)
