from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolCall(_message.Message):
    __slots__ = ("index", "name", "arguments_json", "error", "result", "ok", "elapsed_s", "snapshot_sha256")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    arguments_json: str
    error: str
    result: str
    ok: bool
    elapsed_s: float
    snapshot_sha256: str
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., error: _Optional[str] = ..., result: _Optional[str] = ..., ok: _Optional[bool] = ..., elapsed_s: _Optional[float] = ..., snapshot_sha256: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("index", "text", "think", "tool_calls", "answer", "token_ids", "logprobs", "prompt_tokens", "completion_tokens", "tool_response_tokens", "finish_reason", "model_s", "tools_s", "overhead_s", "forced_final")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    THINK_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_S_FIELD_NUMBER: _ClassVar[int]
    TOOLS_S_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_S_FIELD_NUMBER: _ClassVar[int]
    FORCED_FINAL_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    think: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    answer: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    prompt_tokens: int
    completion_tokens: int
    tool_response_tokens: int
    finish_reason: str
    model_s: float
    tools_s: float
    overhead_s: float
    forced_final: bool
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., think: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., answer: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., tool_response_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., model_s: _Optional[float] = ..., tools_s: _Optional[float] = ..., overhead_s: _Optional[float] = ..., forced_final: _Optional[bool] = ...) -> None: ...
