from fathom.rpc.gen import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SEARCH: _ClassVar[Mode]
    MODE_REPORT: _ClassVar[Mode]

class Lane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANE_UNSPECIFIED: _ClassVar[Lane]
    LANE_INTERACTIVE: _ClassVar[Lane]
    LANE_TRAINING: _ClassVar[Lane]
MODE_UNSPECIFIED: Mode
MODE_SEARCH: Mode
MODE_REPORT: Mode
LANE_UNSPECIFIED: Lane
LANE_INTERACTIVE: Lane
LANE_TRAINING: Lane

class SubmitRequest(_message.Message):
    __slots__ = ("question", "mode", "lane")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    question: str
    mode: Mode
    lane: Lane
    def __init__(self, question: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., lane: _Optional[_Union[Lane, str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "question", "mode", "status", "answer", "error", "created_at", "report_markdown")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORT_MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    question: str
    mode: Mode
    status: str
    answer: str
    error: str
    created_at: str
    report_markdown: str
    def __init__(self, id: _Optional[str] = ..., question: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., status: _Optional[str] = ..., answer: _Optional[str] = ..., error: _Optional[str] = ..., created_at: _Optional[str] = ..., report_markdown: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("kind", "job_id", "elapsed_s", "step", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    job_id: str
    elapsed_s: float
    step: _common_pb2.Step
    message: str
    def __init__(self, kind: _Optional[str] = ..., job_id: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., step: _Optional[_Union[_common_pb2.Step, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("status", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...
