"""/openapi.json describes every answer of every public route: a schema for each success that has a
body (CSV as text/csv where a route answers it) and the problem document for 4xx and 5xx."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

BODYLESS = {"204"}


def _operations(client: TestClient) -> dict[tuple[str, str], dict[str, Any]]:
    spec = client.get("/openapi.json").json()
    return {(method.upper(), path): op for path, item in spec["paths"].items() for method, op in item.items()}


def test_every_operation_describes_its_success_and_its_problems(client: TestClient) -> None:
    operations = _operations(client)
    for name in ("/v1/webhooks", "/v1/webhooks/{webhook_id}/deliveries", "/v1/events", "/v1/usage", "/v1/costs",
                 "/v1/join-tokens", "/v1/join-tokens/{token_id}", "/v1/instances/{ref}/extend",
                 "/v1/projects/{project_id}"):
        assert any(path == name for _, path in operations), name
    for (method, path), op in operations.items():
        if not path.startswith("/v1/"):
            continue
        success = [code for code in op["responses"] if code.startswith("2")]
        assert len(success) == 1, (method, path, success)
        if success[0] not in BODYLESS:
            schemas = [c.get("schema", {}) for c in op["responses"][success[0]]["content"].values()]
            assert any(s.get("$ref") or s.get("type") for s in schemas), (method, path, schemas)
        for family in ("4XX", "5XX"):
            assert "application/problem+json" in op["responses"][family]["content"], (method, path, family)


def test_path_ids_of_the_new_routes_are_patterned(client: TestClient) -> None:
    for (method, path), op in _operations(client).items():
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"].get("pattern") == "^[A-Za-z0-9_.-]{1,100}$", (method, path, param["name"])


def test_usage_and_costs_describe_csv_and_json(client: TestClient) -> None:
    operations = _operations(client)
    for path, model in (("/v1/usage", "UsageList"), ("/v1/costs", "CostsOut")):
        content = operations[("GET", path)]["responses"]["200"]["content"]
        assert content["text/csv"]["schema"] == {"type": "string"}
        assert content["application/json"]["schema"]["$ref"].endswith("/" + model)
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"cost_so_far", "budget_limit", "duration_hours"} <= set(spec["InstanceOut"]["properties"])
    assert {"monthly_budget", "on_budget_exceeded"} <= set(spec["ProjectOut"]["properties"])
    assert "secret" in spec["WebhookCreated"]["properties"] and "secret" not in spec["WebhookOut"]["properties"]
    assert "token" in spec["JoinTokenCreated"]["properties"] and "token" not in spec["JoinTokenOut"]["properties"]
