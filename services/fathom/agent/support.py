"""What the pages read so far say about the question: the pure reading behind the guided policy.

From a trajectory's tool responses (search results, and the verified quotes of page reads) it
derives the candidate answers (names, dates and numbers that are spans of a verified quote, so
grounded by construction), how well each is supported, and the entities worth a follow-up search.

Support, in short: the question's content words (stemmed) must be covered by the quote holding the
candidate together with the pages linked to it (one names what the other is about, or both name
the entity a follow-up search looked up: the chain of a multi-hop question); the quote itself must
hold the question's *focus* (the relation asked about: "who *directed* the film that ...") and,
for "which sea"-style questions, the kind asked for. The words are matched crudely (stopwords
out, five-letter stems), which is enough to rank a few quotes and cheap enough for every turn.
Pure functions, no I/O: read top to bottom.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fathom.agent.trajectory import Trajectory
from fathom.tools.extract.render import query_url_quotes
from fathom.tools.search.base import parse_results

AnswerKind = Literal["year", "number", "name", "any"]

PROTOCOL_TAG = re.compile(r"</?(?:think|tool_call|tool_response|tools)>|<\|im_(?:start|end)\|>|\\boxed")
_MD_LINK_URL = re.compile(r"\]\((https?://[^\s)]+)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\"')\]]+")


# --- what the trajectory holds, as the policy reads it (pure) --------------------------------


@dataclass(frozen=True)
class Hit:
    title: str
    url: str


@dataclass(frozen=True)
class SearchRound:
    query: str
    hits: tuple[Hit, ...]


@dataclass(frozen=True)
class PageRead:
    url: str
    title: str  # as the search result named it ("" when the URL came from elsewhere)
    quotes: tuple[str, ...]  # the verified quotes of the tool response
    query: str = ""  # the search whose results offered it (the latest before the read)


def parse_hits(result: str) -> list[Hit]:
    """The results of a ``search_urls`` response, in rank order."""
    hits = [Hit(title, url) for title, url in parse_results(result)]
    if hits:
        return hits
    # Another result layout: keep the URLs at least.
    found = _MD_LINK_URL.findall(result) or _BARE_URL.findall(result)
    return [Hit("", u.rstrip(".,;")) for u in dict.fromkeys(found)]


verified_quotes = query_url_quotes  # the tool keeps only spans found verbatim in the page


def search_rounds(traj: Trajectory) -> list[SearchRound]:
    return [SearchRound(str(c.arguments.get("query", "")), tuple(parse_hits(c.result or "")))
            for c in traj.tool_calls if c.name == "search_urls" and c.ok]


def urls_seen(traj: Trajectory) -> list[str]:
    """URLs offered by earlier search results, in order of first appearance."""
    seen: dict[str, None] = {}
    for r in search_rounds(traj):
        for h in r.hits:
            seen.setdefault(h.url, None)
    return list(seen)


def urls_read(traj: Trajectory) -> set[str]:
    """Pages the policy asked for, read or not: a page that failed once is not asked for again."""
    return {str(c.arguments.get("url")) for c in traj.tool_calls if c.name == "query_url" and not c.error}


def pages_read(traj: Trajectory) -> list[PageRead]:
    pages: list[PageRead] = []
    offered: dict[str, tuple[str, str]] = {}  # url -> (title, query) of the latest search offering it
    for c in traj.tool_calls:
        if c.name == "search_urls" and c.ok:
            query = str(c.arguments.get("query", ""))
            offered.update({h.url: (h.title, query) for h in parse_hits(c.result or "")})
        elif c.name == "query_url" and c.ok and c.result:
            url = str(c.arguments.get("url", ""))
            title, query = offered.get(url, ("", ""))
            pages.append(PageRead(url, title, tuple(verified_quotes(c.result)), query))
    return pages


def reads_since_last_search(traj: Trajectory) -> int:
    n = 0
    for c in traj.tool_calls:
        if c.name == "search_urls" and c.ok:
            n = 0
        elif c.name == "query_url" and not c.error:
            n += 1
    return n


# --- words of the question -------------------------------------------------------------------

_STOPWORD_TEXT = """
    a an the and or but if of to in on at by for with from as is are was were be been being this that
    these those it its into about over under than then there their they them he she his her him we you
    our what which who whom whose when where why how do does did done not no yes can could would should
    through
    will shall may might must have has had i me my also such other any all some more most both either
    one ones same name named called known type kind part
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def stem(word: str) -> str:
    """A plural's "s" off, then truncation to five letters: crude, but it matches flow/flows,
    border/bordered and publish/published without a dictionary."""
    word = word.lower()
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:5]


