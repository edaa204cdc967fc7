"""Registry conventions that must hold on the workspace and the Unity Catalog registry."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_jobs.training import tracking


@pytest.mark.parametrize("name", ["churn", "churn-v2", "main.ml.churn", "prod_cat.ml_01.churn"])
def test_workspace_and_unity_catalog_names_are_accepted(name: str) -> None:
    assert tracking.check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "main.churn", "a.b.c.d", "main.ml.churn-v2", "churn'; --", "../churn", "ml churn"]
)
def test_invalid_model_names_are_named(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid registered model name {name!r}")):
        tracking.check_model_name(name)


class SearchByRunOnly:
    """A registry like Unity Catalog's: search filters by ``run_id`` and returns no tags."""

    def __init__(
        self, versions: list[tuple[str, str, str]], aliases: dict[str, list[str]] | None = None
    ) -> None:
        self.versions = versions
        self.aliases = aliases or {}
        self.filters: list[str] = []
        self.deleted: list[tuple[str, str]] = []

    def search_model_versions(self, filter_string: str) -> list[Any]:
        self.filters.append(filter_string)
        key, _, value = filter_string.partition(" = ")
        assert key == "run_id", "Unity Catalog searches by name or run_id only"
        return [
            SimpleNamespace(
                name=name, version=version, run_id=run, aliases=self.aliases.get(version, [])
            )
            for name, version, run in self.versions
            if run == value.strip("'") and (name, version) not in self.deleted
        ]

    def delete_model_version(self, name: str, version: str) -> None:
        self.deleted.append((name, version))


def test_the_version_of_a_task_instance_is_found_by_its_runs() -> None:
    client = SearchByRunOnly(
        [("main.ml.churn", "3", "r1"), ("main.ml.churn", "5", "r2"), ("other", "1", "r2")]
    )
    found = tracking.find_registered_version(client, "main.ml.churn", ["r2", "r1"])
    assert found is not None and found.version == "3"
    assert tracking.find_registered_version(client, "other", ["r1"]) is None
    assert tracking.find_registered_version(client, "main.ml.churn", []) is None


def test_a_version_registered_again_from_its_run_is_deleted_and_the_first_kept() -> None:
    """A lost answer made the client resend the creation: the later versions are duplicates,
    deleted unless an alias points at one."""
    client = SearchByRunOnly(
        [("churn", "4", "r1"), ("churn", "12", "r1"), ("churn", "6", "r1"), ("other", "5", "r1")],
        aliases={"12": ["champion"]},
    )
    kept = tracking.keep_first_version(client, "Churn", "r1")
    assert kept is not None and kept.version == "4"
    assert client.deleted == [("churn", "6")]
    assert tracking.keep_first_version(client, "churn", "r2") is None
