"""Gate, promotion, rejection and rollback against the real MLflow registry of the test stack."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_airflow.exceptions import InvalidParameterError, PromotionConflictError
from mlops_airflow.hooks.mlflow_registry import MlflowRegistryHook
from mlops_airflow.operators.promotion import (
    XCOM_DECISION,
    XCOM_RESPONSE,
    ModelGateOperator,
    PromoteModelOperator,
    RejectModelOperator,
    RollbackModelOperator,
)
from tests.support import FakeTI, evaluation_result, register_version


class XComTI(FakeTI):
    """A task instance whose pushes can be pulled back by task id (one DAG run's XCom)."""

    def __init__(self, store: dict[tuple[str, str], Any], task_id: str) -> None:
        super().__init__(task_id=task_id)
        self.store = store

    def xcom_push(self, key: str, value: Any) -> None:
        self.store[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.store.get((task_ids, key))


@pytest.fixture
def model_name() -> str:
    """A registered model of its own per test: no test sees another's versions or aliases."""
    return f"churn_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hook() -> MlflowRegistryHook:
    return MlflowRegistryHook()


def gate(
    evaluation: dict[str, Any], store: dict[tuple[str, str], Any], **kwargs: Any
) -> str | None:
    op = ModelGateOperator(
        task_id="promotion_gate",
        evaluation=evaluation,
        approval_task_id="approve_promotion",
        reject_task_id="reject_candidate",
        **kwargs,
    )
    return op.choose_branch({"ti": XComTI(store, "promotion_gate")})  # type: ignore[arg-type]


def auto_approve(store: dict[tuple[str, str], Any]) -> None:
    store[("approve_promotion", XCOM_RESPONSE)] = {"option": "Promote", "auto": True}


def promote(store: dict[tuple[str, str], Any]) -> dict[str, Any]:
    op = PromoteModelOperator(
        task_id="promote_model", gate_task_id="promotion_gate", approval_task_id="approve_promotion"
    )
    return op.execute({"ti": XComTI(store, "promote_model")})  # type: ignore[arg-type]


def test_first_candidate_is_promoted_by_floor_and_baseline(
    model_name: str, hook: MlflowRegistryHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "http://mlflow.example/")
    v1 = register_version(hook.client, model_name)
    store: dict[tuple[str, str], Any] = {}
    evaluation = evaluation_result(hook.client, model_name, v1, 0.81, 0.78)
    assert gate(evaluation, store) == "approve_promotion"
    decision = store[("promotion_gate", XCOM_DECISION)]
    assert decision["passed"] and decision["champion_version"] is None
    auto_approve(store)
    assert promote(store) == {"model_name": model_name, "version": v1, "previous": None}
    # the "Model version" link of promote_model
    assert store[("promote_model", "mlflow_model_version_url")] == (
        f"http://mlflow.example/#/models/{model_name}/versions/{v1}"
    )

    assert hook.alias_version(model_name, "champion") == v1
    assert hook.alias_version(model_name, "previous") is None
    assert hook.alias_version(model_name, "challenger") is None  # removed once promoted
    version = hook.client.get_model_version(model_name, v1)
    assert version.tags["validation_status"] == "passed"
    assert version.tags["validation.champion_version"] == "none"
    assert version.tags["approval"] == "not required"
    assert "Promoted to @champion" in version.description
    assert "| roc_auc ↑ | 0.8100 | 0.7800 |" in version.description
    report = hook.client.download_artifacts(version.run_id, "evaluation/decision.md")
    assert "beats_baseline" in Path(report).read_text()


def test_better_candidate_replaces_the_champion_which_becomes_previous(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2 = register_version(hook.client, model_name)
    store: dict[tuple[str, str], Any] = {}
    evaluation = evaluation_result(hook.client, model_name, v2, 0.83, 0.78, v1, 0.81)
    assert gate(evaluation, store) == "approve_promotion"
    auto_approve(store)
    assert promote(store)["previous"] == v1
    assert hook.alias_version(model_name, "champion") == v2
    assert hook.alias_version(model_name, "previous") == v1
    assert hook.client.get_model_version(model_name, v2).tags["promotion.promoted_over"] == v1


@pytest.mark.parametrize(
    ("candidate_auc", "baseline_auc", "failed"),
    [
        (0.811, 0.78, "beats_champion"),  # better, but by less than the margin
        (0.79, 0.80, "beats_baseline"),
        (0.65, 0.60, "floor"),
    ],
)
def test_worse_candidate_is_rejected_and_the_champion_stays(
    model_name: str,
    hook: MlflowRegistryHook,
    candidate_auc: float,
    baseline_auc: float,
    failed: str,
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2 = register_version(hook.client, model_name)
    store: dict[tuple[str, str], Any] = {}
    champion_auc = 0.81 if failed == "beats_champion" else 0.6
    evaluation = evaluation_result(
        hook.client, model_name, v2, candidate_auc, baseline_auc, v1, champion_auc
    )
    assert gate(evaluation, store) == "reject_candidate"
    decision = store[("promotion_gate", XCOM_DECISION)]
    assert [c["name"] for c in decision["checks"] if not c["passed"]] == [failed]

    RejectModelOperator(task_id="reject_candidate", gate_task_id="promotion_gate").execute(
        {"ti": XComTI(store, "reject_candidate")}  # type: ignore[arg-type]
    )
    version = hook.client.get_model_version(model_name, v2)
    assert version.tags["validation_status"] == "rejected"
    assert version.tags["rejected_by"] == "gate"
    assert version.tags["validation.failed_checks"].startswith(f"{failed}: ")
    assert hook.alias_version(model_name, "champion") == v1


def test_force_promote_needs_a_reason_and_records_it(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2 = register_version(hook.client, model_name)
    evaluation = evaluation_result(hook.client, model_name, v2, 0.70, 0.78, v1, 0.81)
    with pytest.raises(InvalidParameterError, match="force_reason"):
        gate(evaluation, {}, force_promote=True, force_reason="  ")
    store: dict[tuple[str, str], Any] = {}
    branch = gate(evaluation, store, force_promote="True", force_reason="hotfix for a data bug")
    assert branch == "approve_promotion"
    auto_approve(store)
    promote(store)
    tags = hook.client.get_model_version(model_name, v2).tags
    assert tags["validation_status"] == "overridden"
    assert tags["promotion.forced"] == "true"
    assert tags["promotion.force_reason"] == "hotfix for a data bug"
    assert "beats_champion" in tags["validation.failed_checks"]
    assert hook.alias_version(model_name, "champion") == v2


def test_bad_thresholds_are_refused_by_name(model_name: str, hook: MlflowRegistryHook) -> None:
    v1 = register_version(hook.client, model_name)
    evaluation = evaluation_result(hook.client, model_name, v1, 0.81, 0.78)
    with pytest.raises(InvalidParameterError, match="unknown promotion thresholds: flor"):
        gate(evaluation, {}, thresholds={"flor": 0.9})
    with pytest.raises(InvalidParameterError, match="min_improvement_over_champion"):
        gate(evaluation, {}, thresholds='{"min_improvement_over_champion": -1}')


def test_promotion_refuses_a_champion_that_moved_since_the_evaluation(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2, v3 = register_version(hook.client, model_name), register_version(hook.client, model_name)
    store: dict[tuple[str, str], Any] = {}
    gate(evaluation_result(hook.client, model_name, v3, 0.85, 0.78, v1, 0.81), store)
    auto_approve(store)
    hook.move_champion(model_name, v2, v1)  # another run promoted v2 meanwhile
    with pytest.raises(PromotionConflictError, match=f"version {v2}.*version {v3}.*version {v1}"):
        promote(store)
    assert hook.alias_version(model_name, "champion") == v2
    assert hook.alias_version(model_name, "previous") == v1
    assert hook.alias_version(model_name, "challenger") is None
    assert "validation_status" not in hook.client.get_model_version(model_name, v3).tags


def test_concurrent_promotions_leave_the_registry_consistent(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    """Two runs evaluated against the same champion promote at the same moment, each with a
    client of its own as two task processes would: the alias lock lets one move, and the other
    then finds the champion it was compared with gone."""
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    candidates = [register_version(hook.client, model_name) for _ in range(2)]
    start = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def promote_one(version: str) -> None:
        own = MlflowRegistryHook()
        start.wait()
        try:
            own.move_champion(model_name, version, v1)
            outcomes[version] = None
        except BaseException as err:
            outcomes[version] = err

    threads = [threading.Thread(target=promote_one, args=(v,)) for v in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [v for v, err in outcomes.items() if err is None]
    assert len(winners) == 1, outcomes
    (winner,) = winners
    (loser,) = [v for v in candidates if v != winner]
    assert isinstance(outcomes[loser], PromotionConflictError)
    assert f"is version {winner}, but version {loser} was compared with version {v1}" in str(
        outcomes[loser]
    )
    assert hook.alias_version(model_name, "champion") == winner
    assert hook.alias_version(model_name, "previous") == v1
    assert hook.alias_version(model_name, "challenger") is None
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # the lock is released
        hook.client.get_registered_model(f"{model_name}__alias_lock")


def test_a_repeated_promotion_is_a_no_op_and_a_stale_lock_is_broken(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2 = register_version(hook.client, model_name)
    assert hook.move_champion(model_name, v2, v1).moved
    # a retry after a crash that followed the move: same request, nothing changes
    again = hook.move_champion(model_name, v2, v1)
    assert not again.moved and again.previous == v1
    assert hook.alias_version(model_name, "champion") == v2

    # a holder that crashed left its lock behind: it is broken once older than the TTL
    hook.client.create_registered_model(
        f"{model_name}__alias_lock", tags={"holder": "crashed", "acquired_at": "0"}
    )
    v3 = register_version(hook.client, model_name)
    assert MlflowRegistryHook(lock_ttl_seconds=60).move_champion(model_name, v3, v2).moved
    # a live holder is waited for, then named
    hook.client.create_registered_model(
        f"{model_name}__alias_lock", tags={"holder": "busy", "acquired_at": "9e12"}
    )
    with pytest.raises(PromotionConflictError, match=r"locked by another move.*holder busy"):
        MlflowRegistryHook(lock_wait_seconds=1).move_champion(model_name, v1, v3)
    assert hook.alias_version(model_name, "champion") == v3


def test_rollback_restores_previous_and_records_who_and_why(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    v1 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v1, None)
    v2 = register_version(hook.client, model_name)
    hook.move_champion(model_name, v2, v1)
    context = {"ti": FakeTI(dag_id="churn_model_rollback", task_id="rollback")}

    def rollback(**kwargs: Any) -> dict[str, Any]:
        op = RollbackModelOperator(task_id="rollback", model_name=model_name, **kwargs)
        return op.execute(context)  # type: ignore[arg-type]

    with pytest.raises(InvalidParameterError, match="reason is required"):
        rollback(reason=" ")
    assert rollback(reason="v2 over-predicts churn in the north") == {
        "model_name": model_name,
        "version": v1,
        "previous": v2,
    }
    assert hook.alias_version(model_name, "champion") == v1
    assert hook.alias_version(model_name, "previous") == v2
    tags = hook.client.get_model_version(model_name, v1).tags
    assert tags["rollback.from"] == v2
    assert tags["rollback.reason"] == "v2 over-predicts churn in the north"
    assert hook.client.get_model_version(model_name, v2).tags["rolled_back"] == "true"

    # a retry of the same run does not undo it ("previous" now names the replaced version)
    assert rollback(reason="v2 over-predicts churn in the north")["version"] == v1
    assert hook.alias_version(model_name, "champion") == v1

    # an explicit version, and the errors that name what is wrong
    context["ti"] = FakeTI(dag_id="churn_model_rollback", task_id="rollback", run_id="manual__2")
    assert rollback(version=v2, reason="false alarm")["version"] == v2
    context["ti"] = FakeTI(dag_id="churn_model_rollback", task_id="rollback", run_id="manual__3")
    with pytest.raises(InvalidParameterError, match=f"version {v2} of {model_name} already"):
        rollback(version=v2, reason="again")
    with pytest.raises(InvalidParameterError, match="version 99 of model"):
        rollback(version="99", reason="typo")
    with pytest.raises(InvalidParameterError, match="version number or 'previous'"):
        rollback(version="latest", reason="typo")


def test_hook_reads_the_tracking_uri_from_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_PROD",
        '{"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, '
        '"extra": {"registry_uri": "databricks-uc"}}',
    )
    assert MlflowRegistryHook("mlflow_prod").uris == (
        "http://mlflow.internal:5000",
        "databricks-uc",
    )
    # the jobs the DAG launches are pointed at the same server and registry
    assert MlflowRegistryHook("mlflow_prod").job_environment() == {
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "MLFLOW_REGISTRY_URI": "databricks-uc",
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DBX", '{"conn_type": "mlflow", "host": "databricks"}')
    assert MlflowRegistryHook("mlflow_dbx").uris == ("databricks", None)
    # no connection: the environment (the local stack)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")
    assert MlflowRegistryHook("mlflow_missing").uris[1] == "sqlite:///registry.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(InvalidParameterError, match="mlflow_missing"):
        _ = MlflowRegistryHook("mlflow_missing").uris


def test_a_version_decided_before_is_not_decided_again(
    model_name: str, hook: MlflowRegistryHook
) -> None:
    """Training reused a version trained on the same inputs: the gate leaves its decision and
    tags alone (both branches skipped) unless forced."""
    v1 = register_version(hook.client, model_name)
    store: dict[tuple[str, str], Any] = {}
    assert gate(evaluation_result(hook.client, model_name, v1, 0.81, 0.78), store) == (
        "approve_promotion"
    )
    auto_approve(store)
    promote(store)
    before = hook.client.get_model_version(model_name, v1).tags
    again: dict[tuple[str, str], Any] = {}
    evaluation = evaluation_result(hook.client, model_name, v1, 0.70, 0.78, v1, 0.70)
    assert gate(evaluation, again) is None
    assert hook.client.get_model_version(model_name, v1).tags == before
    forced = gate(evaluation, again, force_promote=True, force_reason="re-decide on purpose")
    assert forced == "approve_promotion"