def terms(text: str) -> set[str]:
    """Content words of ``text``, stemmed, without stopwords."""
    return {stem(w) for w in _WORD.findall(text) if _is_content(w)}


def _is_content(word: str) -> bool:
    return word.lower() not in _STOPWORDS and (len(word) > 1 or word.isdigit())


_CLAUSE_BREAK = re.compile(
    r",|;|\b(?:that|which|whose|whom|where|in which|of which|who|when)\b", re.IGNORECASE)
_WH = re.compile(r"\b(?:who|whom|whose|what|which|where|when|how)\b", re.IGNORECASE)
_LEAD = re.compile(r"^\W*(?:(?:in|at|on|for|from|by|of|to|with|during|since|and|but)\s+)?$", re.IGNORECASE)


def question_word(question: str) -> re.Match[str] | None:
    """The interrogative word: one that opens the question or a comma clause ("In what film ...",
    "At the 2011 census, what was ..."), else the last one ("... which was written by *who*?"),
    since a "which" or "who" inside a sentence usually opens a relative clause."""
    found = list(_WH.finditer(question))
    for m in found:
        lead = question[: m.start()].rsplit(",", 1)[-1]
        if _LEAD.match(lead):
            return m
    return found[-1] if found else None


def _question_clause(question: str) -> str:
    """The clause holding the interrogative word, between the clause breaks around it."""
    wh = question_word(question)
    if wh is None:
        return question
    before = [m.end() for m in _CLAUSE_BREAK.finditer(question, 0, wh.start())]
    after = _CLAUSE_BREAK.search(question, wh.end())
    return question[before[-1] if before else 0 : after.start() if after else len(question)]


def focus_terms(question: str) -> set[str]:
    """Content words of the clause that holds the question word: the relation asked about
    ("Who *directed* the film that was shot in Leland" asks about directing, not Leland)."""
    return terms(_question_clause(question)) or terms(question)


_KIND_PATTERNS: tuple[tuple[AnswerKind, re.Pattern[str]], ...] = (
    ("year", re.compile(r"^\W*(?:when|(?:what|which) (?:year|date|decade|century)|since when|how long ago)\b",
                        re.IGNORECASE)),
    ("number", re.compile(r"^\W*(?:how (?:many|much|long|old|tall|high|far|large|big|deep)|"
                          r"what (?:percentage|percent|number|amount|population|size))\b", re.IGNORECASE)),
    ("name", re.compile(r"^\W*(?:who|whom|whose|where)\b", re.IGNORECASE)),
)


def answer_kind(question: str) -> AnswerKind:
    """What shape of answer the question asks for, read from its question word on ("Who was
    president when ..." asks for a name, not a date; "... formed in what year?" for a year)."""
    wh = question_word(question)
    if wh is None:
        return "any"
    asked = question[wh.start():]
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(asked):
            return kind
    if re.search(r"\bpopulation\b", _question_clause(question), re.IGNORECASE):
        return "number"
    return "any"


def category_term(question: str) -> str | None:
    """The noun a "what/which" question names as the answer's kind ("Which *sea* ...",
    "What kind of *plane* ..."), stemmed; None for other questions."""
    wh = question_word(question)
    if wh is None or answer_kind(question) != "any" or wh.group().lower() not in ("what", "which"):
        return None
    rest = question[wh.end():].split("?")[0]
    following = terms(rest)
    return next((stem(w) for w in _WORD.findall(rest) if stem(w) in following), None)


# --- spans of a quote: names, dates, numbers --------------------------------------------------

_TOKEN = re.compile(r"[^\W_][\w'’.\-]*|&", re.UNICODE)
# Small words that may sit inside a name ("Duke of York", "Ludwig van Beethoven").
_CONNECTOR_TEXT = "of the de da di du des del della von van der den la le y & for upon bin al"
_CONNECTORS = frozenset(_CONNECTOR_TEXT.split())
# Capitalised words that open sentences rather than names.
_OPENER_TEXT = """
    the a an in on at by for from with as after before during when while since until he she it they we
    his her its their this that these those there however although though also then thus but and or
    if so not no yes one some many most all each both who what which where why how later once today
    currently originally formerly following despite according because unlike like among between
    either neither other such another every several our your my its
"""
_OPENERS = frozenset(_OPENER_TEXT.split())
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_DATE = re.compile(
    rf"\b(?:\d{{1,2}}\s+(?:{_MONTHS})\.?,?\s+\d{{3,4}}|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{3,4}}"
    rf"|(?:{_MONTHS})\s+\d{{4}})\b|(?<![\w.,])\d{{3,4}}s?(?!\w|[.,]\d)")
