"""projects.export in the control layer (fake driver): who may export, who may have the secret
values, --strict's refusal, and the answer's shape."""

from __future__ import annotations

import pytest
import yaml

from mariposa.control import Caller
from mariposa.errors import BadRequest, ExportRefused, Forbidden
from tests.unit.conftest import ROOT, Core

MANIFEST = """services:
  web:
    image: busybox
    command: sleep 1000
    min_healthy_time: 2
    secrets: [api_key]
"""
ANN = Caller(transport="unix", uid=1001, gid=4242, pid=11)
VALUE = "k3y-value-123"


async def setup(core: Core) -> None:
    await core.control.secrets.set(ROOT, "p", "api_key", VALUE)
    await core.control.projects.add(ROOT, "p", MANIFEST)
    await core.control.access.user_add(ROOT, "ann", [1001])


async def test_export_answers_files_and_report_with_secrets_as_references(core: Core):
    await setup(core)
    out = await core.control.exports.export(ROOT, "p", "kubernetes")
    assert list(out["files"]) == ["p.k8s.yaml"] and out["project"] == "p" and not out["with_secret_values"]
    assert VALUE not in out["files"]["p.k8s.yaml"]
    [secret] = [d for d in yaml.safe_load_all(out["files"]["p.k8s.yaml"]) if d["kind"] == "Secret"]
    assert "stringData" not in secret
    assert [e["path"] for e in out["entries"]] == ["services", "services.web", "services.web.image",
                                                   "services.web.command", "services.web.min_healthy_time",
                                                   "services.web.secrets"]
    assert out["counts"] == {"mapped": 6, "changed": 0, "not mapped": 0}
    assert out["report"].startswith("conversion report for")


async def test_secret_values_need_secret_reveal(core: Core):
    await setup(core)
    shown = await core.control.exports.export(ROOT, "p", "kubernetes", with_secret_values=True)
    [secret] = [d for d in yaml.safe_load_all(shown["files"]["p.k8s.yaml"]) if d["kind"] == "Secret"]
    assert secret["stringData"] == {"value": VALUE}
    events = await core.control.events.list(ROOT, project="p")
    assert any(e["type"] == "secret.reveal" and "in an export" in e["message"] for e in events)
    # a developer reads and exports the project, and may not have the values
    await core.control.access.grant(ROOT, "ann", "developer", project="p")
    plain = await core.control.exports.export(ANN, "p", "compose")
    assert VALUE not in plain["files"]["compose.yaml"]
    with pytest.raises(Forbidden, match="secret:reveal"):
        await core.control.exports.export(ANN, "p", "compose", with_secret_values=True)
    # an admin may
    await core.control.access.grant(ROOT, "ann", "admin", project="p")
    got = await core.control.exports.export(ANN, "p", "compose", with_secret_values=True)
    assert got["files"]["secrets/api_key"] == VALUE


async def test_strict_refuses_with_every_unrepresentable_field(core: Core):
    await setup(core)
    with pytest.raises(ExportRefused, match="services.web.min_healthy_time: compose has no rollout") as refused:
        await core.control.exports.export(ROOT, "p", "compose", strict=True)
    assert refused.value.status == 422
    assert [d["path"] for d in refused.value.details] == ["services.web.min_healthy_time"]
    assert (await core.control.exports.export(ROOT, "p", "kubernetes", strict=True))["counts"]["not mapped"] == 0


async def test_bad_arguments_name_the_field(core: Core):
    await setup(core)
    with pytest.raises(BadRequest, match="'to' must be one of compose, swarm-stack, nomad, kubernetes"):
        await core.control.exports.export(ROOT, "p", "helm")
    with pytest.raises(BadRequest, match="'strict' must be true or false"):
        await core.control.exports.export(ROOT, "p", "compose", strict="yes")
