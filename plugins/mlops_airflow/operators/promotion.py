"""The promotion stage: gate, optional human approval, compare-and-set promotion, rejection, and
rollback of the registered model's ``@champion``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import BaseOperator

from mlops_airflow.assets import emit_asset_events
from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.hooks.mlflow_registry import PREVIOUS, MlflowRegistryHook
from mlops_airflow.operators.train_model import MlflowModelVersionLink, push_model_version_url
from mlops_airflow.utils import as_bool, json_mapping, mlflow_run_url, resolve_model_name

if TYPE_CHECKING:
    from airflow.sdk import Context

REGISTRY_POOL = "mlflow_registry"
XCOM_DECISION = "decision"
XCOM_RESPONSE = "response"
APPROVE, REJECT = "Promote", "Reject"


class _RegistryMixin:
    """The MLflow hook, built lazily from ``mlflow_conn_id``."""

    mlflow_conn_id: str

    @cached_property
    def registry(self) -> MlflowRegistryHook:
        return MlflowRegistryHook(self.mlflow_conn_id)


def run_link(experiment_id: str | None, mlflow_run_id: str | None) -> str:
    """A link to an MLflow run: the UI when its URL is configured, else ``runs:/<id>``."""
    if not mlflow_run_id:
        return "-"
    return mlflow_run_url(experiment_id, mlflow_run_id) or f"runs:/{mlflow_run_id}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _triggered_by(context: Context) -> str:
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    return str(user or "unknown")


class ModelGateOperator(_RegistryMixin, BaseBranchOperator):
    """
    Decide whether a candidate is promoted, from the evaluation's metrics and the thresholds
    of ``promotion_config.json`` (overridden per run), applied with
    ``mlflow.validate_evaluation_results``: an absolute floor, a minimum improvement over the
    champion, and better than the baseline. With no champion, the floor and the baseline decide.

    Branches to ``approval_task_id`` when the gate passes or ``force_promote`` overrides it,
    else to ``reject_task_id``. A candidate decided before (training reused a version trained
    on the same inputs, which already has a ``validation_status``) is not decided again: both
    branches are skipped and its tags stay as they are, unless ``force_promote``. Tags the
    version with the gate's figures, logs ``evaluation/decision.md`` to the candidate's run
    and pushes the decision (XCom ``decision``) for the tasks downstream.

    :param evaluation: The evaluation (``EvaluateModelOperator``'s result). (templated)
    :param thresholds: Overrides of the promotion thresholds. (templated)
    :param force_promote: Promote even if the gate fails; needs ``force_reason``. (templated)
    :param force_reason: Why the gate is overridden (recorded in the tags). (templated)
    :param approval_task_id: Task that approves (or asks a person to) and promotes.
    :param reject_task_id: Task that records the rejection.
    :param mlflow_conn_id: Airflow connection to MLflow.
    """

    template_fields: Sequence[str] = (
        "evaluation",
        "thresholds",
        "force_promote",
        "force_reason",
    )

    def __init__(
        self,
        *,
        evaluation: Any,
        approval_task_id: str,
        reject_task_id: str,
        thresholds: Mapping[str, Any] | str | None = None,
        force_promote: bool | str = False,
        force_reason: str = "",
        mlflow_conn_id: str = MlflowRegistryHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.evaluation = evaluation
        self.thresholds = thresholds
        self.force_promote = force_promote
        self.force_reason = force_reason
        self.approval_task_id = approval_task_id
        self.reject_task_id = reject_task_id
        self.mlflow_conn_id = mlflow_conn_id

    def choose_branch(self, context: Context) -> str | None:
        from mlops_jobs.churn import PROMOTION_CONFIG
        from mlops_jobs.evaluation.gate import GateConfig, GateConfigError, decide, markdown_table

        evaluation = self.evaluation
        if not isinstance(evaluation, Mapping) or "candidate" not in evaluation:
            raise InvalidParameterError(f"evaluation has no candidate: {evaluation!r}")
        force = as_bool(self.force_promote, "force_promote")
        reason = str(self.force_reason or "").strip()
        if force and not reason:
            raise InvalidParameterError(
                "force_promote is set but force_reason is empty: say why the gate is overridden"
            )
        try:
            config = GateConfig.load(
                PROMOTION_CONFIG, overrides=json_mapping(self.thresholds, "thresholds")
            )
        except GateConfigError as err:
            raise InvalidParameterError(f"promotion thresholds: {err}") from None

        candidate, champion = evaluation["candidate"], evaluation.get("champion")
        name, version = evaluation["model_name"], str(candidate["version"])
        earlier = self.registry.client.get_model_version(name, version).tags.get(
            "validation_status"
        )
        if earlier and not force:
            self.log.info(
                "Version %s of %s was decided before (validation_status=%s): training reused it "
                "for unchanged inputs, so nothing is decided again (force_promote to promote it)",
                version,
                name,
                earlier,
            )
            return None  # skips every branch
        decision = decide(
            config,
            candidate["metrics"],
            evaluation["baseline"]["metrics"],
            champion["metrics"] if champion else None,
            candidate_is_champion=champion is not None
            and champion["version"] == candidate["version"],
        )
        table = markdown_table(evaluation, decision)
        if force and not decision.passed:
            table += f"\n\n**Overridden**: `force_promote` with reason: {reason}"
        metric = decision.metric

        def figure(model: Mapping[str, Any] | None) -> str:
            value = (model or {}).get("metrics", {}).get(metric)
            return "-" if value is None else f"{float(value):.6f}"

        self.registry.set_version_tags(
            name,
            version,
            {
                "validation.metric": metric,
                "validation.candidate": figure(candidate),
                "validation.champion_version": champion["version"] if champion else "none",
                "validation.champion": figure(champion),
                "validation.baseline": figure(evaluation["baseline"]),
                "validation.baseline_mlflow_run_id": evaluation["baseline"]["mlflow_run_id"],
                "validation.checks": ", ".join(
                    f"{c.name}={'passed' if c.passed else 'failed'}" for c in decision.checks
                ),
                "validation.thresholds": str(config.as_dict()),
            },
        )
        self.registry.log_text(
            candidate["mlflow_run_id"],
            f"# Promotion gate for {name} version {version}\n\n{table}\n",
            "evaluation/decision.md",
        )
        record = {
            "model_name": name,
            "candidate_version": version,
            "candidate_mlflow_run_id": candidate["mlflow_run_id"],
            "champion_version": champion["version"] if champion else None,
            "baseline_mlflow_run_id": evaluation["baseline"]["mlflow_run_id"],
            **decision.as_dict(),
            "failed_checks": [f"{c.name}: {c.detail}" for c in decision.failed],
            "forced": force and not decision.passed,
            "force_reason": reason if force else "",
            "table": table,
        }
        context["ti"].xcom_push(key=XCOM_DECISION, value=record)
        self.log.info("Gate for %s version %s:\n%s", name, version, table)
        if not decision.passed and not force:
            return self.reject_task_id
        return self.approval_task_id


class PromotionApprovalOperator(HITLBranchOperator):
    """
    Approve a candidate that passed the gate. With ``require_approval`` a person decides in
    the Airflow UI ("Required Actions") or through the REST API, shown the gate's table:
    "Promote" continues to ``promote_task_id``, "Reject" to ``reject_task_id``. Without it the
    candidate is approved at once. The response (option, who, when) is pushed as XCom
    ``response``.

    :param require_approval: Wait for a person. (templated)
    :param promote_task_id: Task that promotes.
    :param reject_task_id: Task that records the rejection in review.
    """

    template_fields: Sequence[str] = (*HITLBranchOperator.template_fields, "require_approval")

    def __init__(
        self,
        *,
        promote_task_id: str,
        reject_task_id: str,
        require_approval: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: promote_task_id, REJECT: reject_task_id},
            multiple=False,
            **kwargs,
        )
        self.require_approval = require_approval
        self.promote_task_id = promote_task_id

    def execute(self, context: Context) -> Any:
        if as_bool(self.require_approval, "require_approval"):
            return super().execute(context)
        self.log.info("No approval required (require_approval is false): promoting")
        context["ti"].xcom_push(
            key=XCOM_RESPONSE, value={"option": APPROVE, "by": None, "at": _now(), "auto": True}
        )
        return self.do_branch(context, self.promote_task_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            responded_at = event.get("responded_at")
            # No user: nobody answered within response_timeout and the default option applies.
            who = user.get("name") or user.get("id") or "nobody (timed out: default option)"
            context["ti"].xcom_push(
                key=XCOM_RESPONSE,
                value={
                    "option": (event.get("chosen_options") or [None])[0],
                    "by": who,
                    "at": str(getattr(responded_at, "isoformat", lambda: responded_at)()),
                    "auto": False,
                },
            )
        return super().execute_complete(context, event)


class _DecisionOperator(_RegistryMixin, BaseOperator):
    """Reads the gate's decision and the approval's response (if any) from XCom."""

    def __init__(
        self,
        *,
        gate_task_id: str,
        approval_task_id: str | None = None,
        mlflow_conn_id: str = MlflowRegistryHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gate_task_id = gate_task_id
        self.approval_task_id = approval_task_id
        self.mlflow_conn_id = mlflow_conn_id

    def read_decision(self, context: Context) -> tuple[dict[str, Any], dict[str, Any] | None]:
        ti = context["ti"]
        decision = ti.xcom_pull(task_ids=self.gate_task_id, key=XCOM_DECISION)
        if not isinstance(decision, Mapping) or "candidate_version" not in decision:
            raise InvalidParameterError(
                f"no gate decision from task {self.gate_task_id!r}: {decision!r}"
            )
        response = None
        if self.approval_task_id:
            response = ti.xcom_pull(task_ids=self.approval_task_id, key=XCOM_RESPONSE)
        return dict(decision), response


class PromoteModelOperator(_DecisionOperator):
    """
    Promote the gate's candidate: ``@challenger``, then ``@champion`` (compare-and-set against
    the champion it was evaluated with), the old champion keeping ``@previous``. The decision,
    the gate's figures, approval and override go into the version's tags and description. A
    champion that moved since the evaluation fails the task (``PromotionConflictError``, no
    retry) without touching the registry. Run it in the ``mlflow_registry`` pool (one slot).

    :param gate_task_id: The gate, whose decision (XCom ``decision``) is acted on.
    :param approval_task_id: The approval task, whose response is recorded.
    :param mlflow_conn_id: Airflow connection to MLflow.
    """

    operator_extra_links = (MlflowModelVersionLink(),)

    def execute(self, context: Context) -> dict[str, Any]:
        decision, response = self.read_decision(context)
        name, version = decision["model_name"], decision["candidate_version"]
        if response is not None and response.get("option") != APPROVE:
            raise InvalidParameterError(
                f"version {version} of {name} was not approved: {response!r}"
            )
        move = self.registry.move_champion(name, version, decision["champion_version"])
        status = "overridden" if decision.get("forced") else "passed"
        ti = context["ti"]
        tags = {
            "validation_status": status,
            "promotion.decision": "promoted" if move.moved else "already champion",
            "promotion.promoted_over": move.previous or "none",
            "promotion.at": _now(),
            "promotion.dag_run": f"{ti.dag_id}/{ti.run_id}",
        }
        if decision.get("forced"):
            tags["promotion.forced"] = "true"
            tags["promotion.force_reason"] = decision["force_reason"]
            tags["validation.failed_checks"] = "; ".join(decision["failed_checks"])
        if response is not None and response.get("auto"):
            tags["approval"] = "not required"
        elif response is not None:
            tags["approval"] = "approved"
            tags["approval.by"] = response["by"]
            tags["approval.at"] = response["at"]
        self.registry.set_version_tags(name, version, tags)
        candidate_run = self.registry.client.get_run(decision["candidate_mlflow_run_id"])
        experiment = candidate_run.info.experiment_id
        headline = (
            f"**Promoted to @champion** {tags['promotion.at']} by `{tags['promotion.dag_run']}`"
        )
        if tags.get("approval") == "approved":
            headline += f", approved by {tags['approval.by']}"
        if decision.get("forced"):
            headline += f", gate overridden: {decision['force_reason']}"
        self.registry.append_description(
            name,
            version,
            "\n".join(
                [
                    headline,
                    "",
                    decision["table"],
                    "",
                    f"Candidate run: {run_link(experiment, decision['candidate_mlflow_run_id'])}; "
                    f"baseline run: {run_link(experiment, decision['baseline_mlflow_run_id'])}",
                ]
            ),
        )
        result = {"model_name": name, "version": version, "previous": move.previous}
        push_model_version_url(context, name, version)
        emit_asset_events(context, self.outlets, {**result, "action": "promote"})
        return result


class RejectModelOperator(_DecisionOperator):
    """
    Record that the candidate is not promoted: ``validation_status=rejected`` with the failed
    checks (or the approver's rejection) in the version's tags and description. ``@champion``
    is untouched and the task succeeds: a rejection is a decision, not a failure.

    :param gate_task_id: The gate, whose decision (XCom ``decision``) is acted on.
    :param approval_task_id: The approval task, whose response is recorded.
    :param mlflow_conn_id: Airflow connection to MLflow.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        decision, response = self.read_decision(context)
        name, version = decision["model_name"], decision["candidate_version"]
        tags: dict[str, Any] = {"validation_status": "rejected", "rejection.at": _now()}
        if response is not None and response.get("option") == REJECT:
            tags["rejected_by"] = "approval"
            tags["approval"] = "rejected"
            tags["approval.by"] = response["by"]
            tags["approval.at"] = response["at"]
            reason = f"rejected in review by {response['by']}"
        else:
            tags["rejected_by"] = "gate"
            tags["validation.failed_checks"] = "; ".join(decision["failed_checks"])
            reason = "failed the gate: " + "; ".join(decision["failed_checks"])
        self.registry.set_version_tags(name, version, tags)
        self.registry.append_description(
            name,
            version,
            f"**Not promoted** ({tags['rejection.at']}): {reason}\n\n{decision['table']}",
        )
        self.log.info("%s version %s is not promoted: %s", name, version, reason)
        return {"model_name": name, "version": version, "rejected": reason}


class RollbackModelOperator(_RegistryMixin, BaseOperator):
    """
    Move ``@champion`` back to an earlier version (default: ``@previous``) with the same
    compare-and-set as a promotion; the replaced champion becomes ``@previous``. Who and why go
    into both versions' tags. Run it in the ``mlflow_registry`` pool.

    :param model_name: Registered model; default as ``TrainModelOperator``'s. (templated)
    :param version: Version number, or ``previous`` for ``@previous``. (templated)
    :param reason: Why (required). (templated)
    :param mlflow_conn_id: Airflow connection to MLflow.
    """

    operator_extra_links = (MlflowModelVersionLink(),)
    template_fields: Sequence[str] = ("model_name", "version", "reason")

    def __init__(
        self,
        *,
        reason: str,
        model_name: str | None = None,
        version: str | int = PREVIOUS,
        mlflow_conn_id: str = MlflowRegistryHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.reason = reason
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        name = resolve_model_name(self.model_name)
        reason = str(self.reason or "").strip()
        if not reason:
            raise InvalidParameterError("reason is required for a rollback")
        requested = str(self.version or PREVIOUS).strip().lstrip("@")
        ti = context["ti"]
        dag_run = f"{ti.dag_id}/{ti.run_id}"
        champion = self.registry.alias_version(name, "champion")
        if (
            champion
            and self.registry.get_version(name, champion).tags.get("rollback.dag_run") == dag_run
        ):
            # A retry or a cleared task of a rollback that already happened: "previous" now
            # names the version it replaced, so moving again would undo the rollback.
            self.log.info(
                "This run already restored version %s of %s; nothing to do", champion, name
            )
            return {
                "model_name": name,
                "version": champion,
                "previous": self.registry.alias_version(name, PREVIOUS),
            }
        if requested == PREVIOUS:
            target = self.registry.alias_version(name, PREVIOUS)
            if target is None:
                raise InvalidParameterError(f"{name} has no @previous version to roll back to")
        elif requested.isdigit():
            target = requested
        else:
            raise InvalidParameterError(
                f"version must be a version number or 'previous', got {self.version!r}"
            )
        if target == champion:
            raise InvalidParameterError(f"version {target} of {name} already is @champion")
        move = self.registry.move_champion(name, target, champion)
        who = _triggered_by(context)
        stamp = _now()
        self.registry.set_version_tags(
            name,
            target,
            {
                "rollback.from": champion or "none",
                "rollback.by": who,
                "rollback.reason": reason,
                "rollback.at": stamp,
                "rollback.dag_run": dag_run,
            },
        )
        if champion:
            self.registry.set_version_tags(
                name,
                champion,
                {"rolled_back": "true", "rollback.by": who, "rollback.reason": reason},
            )
        self.registry.append_description(
            name,
            target,
            f"**Restored as @champion** {stamp} by {who} "
            f"(replacing {'version ' + champion if champion else 'no champion'}): {reason}",
        )
        result = {"model_name": name, "version": target, "previous": move.previous}
        push_model_version_url(context, name, target)
        emit_asset_events(context, self.outlets, {**result, "action": "rollback"})
        self.log.info(
            "%s@champion rolled back: version %s -> %s (%s)", name, champion, target, reason
        )
        return result