_NUMBER = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?!\w)"
    r"(?:\s+(?:million|billion|trillion|thousand|hundred|percent|per cent))?%?")
_MAX_ANSWER_WORDS = 10
_MAX_ANSWER_CHARS = 80


@dataclass(frozen=True)
class Span:
    text: str  # verbatim, a substring of the quote
    start: int  # character offset in the quote
    kind: Literal["name", "number", "date"]


def quote_spans(quote: str) -> list[Span]:
    """Dates, numbers and names (runs of capitalised words) in a quote, as verbatim spans."""
    spans = [Span(m.group(), m.start(), "date") for m in _DATE.finditer(quote)]
    taken = [(sp.start, sp.start + len(sp.text)) for sp in spans]
    for m in _NUMBER.finditer(quote):
        text = m.group().rstrip(",.")
        if text and not any(a <= m.start() < b for a, b in taken):
            spans.append(Span(text, m.start(), "number"))
    return spans + _name_spans(quote, taken)


def _name_spans(quote: str, dates: list[tuple[int, int]]) -> list[Span]:
    tokens = list(_TOKEN.finditer(quote))
    spans: list[Span] = []
    i = 0
    while i < len(tokens):
        if not _capitalised(tokens[i].group()):
            i += 1
            continue
        j = _name_end(quote, tokens, i)
        words = tokens[i : j + 1]
        while words and words[0].group().lower() in _OPENERS:
            words = words[1:]
        while words and words[-1].group().lower() in _CONNECTORS:
            words = words[:-1]
        texts = [w.group() for w in words]
        half = len(texts) // 2
        if half and texts[:half] == texts[half:]:
            words = words[:half]  # a title run into its first sentence ("Acme Co Acme Co is ...")
        # A month opens a date, found already.
        if words and not any(a <= words[0].start() < b for a, b in dates):
            start, end = words[0].start(), words[-1].end()
            text = re.sub(r"['’]s$", "", quote[start:end]).rstrip(".,;:")
            if any(c.isalpha() for c in text):
                spans.append(Span(text, start, "name"))
        i = j + 1
    return spans


def _name_end(quote: str, tokens: list[re.Match[str]], i: int) -> int:
    """Index of the last token of the name that starts at token ``i``."""
    j = i
    while j + 1 < len(tokens):
        nxt = tokens[j + 1].group()
        if _breaks(quote, tokens[j].end(), tokens[j + 1].start()):
            break
        if _capitalised(nxt) or (nxt[0].isdigit() and _capitalised(tokens[j].group())):
            j += 1
            continue
        # One or two small words between capitalised ones ("Duke of York", "Society for the
        # Exploration of ...") stay inside the name.
        k = j + 1
        while k < len(tokens) and k - j <= 2 and tokens[k].group().lower() in _CONNECTORS:
            k += 1
        if (k > j + 1 and k < len(tokens) and _capitalised(tokens[k].group())
                and not _breaks(quote, tokens[j].end(), tokens[k].start())):
            j = k
            continue
        break
    return j


def _capitalised(token: str) -> bool:
    return token[0].isupper()


def _breaks(text: str, end: int, start: int) -> bool:
    """Punctuation between two tokens that ends a name (a comma, a bracket, a full stop...)."""
    gap = text[end:start]
    return any(c in gap for c in ",;:()[]\"“”") or (text[end - 1] == "." and len(text[:end].split()[-1]) > 3)


# --- answers: junk, candidates, support ------------------------------------------------------

_PLACEHOLDERS = re.compile(
    r"^(?:none|n/?a|null|unknown|not (?:found|known|given|stated|available)|no (?:answer|evidence|"
    r"information|relevant\b.*)|none found.*|\(none given\)|nothing|tbd|\.\.\.|-+)\.?$", re.IGNORECASE)
_TEMPLATE_ECHO = re.compile(
    r"\bpage\s*\d+\s*:|\b(?:rationale|evidence|summary|goal|question|answer)\s*:|\bthe page\b|"
    r"\bthe (?:goal|question|evidence)\b|https?:|www\.|://", re.IGNORECASE)


