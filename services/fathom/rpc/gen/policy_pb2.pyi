from fathom.rpc.gen import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory_id", "question", "lane", "sampling", "resume_steps", "policy_version", "mode", "job_id")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    RESUME_STEPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    question: str
    lane: _common_pb2.Lane
    sampling: _common_pb2.Sampling
    resume_steps: _containers.RepeatedCompositeFieldContainer[_common_pb2.Step]
    policy_version: str
    mode: _common_pb2.Mode
    job_id: str
    def __init__(self, trajectory_id: _Optional[str] = ..., question: _Optional[str] = ..., lane: _Optional[_Union[_common_pb2.Lane, str]] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., resume_steps: _Optional[_Iterable[_Union[_common_pb2.Step, _Mapping]]] = ..., policy_version: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.Mode, str]] = ..., job_id: _Optional[str] = ...) -> None: ...

class TrajectoryDone(_message.Message):
    __slots__ = ("answer", "stop_reason", "total_tokens", "prompt", "prompt_token_ids", "policy_version")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    answer: str
    stop_reason: str
    total_tokens: int
    prompt: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    policy_version: str
    def __init__(self, answer: _Optional[str] = ..., stop_reason: _Optional[str] = ..., total_tokens: _Optional[int] = ..., prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class TrajectoryEvent(_message.Message):
    __slots__ = ("step", "done")
    STEP_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    step: _common_pb2.Step
    done: TrajectoryDone
    def __init__(self, step: _Optional[_Union[_common_pb2.Step, _Mapping]] = ..., done: _Optional[_Union[TrajectoryDone, _Mapping]] = ...) -> None: ...

class ScoreTokensRequest(_message.Message):
    __slots__ = ("token_ids", "from_position")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    from_position: int
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., from_position: _Optional[int] = ...) -> None: ...

class ScoreTokensResponse(_message.Message):
    __slots__ = ("logprobs", "policy_version")
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    policy_version: str
    def __init__(self, logprobs: _Optional[_Iterable[float]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class LoadWeightsRequest(_message.Message):
    __slots__ = ("path", "version_tag", "expected_policy_version")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_TAG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    path: str
    version_tag: str
    expected_policy_version: str
    def __init__(self, path: _Optional[str] = ..., version_tag: _Optional[str] = ..., expected_policy_version: _Optional[str] = ...) -> None: ...

class LoadWeightsResponse(_message.Message):
    __slots__ = ("policy_version", "tensors")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    tensors: int
    def __init__(self, policy_version: _Optional[str] = ..., tensors: _Optional[int] = ...) -> None: ...
