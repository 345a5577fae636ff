"""Billing end to end: a real server (its meter loop included) and a sim agent, through the SDK and CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from coldplate import Client
from coldplate.cli.main import app
from tests.e2e.conftest import Cluster

MINUTE = "0.036667"  # a run's first minute at 2.20 $/h (the fleet's price; its disk costs nothing)


def test_cost_so_far_grows_and_the_ledger_is_right_after_terminate(sim_agent: Cluster,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(sim_agent.url, sim_agent.admin_key)
    inst = client.create_instance(name="bill-1", gpu="H100", region="eu")
    assert inst.cost_so_far == "0.000000"  # nothing before ready
    assert client.wait_instance(inst.id, status="ready", timeout=30).cost_so_far == MINUTE
    client.stop_instance(inst.id)
    client.wait_instance(inst.id, status="stopped", timeout=30)
    client.start_instance(inst.id)
    second = client.wait_instance(inst.id, status="ready", timeout=30)
    assert second.cost_so_far == "0.073334"  # the first run's entry and the live minimum of the second
    client.terminate_instance(inst.id)
    done = client.wait_instance(inst.id, status="terminated", timeout=30)

    entries = client.usage(instance_id=inst.id)
    assert [(e.kind, e.seconds, e.amount, e.rate_per_hour) for e in entries] == [
        ("compute", 60, MINUTE, "2.200000"), ("compute", 60, MINUTE, "2.200000")]
    assert done.cost_so_far == "0.073334"
    assert client.costs().total == "0.073334"

    monkeypatch.setenv("COLDPLATE_URL", sim_agent.url)
    monkeypatch.setenv("COLDPLATE_API_KEY", sim_agent.admin_key)
    cli = CliRunner()
    usage = cli.invoke(app, ["usage", "--instance", inst.id, "--json"])
    assert usage.exit_code == 0, usage.output
    assert [e["amount"] for e in json.loads(usage.output)] == [MINUTE, MINUTE]
    exported = cli.invoke(app, ["costs", "--group-by", "gpu", "--csv"])
    assert list(csv.reader(io.StringIO(exported.output)))[-1] == ["total", "120", "0.073334"]


def test_the_meter_terminates_an_instance_over_its_budget(sim_agent: Cluster) -> None:
    client = Client(sim_agent.url, sim_agent.admin_key)
    inst = client.create_instance(name="bill-2", gpu="H100", budget_limit="0.03")  # below one minute's cost
    client.wait_instance(inst.id, status="ready", timeout=30)
    done = client.wait_instance(inst.id, status="terminated", timeout=30)
    assert done.status_reason == "budget_exceeded"
    thresholds = [e.model_extra["data"]["threshold"] for e in client.instance_events(inst.id)  # type: ignore[index]
                  if e.type == "instance.budget_threshold"]
    assert thresholds == [50, 80, 100]


def test_cli_budget_extend_and_project_budget(sim_agent: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDPLATE_URL", sim_agent.url)
    monkeypatch.setenv("COLDPLATE_API_KEY", sim_agent.admin_key)
    cli = CliRunner()
    created = cli.invoke(app, ["instances", "create", "--name", "bill-3", "--gpu", "h100", "--duration-hours", "2",
                               "--budget-limit", "50", "--wait", "--json"])
    assert created.exit_code == 0, created.output
    inst = json.loads(created.output)
    assert (inst["budget_limit"], inst["duration_hours"], inst["cost_so_far"]) == ("50.000000", 2, "4.400000")
    extended = json.loads(cli.invoke(app, ["instances", "extend", "bill-3", "--hours", "1", "--json"]).output)
    assert extended["duration_hours"] == 3 and extended["cost_so_far"] == "6.600000"
    assert extended["expires_at"] > inst["expires_at"]
    cleared = json.loads(cli.invoke(app, ["instances", "budget", "bill-3", "--clear", "--json"]).output)
    assert cleared["budget_limit"] is None
    neither = cli.invoke(app, ["instances", "budget", "bill-3"])
    assert neither.exit_code == 2

    project = json.loads(cli.invoke(app, ["projects", "create", "capped", "--json"]).output)
    capped = cli.invoke(app, ["projects", "budget", project["id"], "--monthly", "500", "--on-exceeded",
                              "stop_instances", "--json"])
    assert json.loads(capped.output)["on_budget_exceeded"] == "stop_instances", capped.output
    removed = json.loads(cli.invoke(app, ["projects", "budget", project["id"], "--remove", "--json"]).output)
    assert removed["monthly_budget"] is None
    bad = cli.invoke(app, ["projects", "budget", project["id"], "--monthly", "500", "--on-exceeded", "panic"])
    assert bad.exit_code == 1 and "error [validation_error]" in bad.output