def junk_reason(answer: str, question: str) -> str | None:
    """Why ``answer`` is not an answer at all, or None when it may be one.

    Weak models echo their context: "Page 1: ...", the question, a URL, a template label, a
    placeholder such as "None found on the page.", or a whole paragraph."""
    text = " ".join(answer.split())
    if not text or not any(c.isalnum() for c in text):
        return "empty"
    if len(text) > _MAX_ANSWER_CHARS or len(text.split()) > _MAX_ANSWER_WORDS:
        return "too long"
    if _PLACEHOLDERS.match(text):
        return "a placeholder"
    if _TEMPLATE_ECHO.search(text) or PROTOCOL_TAG.search(text) or "{" in text or "}" in text:
        return "an echo of the prompt, a URL or markup"
    own = terms(text)
    if not own or own <= terms(question):
        return "an echo of the question"
    return None


@dataclass(frozen=True)
class Candidate:
    """A possible answer: a span of a verified quote, with how well the pages read support it."""

    text: str
    quote: str
    url: str
    coverage: float  # share of the question's words covered by the quote and the pages linked to it
    resolves: int  # question words this quote covers that its linked pages do not
    focus: float  # share of the question's focus words (its relation) that the quote itself holds
    distance: int  # characters from the span to the nearest focus word of the quote (0: inside it)
    order: int  # position of the page among the reads (earlier first)
    of_kind: bool = True  # the quote or span names the kind asked for ("Which *sea*")

    def supported(self, threshold: float) -> bool:
        return self.coverage >= threshold and self.resolves >= 1 and self.focus >= 0.5 and self.of_kind

    def rank_key(self) -> tuple[bool, float, float, int, int]:
        return (self.focus < 0.5 or not self.of_kind, -self.coverage, -self.focus, self.distance, self.order)


