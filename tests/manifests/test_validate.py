"""The validation helper itself: it must catch what it claims to catch."""

from __future__ import annotations

from validate import load_schema, strip_nulls, validate_document

KSVC = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "x", "creationTimestamp": None},
    "spec": {"template": {"spec": {"containers": [{"image": "example/x:1"}]}}},
}


def test_strip_nulls_is_recursive() -> None:
    assert strip_nulls({"a": None, "b": [{"c": None, "d": 1}]}) == {"b": [{"d": 1}]}


def test_valid_document_has_no_errors() -> None:
    assert validate_document(KSVC) == []


def test_unknown_field_in_crd_is_an_error() -> None:
    doc = {**KSVC, "spec": {"template": {"spec": {"containers": [{"image": "x", "bogus": 1}]}}}}
    assert any("bogus" in e for e in validate_document(doc))


def test_crd_metadata_is_checked_against_objectmeta() -> None:
    doc = {**KSVC, "metadata": {"name": "x", "annotations": {"a": 1}}}
    assert any("metadata/annotations/a" in e for e in validate_document(doc))


def test_unknown_kind_is_an_error() -> None:
    assert validate_document({"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {}})


def test_core_and_rbac_lookup() -> None:
    assert load_schema("v1", "Secret")["properties"]["kind"]["enum"] == ["Secret"]
    assert load_schema("rbac.authorization.k8s.io/v1", "Role")["properties"]["kind"]["enum"] == [
        "Role"
    ]
    assert load_schema("batch/v1", "CronJob")["properties"]["kind"]["enum"] == ["CronJob"]
