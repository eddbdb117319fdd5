"""Router: construction, routing, constraints, immediate feedback, observations, stats."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduit_sidecar import Query, Router
from conduit_sidecar.bandit import FeatureHasher, PolicyConfig
from conduit_sidecar.errors import InvalidArgument, NoEligibleModel
from conduit_sidecar.models import ModelSpec, default_catalogue
from conduit_sidecar.query import MAX_TEXT_CHARS, Constraints
from conduit_sidecar.reward import PRESETS, RewardWeights, compose_reward

CHEAP = ModelSpec("cheap", "test", 0.1, 0.4, 0.8, 0.5)
MID = ModelSpec("mid", "test", 1.0, 4.0, 2.0, 0.7)
STRONG = ModelSpec("strong", "test", 5.0, 25.0, 5.0, 0.9)

DEEP: dict[str, object] = {"a": 1}  # metadata nested 5000 levels deep
for _ in range(4999):
    DEEP = {"a": DEEP}


def three(policy: str = "linucb", **kwargs: object) -> Router:
    return Router([CHEAP, MID, STRONG], policy=policy, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ construction


async def test_default_router_works_offline_with_the_catalogue() -> None:
    router = Router()
    assert [m.id for m in router.models] == [m.id for m in default_catalogue()]
    assert router.feature_dim == 64
    query = Query(text="What is Python?", session_id="s1", user_id="u1", metadata={"k": 1})
    decision = await router.route(query)
    assert decision.query_id == query.query_id
    assert decision.selected_model in {m.id for m in router.models}
    assert set(decision.scores) == {m.id for m in router.models}
    assert 0.0 <= decision.confidence <= 1.0
    assert 0.0 < decision.propensity <= 1.0
    assert len(decision.features) == 64
    assert all(isinstance(v, float) for v in decision.features)
    assert decision.reasoning.startswith("linucb: ")
    assert decision.policy_version == router.policy.version
    assert decision.reward_weights == PRESETS["balanced"]
    assert (decision.session_id, decision.user_id, decision.metadata) == ("s1", "u1", {"k": 1})
    assert decision.created_at > 1.7e9


def test_models_by_id_or_spec() -> None:
    router = Router(["gpt-4o-mini", "in-house-model", STRONG])
    specs = {m.id: m for m in router.models}
    assert specs["gpt-4o-mini"].input_usd_per_mtok == 0.15
    assert specs["in-house-model"].provider == "unknown"
    assert specs["strong"] is STRONG
    assert router.policy.arms == ["gpt-4o-mini", "in-house-model", "strong"]


def test_policy_config_and_weights_are_configurable() -> None:
    config = PolicyConfig(kind="lin_ts", dim=32, seed=3)
    router = Router([CHEAP, MID], policy=config, reward_weights="quality")
    assert router.feature_dim == 32
    assert router.policy.config.kind == "lin_ts"
    assert router.reward_weights == PRESETS["quality"]
    explicit = RewardWeights(1, 0, 0)
    assert Router([CHEAP], reward_weights=explicit).reward_weights is explicit
    assert Router([CHEAP, MID], feature_dim=16).feature_dim == 16
    fixed = Router([CHEAP, MID], policy="fixed")
    assert fixed.decide(Query(text="anything")).selected_model == "cheap"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (([],), {}, "models"),
        (("gpt-4o",), {}, "models"),
        (([CHEAP, CHEAP],), {}, "models"),
        ((["a", ""],), {}, "models"),
        (([3],), {}, "models"),
        ((["a", "b\udcff"],), {}, "models"),  # was "policy"
        ((["m" * 1025],), {}, "models"),  # was "policy"
        ((["a\x00b"],), {}, "models"),  # was accepted, then broke PostgreSQL snapshots
        (([CHEAP],), {"policy": "greedy"}, "policy"),
        (([CHEAP],), {"feature_dim": 0}, "feature_dim"),
        (([CHEAP],), {"feature_dim": 2.5}, "feature_dim"),
        (([CHEAP],), {"feature_dim": 4}, "feature_dim"),  # below the hasher's minimum
        (([CHEAP],), {"reward_weights": "cheapest"}, "reward_weights"),
        (([CHEAP],), {"policy": PolicyConfig(dim=32), "feature_dim": 16}, "feature_dim"),
        (([CHEAP],), {"policy": PolicyConfig(alpha=-1.0)}, "policy"),
    ],
)
def test_bad_construction_names_the_field(
    args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        Router(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# ------------------------------------------------------------------ routing


async def test_same_text_same_features_and_caller_features_win() -> None:
    router = three()
    a = await router.route(Query(text="Explain monads"))
    b = await router.route(Query(text="Explain monads"))
    assert a.features == b.features
    assert a.query_id != b.query_id
    own = [0.0] * 64
    own[0], own[5] = 1.0, 0.5
    c = await router.route(Query(text="Explain monads", features=own))
    assert c.features == own


async def test_preference_and_explicit_weights_are_fixed_on_the_decision() -> None:
    router = three()
    assert (await router.route(Query(text="q", preference="cost"))).reward_weights == PRESETS[
        "cost"
    ]
    assert (await router.route(Query(text="q", preference=""))).reward_weights == PRESETS[
        "balanced"
    ]
    weights = RewardWeights(0.1, 0.1, 0.8)
    decision = await router.route(Query(text="q", preference="quality", reward_weights=weights))
    assert decision.reward_weights is weights


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (Query(text=""), "text"),
        (Query(text="  \n\t"), "text"),
        (Query(text="x" * (MAX_TEXT_CHARS + 1)), "text"),
        (Query(text=None), "text"),  # type: ignore[arg-type]
        (Query(text="q", features=[1.0] * 63), "features"),
        (Query(text="q", features=[math.nan] + [0.0] * 63), "features"),
        (Query(text="q", features=[math.inf] * 64), "features"),
        (Query(text="q", features="0" * 64), "features"),  # type: ignore[arg-type]
        (Query(text="q", features=[[1.0] * 64]), "features"),  # type: ignore[list-item]
        (Query(text="q", features=[None] * 64), "features"),  # type: ignore[list-item]
        (Query(text="q", preference="cheapest"), "preference"),
        (Query(text="q", reward_weights=(1, 0, 0)), "reward_weights"),  # type: ignore[arg-type]
        # Wrong types that crashed inside the router (TypeError: unhashable; AttributeError).
        (Query(text="q", preference=["cost"]), "preference"),  # type: ignore[arg-type]
        (Query(text="q", preference=[]), "preference"),  # type: ignore[arg-type]
        (Query(text="q", constraints={"max_cost_usd": 1.0}), "constraints"),  # type: ignore[arg-type]
        (
            Query(text="q", constraints=Constraints(allowed_models=["x"])),
            "constraints.allowed_models",
        ),
        (
            Query(text="q", constraints=Constraints(excluded_models=["x"])),
            "constraints.excluded_models",
        ),
        (Query(text="q", constraints=Constraints(max_cost_usd=-1)), "constraints.max_cost_usd"),
        (
            Query(text="q", constraints=Constraints(max_latency_s=math.nan)),
            "constraints.max_latency_s",
        ),
        (Query(text="q", features=[10**400] * 64), "features"),
        # Durable stores keep metadata as JSON: a datetime was a TypeError at Track time.
        (Query(text="q", metadata={"at": datetime.datetime(2026, 1, 1)}), "metadata"),
        (Query(text="q", metadata={"score": math.nan}), "metadata"),
        (Query(text="q", metadata={1: "a"}), "metadata"),  # type: ignore[dict-item]
        (Query(text="q", metadata="tenant=a"), "metadata"),  # type: ignore[arg-type]
        (Query(text="q", metadata=DEEP), "metadata"),  # was RecursionError
        # Ids feedback must be able to name later (FeedbackEvent / SessionFeedback refuse these).
        (Query(text="q", session_id=123), "session_id"),  # type: ignore[arg-type]
        (Query(text="q", session_id=" "), "session_id"),
        (Query(text="q", query_id=""), "query_id"),
        (Query(text="q", query_id=42), "query_id"),  # type: ignore[arg-type]
        (Query(text="q", user_id=["u"]), "user_id"),  # type: ignore[arg-type]
        # A lone surrogate (possible in a Python str, never in a gRPC string): the core's
        # featuriser and the stores' UTF-8 encoding raised UnicodeEncodeError naming nothing.
        (Query(text="caf\udce9"), "text"),
        (Query(text="caf\udce9", features=[0.5] * 64), "text"),
        (Query(text="q", query_id="id-\ud800"), "query_id"),
        (Query(text="q", session_id="s-\ud800"), "session_id"),
        (Query(text="q", user_id="u-\ud800"), "user_id"),
        (
            Query(text="q", constraints=Constraints(max_cost_usd=10**400)),
            "constraints.max_cost_usd",
        ),
    ],
)
async def test_bad_queries_name_the_field(query: Query, field: str) -> None:
    router = three()
    version = router.policy.version
    with pytest.raises(InvalidArgument) as info:
        await router.route(query)
    assert info.value.field == field
    assert router.policy.version == version
    assert all(s.selections == 0 for s in router.stats().values())


@pytest.mark.parametrize("query", ["What is Python?", {"text": "What is Python?"}, None])
async def test_route_refuses_what_is_not_a_query(query: object) -> None:
    router = three()
    with pytest.raises(InvalidArgument) as info:  # was AttributeError: no attribute 'text'
        await router.route(query)  # type: ignore[arg-type]
    assert info.value.field == "query"
    assert all(s.selections == 0 for s in router.stats().values())


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(min_size=1, max_size=400).filter(lambda t: not t.isspace()),
    preference=st.sampled_from([None, "balanced", "quality", "cost", "speed"]),
)
def test_any_text_routes_to_a_valid_decision(text: str, preference: str | None) -> None:
    router = ROUTER_FOR_PROPERTIES
    decision = router.decide(Query(text=text, preference=preference))
    assert decision.selected_model in decision.scores
    assert 0.0 <= decision.confidence <= 1.0
    assert 0.0 < decision.propensity <= 1.0
    assert all(math.isfinite(v) for v in decision.features)
    assert all(math.isfinite(v) for v in decision.scores.values())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=64, max_size=64))
def test_any_finite_caller_features_route(features: list[float]) -> None:
    decision = ROUTER_FOR_PROPERTIES.decide(Query(text="q", features=features))
    assert decision.features == features
    assert 0.0 <= decision.confidence <= 1.0


ROUTER_FOR_PROPERTIES = Router([CHEAP, MID, STRONG])


async def test_text_at_the_limit_is_accepted() -> None:
    decision = await three().route(Query(text="x" * MAX_TEXT_CHARS))
    assert decision.selected_model in {"cheap", "mid", "strong"}


@pytest.mark.parametrize(
    "policy", ["linucb", "lin_ts", "beta_ts", "ucb1", "epsilon_greedy", "random"]
)
async def test_excluded_model_is_never_chosen(policy: str) -> None:
    router = three(policy)
    constraints = Constraints(excluded_models=["mid"])
    chosen = set()
    for i in range(200):
        decision = await router.route(Query(text=f"question {i}", constraints=constraints))
        assert "mid" not in decision.scores
        chosen.add(decision.selected_model)
        # Feedback that would make "mid" the favourite if it were ever a candidate.
        router.apply_observation(decision.selected_model, decision.features, None, (0.0, 1.0))
    assert chosen <= {"cheap", "strong"}
    assert router.stats()["mid"].selections == 0


async def test_allowed_models_restrict_the_candidates() -> None:
    router = three("random")
    constraints = Constraints(allowed_models=["strong"])
    for i in range(20):
        decision = await router.route(Query(text=f"q{i}", constraints=constraints))
        assert decision.selected_model == "strong"
        assert list(decision.scores) == ["strong"]
        assert decision.confidence == 1.0
        assert "the only eligible model" in decision.reasoning


async def test_max_cost_excludes_expensive_models() -> None:
    router = three("random")
    text = "Summarise this paragraph please."
    # Between the cheap model's estimated cost (~1e-4) and the mid model's (~1e-3).
    constraints = Constraints(max_cost_usd=5e-4)
    for i in range(50):
        decision = await router.route(Query(text=f"{text} {i}", constraints=constraints))
        assert decision.selected_model == "cheap"
        assert "max_cost_usd=0.0005" in decision.reasoning
    with pytest.raises(
        NoEligibleModel, match=r"max_cost_usd=1e-06 removed \['cheap', 'mid', 'strong'\]"
    ):
        await router.route(Query(text=text, constraints=Constraints(max_cost_usd=1e-6)))


async def test_max_latency_and_combined_constraints() -> None:
    router = three("random")
    c = Constraints(max_latency_s=2.5, excluded_models=["cheap"])
    for i in range(20):
        assert (await router.route(Query(text=f"q{i}", constraints=c))).selected_model == "mid"
    with pytest.raises(NoEligibleModel) as info:
        await router.route(
            Query(text="q", constraints=Constraints(excluded_models=["cheap"], max_latency_s=1.0))
        )
    assert "excluded_models removed ['cheap']" in str(info.value)
    assert "max_latency_s=1 removed ['mid', 'strong']" in str(info.value)


@pytest.mark.parametrize("policy", ["linucb", "lin_ts", "ucb1", "epsilon_greedy"])
def test_the_native_route_decides_as_featurize_then_select(policy: str) -> None:
    """Router.decide's one native call (featurise + select + runner-up) and the two-call path
    for caller features agree, decision for decision, on twin routers."""
    native, twin = Router(policy=policy, seed=3), Router(policy=policy, seed=3)
    hasher = FeatureHasher(native.feature_dim)
    for i in range(40):
        text = f"query number {i} about {'code' if i % 3 else 'poetry'}"
        a = native.decide(Query(text=text))
        b = twin.decide(Query(text=text, features=list(hasher.featurize(text))))
        assert a.features == b.features and a.scores == b.scores
        assert (a.selected_model, a.propensity, a.confidence) == (
            b.selected_model,
            b.propensity,
            b.confidence,
        )
        assert a.reasoning == b.reasoning and a.policy_version == b.policy_version
        for router, decision in ((native, a), (twin, b)):
            router.apply_observation(decision.selected_model, decision.features, None, (0.7, 1.0))


async def test_confidence_grows_as_the_policy_learns() -> None:
    router = three()
    query = Query(text="translate hello to French")
    before = await router.route(query)
    for _ in range(200):
        router.apply_observation("cheap", before.features, None, (1.0, 1.0))
        router.apply_observation("mid", before.features, None, (0.2, 1.0))
        router.apply_observation("strong", before.features, None, (0.1, 1.0))
    after = await router.route(Query(text=query.text))
    assert after.selected_model == "cheap"
    assert after.confidence > 0.95
    assert after.confidence > before.confidence
    assert after.policy_version > before.policy_version


# ------------------------------------------------------------------ learning entry points


async def test_update_applies_the_composed_reward() -> None:
    router = three()
    decision = await router.route(Query(text="What is Python?"))
    version = router.policy.version
    reward = await router.update(
        model_id="mid", cost=0.002, quality_score=0.9, latency=1.5, features=decision.features
    )
    assert reward == pytest.approx(compose_reward(PRESETS["balanced"], 0.9, 0.002, 1.5))
    assert router.policy.version > version
    stats = router.stats()["mid"]
    assert stats.weight_sum == pytest.approx(1.0)
    assert stats.mean_reward == pytest.approx(reward)
    assert (stats.outcomes, stats.cost_usd_sum, stats.latency_s_sum) == (1, 0.002, 1.5)
    low = await router.update(
        "cheap", 0.0002, 0.5, 0.4, decision.features, confidence=0.5, reward_weights="quality"
    )
    assert low == pytest.approx(compose_reward(PRESETS["quality"], 0.5, 0.0002, 0.4))
    assert router.stats()["cheap"].weight_sum == pytest.approx(0.5)
    unknown = await router.update("strong", None, 0.3, None, decision.features)
    assert unknown == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_id": "nope"}, "model_id"),
        ({"model_id": ["mid"]}, "model_id"),  # was TypeError: unhashable type
        ({"cost": -0.01}, "cost"),
        ({"cost": math.nan}, "cost"),
        ({"latency": -1.0}, "latency"),
        ({"latency": math.inf}, "latency"),
        ({"quality_score": 1.5}, "quality_score"),
        ({"quality_score": -0.1}, "quality_score"),
        ({"quality_score": math.nan}, "quality_score"),
        ({"confidence": 2.0}, "confidence"),
        ({"confidence": math.nan}, "confidence"),
        ({"features": [0.1] * 10}, "features"),
        ({"features": [math.nan] * 64}, "features"),
        ({"features": [10**400] + [0.0] * 63}, "features"),  # no float holds it
        ({"cost": 10**400}, "cost"),
        ({"reward_weights": "cheapest"}, "reward_weights"),
    ],
)
async def test_bad_update_changes_nothing(kwargs: dict[str, object], field: str) -> None:
    router = three()
    decision = await router.route(Query(text="hello"))
    args: dict[str, object] = {
        "model_id": "mid",
        "cost": 0.001,
        "quality_score": 0.8,
        "latency": 1.0,
        "features": decision.features,
    }
    args.update(kwargs)
    version, stats = router.policy.version, router.stats()
    with pytest.raises(InvalidArgument) as info:
        await router.update(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert router.policy.version == version
    assert router.stats() == stats


async def test_apply_observation_nets_out_to_the_final_observation() -> None:
    incremental, direct = three(), three()
    x = (await incremental.route(Query(text="derive the gradient"))).features
    incremental.apply_observation("strong", x, None, (0.2, 0.5))
    incremental.apply_observation("strong", x, (0.2, 0.5), (0.6, 0.8))
    incremental.apply_observation("strong", x, (0.6, 0.8), (0.7, 1.0))
    direct.apply_observation("strong", x, None, (0.7, 1.0))
    a, b = incremental.stats()["strong"], direct.stats()["strong"]
    assert a.weight_sum == pytest.approx(b.weight_sum)
    assert a.mean_reward == pytest.approx(b.mean_reward)
    scores_a = incremental.policy.select(incremental.check_features(x, "x")).scores
    scores_b = direct.policy.select(direct.check_features(x, "x")).scores
    assert scores_a == pytest.approx(scores_b)
    # A no-op replacement and a zero-weight first observation leave the policy untouched.
    version = direct.policy.version
    direct.apply_observation("strong", x, (0.7, 1.0), (0.7, 1.0))
    direct.apply_observation("mid", x, None, (0.5, 0.0))
    assert direct.policy.version == version


@pytest.mark.parametrize(
    ("model_id", "features", "old", "new", "field"),
    [
        ("nope", None, None, (0.5, 1.0), "model_id"),
        ("mid", [0.0] * 3, None, (0.5, 1.0), "features"),
        ("mid", None, None, (1.5, 1.0), "new.reward"),
        ("mid", None, None, (0.5, -0.1), "new.weight"),
        ("mid", None, None, (0.5,), "new"),
        ("mid", None, (math.nan, 1.0), (0.5, 1.0), "old.reward"),
        ("mid", None, (0.5, 1.0), (0.5, 0.5), "new"),
        # The decision's created_at, from a RoutingDecision built by hand (was TypeError).
        ("mid", None, None, (0.5, 1.0), "routed_at"),
    ],
)
async def test_bad_observation_changes_nothing(
    model_id: str,
    features: list[float] | None,
    old: tuple[float, float] | None,
    new: tuple[float, float],
    field: str,
) -> None:
    router = three()
    x = (await router.route(Query(text="hi"))).features
    router.apply_observation("mid", x, None, (0.5, 0.5))
    version, stats = router.policy.version, router.stats()
    routed_at = "yesterday" if field == "routed_at" else None
    with pytest.raises(InvalidArgument) as info:
        router.apply_observation(
            model_id,
            x if features is None else features,
            old,
            new,
            routed_at=routed_at,  # type: ignore[arg-type]
        )
    assert info.value.field == field
    assert router.policy.version == version
    assert router.stats() == stats


def test_record_outcome_and_stats() -> None:
    router = three()
    router.decide(Query(text="a"))
    router.record_outcome("cheap", 0.0003, 0.7)
    router.record_outcome("cheap", None, 0.3)
    router.record_outcome("cheap", 0.0001, None)
    stats = router.stats()
    assert sum(s.selections for s in stats.values()) == 1
    cheap = stats["cheap"]
    assert cheap.outcomes == 3
    assert cheap.cost_usd_sum == pytest.approx(0.0004)
    assert cheap.latency_s_sum == pytest.approx(1.0)
    assert (cheap.weight_sum, cheap.mean_reward, cheap.updates) == (0.0, 0.0, 0)
    for args, field in [
        (("nope", 0.1, 0.1), "model_id"),
        (("cheap", -0.1, 0.1), "cost_usd"),
        (("cheap", 0.1, math.nan), "latency_s"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            router.record_outcome(*args)  # type: ignore[arg-type]
        assert info.value.field == field
    assert router.stats() == stats


async def test_add_and_remove_models_at_run_time() -> None:
    router = Router([CHEAP, MID], policy="random")
    router.add_model(STRONG)
    router.add_model("gpt-4o-mini")
    assert [m.id for m in router.models] == ["cheap", "mid", "strong", "gpt-4o-mini"]
    seen = {(await router.route(Query(text=f"q{i}"))).selected_model for i in range(200)}
    assert seen == {"cheap", "mid", "strong", "gpt-4o-mini"}
    router.remove_model("mid")
    assert "mid" not in router.stats()
    for i in range(100):
        decision = await router.route(Query(text=f"q{i}"))
        assert decision.selected_model != "mid"
        assert "mid" not in decision.scores
    with pytest.raises(InvalidArgument, match="already routed"):
        router.add_model(CHEAP)
    with pytest.raises(InvalidArgument) as info:
        router.remove_model("mid")
    assert info.value.field == "model_id"
    with pytest.raises(InvalidArgument) as info:
        await router.update("mid", 0.1, 0.5, 1.0, [0.0] * 64)
    assert info.value.field == "model_id"
    single = Router([CHEAP])
    with pytest.raises(InvalidArgument, match="last model"):
        single.remove_model("cheap")


async def test_a_query_routed_again_gets_a_fresh_id_unless_the_caller_chose_it() -> None:
    # A Query's generated id used to name every decision made for it: routed twice, both
    # decisions carried one id, and the collector credited the second one's Track and
    # feedback to the first one's model.
    router = Router(models=["a", "b"], feature_dim=8)
    query = Query(text="same request")
    first = await router.route(query)
    second = await router.route(query)
    third = router.decide(query)
    assert first.query_id == query.query_id
    assert len({first.query_id, second.query_id, third.query_id}) == 3
    assert query.query_id == first.query_id  # the Query itself is left as it was
    # A caller-chosen id names the request: reuse is meaningful (an idempotent retry).
    chosen = Query(text="same request", query_id="order-17")
    assert (await router.route(chosen)).query_id == (await router.route(chosen)).query_id
    # So is an id the caller set after creation.
    query.query_id = "set-later"
    assert router.decide(query).query_id == router.decide(query).query_id == "set-later"
