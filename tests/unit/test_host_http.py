"""The local host serves HTTP triggers as the Functions host does: routes, methods, keys, requests, responses."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from stack.host import Host
from stack.keys import HostKeys
from stack.testing import serving

KEYS = HostKeys(master="master-key-0123456789", function_keys={"default": "function-key-0123456789"},
                system_keys={"eventgrid_extension": "system-key-0123456789"})

calls: list[str] = []


def make_app() -> func.FunctionApp:
    """A fresh app per host: the host reads its functions once (get_functions() registers them)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="releases/{release_id}", methods=["GET", "POST"])
    def release(req: func.HttpRequest) -> func.HttpResponse:
        calls.append("release")
        document = {"method": req.method, "url": req.url, "route": dict(req.route_params), "params": dict(req.params),
                    "header": req.headers.get("x-custom"), "body": req.get_body().decode()}
        return func.HttpResponse(json.dumps(document), status_code=201, mimetype="application/json",
                                 headers={"x-release": req.route_params["release_id"]})

    @app.route(route="releases/latest", methods=["GET"])
    def latest(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("the literal route wins")

    @app.route(route="public", auth_level=func.AuthLevel.ANONYMOUS)
    def public(req: func.HttpRequest) -> str:
        return "anyone"

    @app.route(route="operator", auth_level=func.AuthLevel.ADMIN)
    def operator(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("master only")

    @app.route(route="broken", auth_level=func.AuthLevel.ANONYMOUS)
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("a bug")

    @app.route(route="items/{item_id:int}", auth_level=func.AuthLevel.ANONYMOUS)
    def item(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"id": req.route_params["item_id"], "function": context.function_name,
                                             "invocation": context.invocation_id}))

    @app.function_name("named_output")
    @app.route(route="named", auth_level=func.AuthLevel.ANONYMOUS, binding_arg_name="res")
    def named_output(req: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
        res.set(func.HttpResponse("set through an Out", status_code=202))

    return app


@pytest.fixture
def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, port: int, *, host_json: dict | None = None) -> Host:
    if host_json is not None:
        (tmp_path / "host.json").write_text(json.dumps(host_json))
    return Host(make_app(), settings={}, state_dir=tmp_path / "state", folder=tmp_path, url=f"http://127.0.0.1:{port}",
                host_keys=KEYS, workers=4)


@pytest.fixture
def base(tmp_path: Path, port: int) -> Iterator[str]:
    with serving(start(tmp_path, port), port=port) as url:
        yield url


def test_a_function_route_without_a_key_is_401_and_the_function_never_runs(base: str) -> None:
    calls.clear()
    assert httpx.get(f"{base}/api/releases/r1").status_code == 401
    assert httpx.get(f"{base}/api/releases/r1", params={"code": "wrong"}).status_code == 401
    assert httpx.get(f"{base}/api/releases/r1", headers={"x-functions-key": "wrong"}).status_code == 401
    assert calls == []


def test_a_function_key_in_the_header_or_the_code_parameter_passes(base: str) -> None:
    by_header = httpx.get(f"{base}/api/releases/r1", headers={"x-functions-key": KEYS.function_keys["default"]})
    by_code = httpx.get(f"{base}/api/releases/r1", params={"code": KEYS.function_keys["default"]})
    by_master = httpx.get(f"{base}/api/releases/r1", params={"code": KEYS.master})
    assert (by_header.status_code, by_code.status_code, by_master.status_code) == (201, 201, 201)


def test_the_function_gets_a_real_request_and_its_response_becomes_the_answer(base: str) -> None:
    answer = httpx.post(f"{base}/api/releases/r%2042?verbose=1", content=b'{"x": 1}',
                        headers={"x-functions-key": KEYS.function_keys["default"], "x-custom": "yes"})
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-release"] == "r 42"
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["route"] == {"release_id": "r 42"}
    assert seen["params"]["verbose"] == "1"
    assert seen["header"] == "yes"
    assert seen["body"] == '{"x": 1}'
    assert seen["url"].startswith(f"{base}/api/releases/r%2042?")


def test_a_literal_route_wins_over_a_parameter_and_methods_are_enforced(base: str) -> None:
    key = {"x-functions-key": KEYS.function_keys["default"]}
    assert httpx.get(f"{base}/api/releases/latest", headers=key).text == "the literal route wins"
    assert httpx.delete(f"{base}/api/releases/r1", headers=key).status_code == 404
    assert httpx.get(f"{base}/api/nowhere", headers=key).status_code == 404
    assert httpx.get(f"{base}/releases/r1", headers=key).status_code == 404  # outside the route prefix


def test_anonymous_routes_need_no_key_and_admin_routes_need_the_master_key(base: str) -> None:
    assert httpx.get(f"{base}/api/public").text == "anyone"
    assert httpx.get(f"{base}/api/operator", params={"code": KEYS.function_keys["default"]}).status_code == 401
    assert httpx.get(f"{base}/api/operator", params={"code": KEYS.master}).text == "master only"


def test_a_function_that_raises_is_answered_500(base: str) -> None:
    answer = httpx.get(f"{base}/api/broken")
    assert answer.status_code == 500
    assert answer.content == b""


def test_route_constraints_and_the_context_parameter(base: str) -> None:
    answer = httpx.get(f"{base}/api/items/42")
    assert answer.json()["id"] == "42" and answer.json()["function"] == "item"
    assert len(answer.json()["invocation"]) == 36
    assert httpx.get(f"{base}/api/items/forty-two").status_code == 404


def test_an_http_output_set_through_out_is_the_answer(base: str) -> None:
    answer = httpx.get(f"{base}/api/named")
    assert (answer.status_code, answer.text) == (202, "set through an Out")


def test_host_json_route_prefix_is_honoured(tmp_path: Path, port: int) -> None:
    host = start(tmp_path, port, host_json={"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}})
    with serving(host, port=port) as base:
        assert httpx.get(f"{base}/v1/public").text == "anyone"
        assert httpx.get(f"{base}/api/public").status_code == 404


def test_a_body_past_the_limit_is_413(tmp_path: Path, port: int) -> None:
    with serving(start(tmp_path, port), port=port, max_body=1024) as base:
        assert httpx.post(f"{base}/api/public", content=b"x" * 1024).status_code == 200
        assert httpx.post(f"{base}/api/public", content=b"x" * 1025).status_code == 413


def test_host_status_needs_the_master_key(base: str) -> None:
    assert httpx.get(f"{base}/admin/host/status").status_code == 401
    assert httpx.get(f"{base}/admin/host/status", params={"code": KEYS.function_keys["default"]}).status_code == 401
    status = httpx.get(f"{base}/admin/host/status", headers={"x-functions-key": KEYS.master}).json()
    assert status["state"] == "Running"
    assert "release" in status["functions"]
