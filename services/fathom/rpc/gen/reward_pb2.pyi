from fathom.rpc.gen import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_STAGE_UNSPECIFIED: _ClassVar[RewardStage]
    REWARD_STAGE_1: _ClassVar[RewardStage]
    REWARD_STAGE_2: _ClassVar[RewardStage]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_CORRECT: _ClassVar[Verdict]
    VERDICT_INCORRECT: _ClassVar[Verdict]
    VERDICT_UNKNOWN: _ClassVar[Verdict]

class StepLabel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_LABEL_UNSPECIFIED: _ClassVar[StepLabel]
    STEP_LABEL_UNIQUE_SEARCH: _ClassVar[StepLabel]
    STEP_LABEL_REDUNDANT_SEARCH: _ClassVar[StepLabel]
    STEP_LABEL_EXPLORATION: _ClassVar[StepLabel]
    STEP_LABEL_VERIFICATION: _ClassVar[StepLabel]
    STEP_LABEL_REDUNDANT_QUERY: _ClassVar[StepLabel]
REWARD_STAGE_UNSPECIFIED: RewardStage
REWARD_STAGE_1: RewardStage
REWARD_STAGE_2: RewardStage
VERDICT_UNSPECIFIED: Verdict
VERDICT_CORRECT: Verdict
VERDICT_INCORRECT: Verdict
VERDICT_UNKNOWN: Verdict
STEP_LABEL_UNSPECIFIED: StepLabel
STEP_LABEL_UNIQUE_SEARCH: StepLabel
STEP_LABEL_REDUNDANT_SEARCH: StepLabel
STEP_LABEL_EXPLORATION: StepLabel
STEP_LABEL_VERIFICATION: StepLabel
STEP_LABEL_REDUNDANT_QUERY: StepLabel

class ScoreRequest(_message.Message):
    __slots__ = ("question", "gold_answers", "answer", "steps", "stage", "trajectory_id")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    question: str
    gold_answers: _containers.RepeatedScalarFieldContainer[str]
    answer: str
    steps: _containers.RepeatedCompositeFieldContainer[_common_pb2.Step]
    stage: RewardStage
    trajectory_id: str
    def __init__(self, question: _Optional[str] = ..., gold_answers: _Optional[_Iterable[str]] = ..., answer: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[_common_pb2.Step, _Mapping]]] = ..., stage: _Optional[_Union[RewardStage, str]] = ..., trajectory_id: _Optional[str] = ...) -> None: ...

class LabelledCall(_message.Message):
    __slots__ = ("step", "index", "label", "reason")
    STEP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    step: int
    index: int
    label: StepLabel
    reason: str
    def __init__(self, step: _Optional[int] = ..., index: _Optional[int] = ..., label: _Optional[_Union[StepLabel, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RewardBreakdown(_message.Message):
    __slots__ = ("reward", "r_format", "verdict", "exact_match", "f1", "tool_calls", "rho", "d_s", "d_q", "labels", "judge_model", "labeller", "stage", "correct", "terms", "counts")
    class TermsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REWARD_FIELD_NUMBER: _ClassVar[int]
    R_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    D_S_FIELD_NUMBER: _ClassVar[int]
    D_Q_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELLER_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    reward: float
    r_format: float
    verdict: Verdict
    exact_match: float
    f1: float
    tool_calls: int
    rho: float
    d_s: int
    d_q: int
    labels: _containers.RepeatedCompositeFieldContainer[LabelledCall]
    judge_model: str
    labeller: str
    stage: RewardStage
    correct: bool
    terms: _containers.ScalarMap[str, float]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, reward: _Optional[float] = ..., r_format: _Optional[float] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., exact_match: _Optional[float] = ..., f1: _Optional[float] = ..., tool_calls: _Optional[int] = ..., rho: _Optional[float] = ..., d_s: _Optional[int] = ..., d_q: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[LabelledCall, _Mapping]]] = ..., judge_model: _Optional[str] = ..., labeller: _Optional[str] = ..., stage: _Optional[_Union[RewardStage, str]] = ..., correct: _Optional[bool] = ..., terms: _Optional[_Mapping[str, float]] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...