def norm(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: for comparing names and queries."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _mentions(haystack_norm: str, needle: str) -> bool:
    """Whether normalised text contains ``needle`` as whole words."""
    n = norm(needle)
    return bool(n) and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", haystack_norm) is not None


def _bare_title(title: str) -> str:
    return re.sub(r"\s*\([^)]*\)\s*$", "", title).strip()


@dataclass(frozen=True)
class _Page:
    """A page read, prepared for linking: its words, its subject and the names it holds."""

    read: PageRead
    order: int
    words: frozenset[str]  # content words of quotes and title
    text_norm: str  # quotes and title, normalised, for "does it mention X"
    subject: str  # normalised: the title, or the first name of its first quote
    names: tuple[str, ...]  # normalised names in its quotes
    entities: tuple[str, ...]  # those of the names that the question does not name


def _prepare(pages: Sequence[PageRead], question_terms: set[str]) -> list[_Page]:
    prepared: list[_Page] = []
    for i, p in enumerate(pages):
        title = _bare_title(p.title)
        found = [s.text for q in p.quotes for s in quote_spans(q) if s.kind == "name"]
        subject = title or (found[0] if found else "")
        names = tuple(dict.fromkeys(norm(n) for n in found))
        entities = tuple(dict.fromkeys(norm(n) for n in found if not terms(n) <= question_terms))
        body = " ".join((*p.quotes, title))
        prepared.append(_Page(p, i, frozenset(terms(body)), norm(body), norm(subject), names, entities))
    return prepared


def _links(page: _Page, others: Sequence[_Page], question: str) -> list[tuple[_Page, str]]:
    """Pages a chain passes through with ``page``, and the name linking them: one page names the
    subject of the other (the first hop names what the second is about, even when the question
    names it too), or both name an entity that a follow-up search looked up. A name both merely
    mention in passing ("United States") is no link."""
    q_norm = norm(question)
    found: list[tuple[_Page, str]] = []
    for other in others:
        if other is page:
            continue
        subject_link = next((n for a, b in ((page, other), (other, page)) for n in a.names
                             if _same_entity(n, b.subject)), None)
        if subject_link is not None:
            found.append((other, subject_link))
            continue
        looked_up = " ".join(norm(p.read.query) for p in (page, other) if norm(p.read.query) != q_norm)
        shared = next((e for e in page.entities if _mentions(other.text_norm, e) and _mentions(looked_up, e)),
                      None)
        if shared is not None:
            found.append((other, shared))
    return found


def _same_entity(name: str, subject: str) -> bool:
    """"McDowell County" names the page "McDowell County, West Virginia"."""
    return bool(name) and bool(subject) and (
        subject == name or subject.startswith(name + " ") or name.startswith(subject + " "))


_DEMONYM = re.compile(r"^[A-Z][\w\-]*(?:ian|ean|ese|ish|ican)$")


def _is_adjective(span: Span, quote: str) -> bool:
    """A nationality word used before a noun ("French-Canadian author"): not a who or where."""
    after = quote[span.start + len(span.text):].lstrip()
    return _DEMONYM.match(span.text) is not None and after[:1].islower()


def _kind_fits(span: Span, kind: AnswerKind) -> bool:
    if kind == "year":
        bare_year = span.kind == "number" and re.fullmatch(r"\d{3,4}s?", span.text) is not None
        return span.kind == "date" or bare_year
    if kind == "number":
        return span.kind in ("number", "date") and span.text[:1].isdigit()
    if kind == "name":
        return span.kind == "name"
    # "What ..." may ask for a name or a quantity; a lone small number is rarely either.
    return span.kind != "number" or len(re.sub(r"\D", "", span.text)) >= 2


def answer_candidates(question: str, pages: Sequence[PageRead]) -> list[Candidate]:
    """Every fitting span of every verified quote, best supported first."""
    q_terms = terms(question)
    if not q_terms:
        return []
    kind = answer_kind(question)
    focus = focus_terms(question) & q_terms or q_terms
    category = category_term(question)
    prepared = _prepare(pages, q_terms)
    # Entities looked up by follow-up searches (each such query starts with its entity) were
    # steps of the chain, not its end.
    looked_up = {norm(p.query) for p in pages if p.query and norm(p.query) != norm(question)}
    best: dict[str, Candidate] = {}
    for page in prepared:
        links = _links(page, prepared, question)
        title_terms = terms(_bare_title(page.read.title))
        for quote in page.read.quotes:
            quote_terms = terms(quote) | title_terms
            for span in quote_spans(quote):
                if not _kind_fits(span, kind) or junk_reason(span.text, question):
                    continue
                if kind == "name" and _is_adjective(span, quote):
                    continue
                if any(q == norm(span.text) or q.startswith(norm(span.text) + " ") for q in looked_up):
                    continue
                own = quote_terms & q_terms
                if not own:
                    continue  # the quote says nothing about the question
                coverage, resolves = len(own), len(own)
                for other, bridge in links:
                    # The entity that links two pages is how the chain was followed, not its end.
                    if bridge in norm(span.text) or norm(span.text) in bridge:
                        continue
                    chained = own | (other.words & q_terms)
                    new = len(own - other.words)
                    if len(chained) > coverage or (len(chained) == coverage and new > resolves):
                        coverage, resolves = len(chained), new
                cand = Candidate(span.text, quote, page.read.url, coverage / len(q_terms), resolves,
                                 len(quote_terms & focus) / len(focus), _distance(quote, span, focus),
                                 page.order, category is None or category in quote_terms)
                key = norm(span.text)
                if key not in best or cand.rank_key() < best[key].rank_key():
                    best[key] = cand
    return sorted(best.values(), key=Candidate.rank_key)


def _distance(quote: str, span: Span, focus: set[str]) -> int:
    if terms(span.text) & focus:
        return 0
    positions = [m.start() for m in _WORD.finditer(quote) if stem(m.group()) in focus]
    if not positions:
        return len(quote)
    return min(abs(p - span.start) for p in positions)


# --- follow-up searches ----------------------------------------------------------------------


def bridge_entities(question: str, pages: Sequence[PageRead], tried: Sequence[str]) -> list[str]:
    """Names met in the quotes that the question does not name, worth a search of their own:
    those in the quotes that cover most of the question first, then those nearest the question's
    words. Names of pages already read and names already searched for are left out."""
    q_terms = terms(question)
    read_titles = {norm(_bare_title(p.title)) for p in pages if p.title}
    tried_norm = [norm(t) for t in tried]
    scored: dict[str, tuple[int, int, int]] = {}
    for order, p in enumerate(pages):
        for quote in p.quotes:
            overlap = len(terms(quote) & q_terms)
            for span in quote_spans(quote):
                if span.kind != "name" or terms(span.text) <= q_terms or junk_reason(span.text, question):
                    continue
                key = norm(span.text)
                if key in read_titles or any(t == key or t.startswith(key + " ") for t in tried_norm):
                    continue
                rank = (-overlap, _distance(quote, span, q_terms), order)
                if span.text not in scored or rank < scored[span.text]:
                    scored[span.text] = rank
    return sorted(scored, key=lambda e: scored[e])


def follow_up_query(entity: str, question: str, pages: Sequence[PageRead], max_words: int = 8) -> str:
    """The entity, then the words of the question that the quote naming it does not cover: the
    part of the question the entity's own page should answer."""
    found_in = next((q for p in pages for q in p.quotes if entity in q), "")
    covered = terms(found_in) | terms(entity)
    rest = [w for w in _WORD.findall(question) if _is_content(w) and stem(w) not in covered]
    return " ".join([entity, *list(dict.fromkeys(rest))[:max_words]]).strip()
