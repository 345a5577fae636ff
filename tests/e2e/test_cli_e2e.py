"""The CLI against a real server and sim agent, through the SDK, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldplate.cli.main import app
from tests.e2e.conftest import Cluster


@pytest.fixture
def cli(sim_agent: Cluster, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLDPLATE_URL", sim_agent.url)
    monkeypatch.setenv("COLDPLATE_API_KEY", sim_agent.admin_key)
    return CliRunner()


def test_cli_create_wait_list_events_terminate(cli: CliRunner) -> None:
    created = cli.invoke(app, ["instances", "create", "--name", "cli-1", "--gpu", "h100", "--gpu-count", "2",
                               "--label", "team=ml", "--port", "8080", "--wait", "--json"])
    assert created.exit_code == 0, created.output
    inst = json.loads(created.output)
    assert inst["status"] == "ready" and inst["labels"] == {"team": "ml"}
    assert inst["ports"][0]["internal_port"] == 8080

    table = cli.invoke(app, ["instances", "list", "--label", "team=ml"])
    assert table.exit_code == 0 and "cli-1" in table.output and "ready" in table.output
    offers = cli.invoke(app, ["offers", "--gpu", "H100", "--json"])
    assert [o["gpus_free"] for o in json.loads(offers.output)] == [6, 8]  # same price: best fit first
    assert cli.invoke(app, ["instances", "terminate", "cli-1"]).exit_code == 0
    waited = cli.invoke(app, ["instances", "wait", inst["id"], "--status", "terminated", "--json"])
    assert json.loads(waited.output)["status"] == "terminated"
    events = json.loads(cli.invoke(app, ["instances", "events", inst["id"], "--json"]).output)
    assert [e["to_status"] for e in events] == ["provisioning", "starting", "ready", "draining", "terminated"]


def test_cli_errors_exit_1_with_code(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "--name", "x", "--gpu", "h100", "--gpu-count", "64"])
    assert result.exit_code == 1 and "error [no_capacity]" in result.output
    bad = cli.invoke(app, ["instances", "get", "nope"])
    assert bad.exit_code == 1 and "error [not_found]" in bad.output


def test_cli_admin_commands(cli: CliRunner) -> None:
    project = json.loads(cli.invoke(app, ["projects", "create", "lab", "--json"]).output)
    key = json.loads(cli.invoke(app, ["keys", "create", "--project", project["id"], "--name", "ci",
                                      "--scope", "instances:read", "--json"]).output)
    assert key["key"].startswith("cp_") and key["scopes"] == ["instances:read"]
    hosts = json.loads(cli.invoke(app, ["hostnodes", "list", "--json"]).output)
    drained = json.loads(cli.invoke(app, ["hostnodes", "drain", hosts[0]["id"], "--json"]).output)
    assert drained["status"] == "draining"
    types = json.loads(cli.invoke(app, ["gpu-types", "--json"]).output)
    assert any(t["slug"] == "h100-80gb" and t["availability"] for t in types)


def test_cli_volumes_and_cloud_init(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "setup.yaml"
    config.write_text("#cloud-config\nruncmd:\n  - echo hi\n")
    created = cli.invoke(app, ["instances", "create", "--name", "cli-vol", "--gpu", "h100", "--volume", "data:/data",
                               "--volume", "models:/models:ro", "--cloud-init", str(config), "--json"])
    assert created.exit_code == 0, created.output
    inst = json.loads(created.output)
    assert inst["name"] == "cli-vol"  # found by hand: the volume's name once took the instance's place
    assert inst["volumes"] == [{"name": "data", "mount_path": "/data", "readonly": False},
                               {"name": "models", "mount_path": "/models", "readonly": True}]
    assert inst["cloud_init"] == {"runcmd": ["echo hi"]}
    bad = cli.invoke(app, ["instances", "create", "--name", "x", "--gpu", "h100", "--volume", "data"])
    assert bad.exit_code == 2 and "NAME:/MOUNT/PATH" in bad.output
