from fathom.rpc.gen import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitRequest(_message.Message):
    __slots__ = ("question", "mode", "lane", "priority", "deadline_s", "client_request_id")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    question: str
    mode: _common_pb2.Mode
    lane: _common_pb2.Lane
    priority: int
    deadline_s: float
    client_request_id: str
    def __init__(self, question: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.Mode, str]] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., priority: _Optional[int] = ..., deadline_s: _Optional[float] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id", "from_event")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_EVENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    from_event: int
    def __init__(self, job_id: _Optional[str] = ..., from_event: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "question", "mode", "state", "answer", "error", "created_at", "report_markdown", "lane", "batch_id", "started_at", "finished_at", "steps", "tool_calls")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORT_MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    question: str
    mode: _common_pb2.Mode
    state: _common_pb2.JobState
    answer: str
    error: str
    created_at: str
    report_markdown: str
    lane: _common_pb2.Lane
    batch_id: str
    started_at: str
    finished_at: str
    steps: int
    tool_calls: int
    def __init__(self, id: _Optional[str] = ..., question: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.Mode, str]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., answer: _Optional[str] = ..., error: _Optional[str] = ..., created_at: _Optional[str] = ..., report_markdown: _Optional[str] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., batch_id: _Optional[str] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., steps: _Optional[int] = ..., tool_calls: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("event_index", "kind", "job_id", "elapsed_s", "step", "message", "state")
    EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    event_index: int
    kind: str
    job_id: str
    elapsed_s: float
    step: _common_pb2.Step
    message: str
    state: _common_pb2.JobState
    def __init__(self, event_index: _Optional[int] = ..., kind: _Optional[str] = ..., job_id: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., step: _Optional[_Union[_common_pb2.Step, _Mapping]] = ..., message: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("state", "lane", "page")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.JobState
    lane: _common_pb2.Lane
    page: _common_pb2.PageRequest
    def __init__(self, state: _Optional[_Union[_common_pb2.JobState, str]] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("question", "id", "gold_answer")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWER_FIELD_NUMBER: _ClassVar[int]
    question: str
    id: str
    gold_answer: str
    def __init__(self, question: _Optional[str] = ..., id: _Optional[str] = ..., gold_answer: _Optional[str] = ...) -> None: ...

class SubmitBatchRequest(_message.Message):
    __slots__ = ("items", "mode", "lane", "priority", "name", "client_request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    mode: _common_pb2.Mode
    lane: _common_pb2.Lane
    priority: int
    name: str
    client_request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ..., mode: _Optional[_Union[_common_pb2.Mode, str]] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., priority: _Optional[int] = ..., name: _Optional[str] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("id", "name", "mode", "lane", "created_at", "total", "queued", "running", "succeeded", "failed", "cancelled", "done")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    mode: _common_pb2.Mode
    lane: _common_pb2.Lane
    created_at: str
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    done: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.Mode, str]] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., created_at: _Optional[str] = ..., total: _Optional[int] = ..., queued: _Optional[int] = ..., running: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class WatchBatchRequest(_message.Message):
    __slots__ = ("batch_id", "from_event")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_EVENT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    from_event: int
    def __init__(self, batch_id: _Optional[str] = ..., from_event: _Optional[int] = ...) -> None: ...

class BatchProgress(_message.Message):
    __slots__ = ("event_index", "job_id", "state", "batch")
    EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    event_index: int
    job_id: str
    state: _common_pb2.JobState
    batch: Batch
    def __init__(self, event_index: _Optional[int] = ..., job_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...
