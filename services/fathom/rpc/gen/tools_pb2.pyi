from fathom.rpc.gen import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RENDER_MODE_UNSPECIFIED: _ClassVar[RenderMode]
    RENDER_MODE_NEVER: _ClassVar[RenderMode]
    RENDER_MODE_ALWAYS: _ClassVar[RenderMode]
RENDER_MODE_UNSPECIFIED: RenderMode
RENDER_MODE_NEVER: RenderMode
RENDER_MODE_ALWAYS: RenderMode

class SearchUrlsRequest(_message.Message):
    __slots__ = ("query", "top_k", "lane", "call_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    lane: _common_pb2.Lane
    call_id: str
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., call_id: _Optional[str] = ...) -> None: ...

class QueryUrlRequest(_message.Message):
    __slots__ = ("url", "goal", "lane", "call_id", "render")
    URL_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    url: str
    goal: str
    lane: _common_pb2.Lane
    call_id: str
    render: RenderMode
    def __init__(self, url: _Optional[str] = ..., goal: _Optional[str] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., call_id: _Optional[str] = ..., render: _Optional[_Union[RenderMode, str]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("ok", "text", "error", "snapshot_sha256", "elapsed_s", "call_id")
    OK_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    text: str
    error: str
    snapshot_sha256: str
    elapsed_s: float
    call_id: str
    def __init__(self, ok: _Optional[bool] = ..., text: _Optional[str] = ..., error: _Optional[str] = ..., snapshot_sha256: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., call_id: _Optional[str] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("url", "lane", "render", "call_id")
    URL_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    url: str
    lane: _common_pb2.Lane
    render: RenderMode
    call_id: str
    def __init__(self, url: _Optional[str] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., render: _Optional[_Union[RenderMode, str]] = ..., call_id: _Optional[str] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("ok", "error", "url", "final_url", "status", "content_type", "title", "text", "rendered", "snapshot_sha256", "elapsed_s")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    FINAL_URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    url: str
    final_url: str
    status: int
    content_type: str
    title: str
    text: str
    rendered: bool
    snapshot_sha256: str
    elapsed_s: float
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., url: _Optional[str] = ..., final_url: _Optional[str] = ..., status: _Optional[int] = ..., content_type: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., rendered: _Optional[bool] = ..., snapshot_sha256: _Optional[str] = ..., elapsed_s: _Optional[float] = ...) -> None: ...
