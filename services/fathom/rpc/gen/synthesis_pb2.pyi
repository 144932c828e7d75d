from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SynthesizeRequest(_message.Message):
    __slots__ = ("job_id", "deadline_s")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    deadline_s: float
    def __init__(self, job_id: _Optional[str] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class SectionStats(_message.Message):
    __slots__ = ("heading", "sentences", "cited_sentences", "citations")
    HEADING_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    CITED_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    heading: str
    sentences: int
    cited_sentences: int
    citations: int
    def __init__(self, heading: _Optional[str] = ..., sentences: _Optional[int] = ..., cited_sentences: _Optional[int] = ..., citations: _Optional[int] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("job_id", "markdown", "plan", "sources", "valid_citations", "invalid_citations_removed", "words", "sections", "report_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    VALID_CITATIONS_FIELD_NUMBER: _ClassVar[int]
    INVALID_CITATIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    markdown: str
    plan: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    valid_citations: int
    invalid_citations_removed: int
    words: int
    sections: _containers.RepeatedCompositeFieldContainer[SectionStats]
    report_id: str
    def __init__(self, job_id: _Optional[str] = ..., markdown: _Optional[str] = ..., plan: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., valid_citations: _Optional[int] = ..., invalid_citations_removed: _Optional[int] = ..., words: _Optional[int] = ..., sections: _Optional[_Iterable[_Union[SectionStats, _Mapping]]] = ..., report_id: _Optional[str] = ...) -> None: ...
