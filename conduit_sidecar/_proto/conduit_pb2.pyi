from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardWeights(_message.Message):
    __slots__ = ("quality", "cost", "latency")
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    quality: float
    cost: float
    latency: float
    def __init__(self, quality: _Optional[float] = ..., cost: _Optional[float] = ..., latency: _Optional[float] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("max_cost_usd", "max_latency_s", "allowed_models", "excluded_models")
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_MODELS_FIELD_NUMBER: _ClassVar[int]
    max_cost_usd: float
    max_latency_s: float
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    excluded_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_cost_usd: _Optional[float] = ..., max_latency_s: _Optional[float] = ..., allowed_models: _Optional[_Iterable[str]] = ..., excluded_models: _Optional[_Iterable[str]] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("text", "session_id", "user_id", "metadata", "features", "preference", "reward_weights", "constraints", "query_id", "include_features", "ttl_s")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    REWARD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    text: str
    session_id: str
    user_id: str
    metadata: _containers.ScalarMap[str, str]
    features: _containers.RepeatedScalarFieldContainer[float]
    preference: str
    reward_weights: RewardWeights
    constraints: Constraints
    query_id: str
    include_features: bool
    ttl_s: float
    def __init__(self, text: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., features: _Optional[_Iterable[float]] = ..., preference: _Optional[str] = ..., reward_weights: _Optional[_Union[RewardWeights, _Mapping]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., query_id: _Optional[str] = ..., include_features: _Optional[bool] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("query_id", "selected_model", "confidence", "propensity", "scores", "reasoning", "policy_version", "features", "reward_weights")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REWARD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    selected_model: str
    confidence: float
    propensity: float
    scores: _containers.ScalarMap[str, float]
    reasoning: str
    policy_version: int
    features: _containers.RepeatedScalarFieldContainer[float]
    reward_weights: RewardWeights
    def __init__(self, query_id: _Optional[str] = ..., selected_model: _Optional[str] = ..., confidence: _Optional[float] = ..., propensity: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., reasoning: _Optional[str] = ..., policy_version: _Optional[int] = ..., features: _Optional[_Iterable[float]] = ..., reward_weights: _Optional[_Union[RewardWeights, _Mapping]] = ...) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("query_id", "cost_usd", "latency_s", "error", "retries", "ttl_s")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    cost_usd: float
    latency_s: float
    error: bool
    retries: int
    ttl_s: float
    def __init__(self, query_id: _Optional[str] = ..., cost_usd: _Optional[float] = ..., latency_s: _Optional[float] = ..., error: _Optional[bool] = ..., retries: _Optional[int] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("query_id",)
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    def __init__(self, query_id: _Optional[str] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("query_id", "signal_type", "payload", "idempotency_key")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    signal_type: str
    payload: _struct_pb2.Struct
    idempotency_key: str
    def __init__(self, query_id: _Optional[str] = ..., signal_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("query_id", "signal_type", "reward", "confidence", "duplicate")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    signal_type: str
    reward: float
    confidence: float
    duplicate: bool
    def __init__(self, query_id: _Optional[str] = ..., signal_type: _Optional[str] = ..., reward: _Optional[float] = ..., confidence: _Optional[float] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RecordSessionFeedbackRequest(_message.Message):
    __slots__ = ("session_id", "signal_type", "payload", "propagation_weight", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    signal_type: str
    payload: _struct_pb2.Struct
    propagation_weight: float
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., signal_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., propagation_weight: _Optional[float] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RecordSessionFeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordFeedbackResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordFeedbackResponse, _Mapping]]] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("model_id", "cost_usd", "quality_score", "latency_s", "features", "confidence", "reward_weights")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    QUALITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REWARD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    cost_usd: float
    quality_score: float
    latency_s: float
    features: _containers.RepeatedScalarFieldContainer[float]
    confidence: float
    reward_weights: RewardWeights
    def __init__(self, model_id: _Optional[str] = ..., cost_usd: _Optional[float] = ..., quality_score: _Optional[float] = ..., latency_s: _Optional[float] = ..., features: _Optional[_Iterable[float]] = ..., confidence: _Optional[float] = ..., reward_weights: _Optional[_Union[RewardWeights, _Mapping]] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("reward",)
    REWARD_FIELD_NUMBER: _ClassVar[int]
    reward: float
    def __init__(self, reward: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "provider", "input_usd_per_mtok", "output_usd_per_mtok", "expected_latency_s", "quality_prior")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    QUALITY_PRIOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    expected_latency_s: float
    quality_prior: float
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., input_usd_per_mtok: _Optional[float] = ..., output_usd_per_mtok: _Optional[float] = ..., expected_latency_s: _Optional[float] = ..., quality_prior: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("model_id", "selections", "mean_reward", "weight_sum", "cost_usd_sum", "latency_s_sum", "outcomes", "mean_cost_usd", "mean_latency_s")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SUM_FIELD_NUMBER: _ClassVar[int]
    COST_USD_SUM_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_SUM_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MEAN_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    selections: int
    mean_reward: float
    weight_sum: float
    cost_usd_sum: float
    latency_s_sum: float
    outcomes: int
    mean_cost_usd: float
    mean_latency_s: float
    def __init__(self, model_id: _Optional[str] = ..., selections: _Optional[int] = ..., mean_reward: _Optional[float] = ..., weight_sum: _Optional[float] = ..., cost_usd_sum: _Optional[float] = ..., latency_s_sum: _Optional[float] = ..., outcomes: _Optional[int] = ..., mean_cost_usd: _Optional[float] = ..., mean_latency_s: _Optional[float] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("models", "pending_queries", "feedback_counts", "policy", "policy_version")
    class FeedbackCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PENDING_QUERIES_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStats]
    pending_queries: int
    feedback_counts: _containers.ScalarMap[str, int]
    policy: str
    policy_version: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStats, _Mapping]]] = ..., pending_queries: _Optional[int] = ..., feedback_counts: _Optional[_Mapping[str, int]] = ..., policy: _Optional[str] = ..., policy_version: _Optional[int] = ...) -> None: ...
