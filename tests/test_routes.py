"""Realistic requests take the routes of the app the generator is attached to (issue 5).

Each framework's sample app (tests/apps/<framework>) is rendered and attached in-process, and
served by the framework's own test tooling for a moment: the realistic profile's server spans
then name that app's routes and methods, while a hook inside the app counts the requests that
reach it (none: the requests are simulated). An app without routes gets the reference ones.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import load_module
from host_servers import sample_project

pytestmark = pytest.mark.timeout(60)

SERVE_S = 0.5  # long enough for dozens of requests at one tick every TICK_MS
TICK_MS = 10
REFERENCE_ROUTES = {
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("PUT", "/orders"),
    ("GET", "/products"),
    ("DELETE", "/products"),
    ("GET", "/api/health"),
    ("GET", "/search"),
}
APP_TARGETS = {
    "fastapi": "myapp.main:app",
    "starlette": "myapp.main:app",
    "litestar": "myapp.app:app",
    "aiohttp": "myapp.main:app",
    "quart": "myapp.app:app",
    "flask": "myapp.app:app",
}


@dataclass
class Project:
    """A sample app with the template rendered into it, its demo module imported."""

    framework: str
    path: Path
    demo: ModuleType

    def app_module(self, name: str) -> ModuleType:
        return load_module(self.path / "myapp" / f"{name}.py")


_rendered: dict[str, Path] = {}


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The sample project of the framework the test names (indirectly), rendered once.

    Its demo module is imported afresh for each test: a process starts one generator.
    """
    framework: str = request.param
    if framework not in _rendered:
        answers = {"framework": framework}
        if framework in APP_TARGETS:
            answers["app_target"] = APP_TARGETS[framework]
        destination = tmp_path_factory.mktemp(framework)
        _rendered[framework] = sample_project(framework, destination, **answers)
    path = _rendered[framework]
    return Project(framework, path, load_module(path / "myapp" / "demo_traffic.py"))


@pytest.fixture
def server_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """The realistic profile's server spans, from generators the adapters build themselves."""
    for variable in os.environ:
        if variable.startswith(("DEMO_TRAFFIC_", "OTEL_SEMCONV")):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("DEMO_TRAFFIC_PROFILE", "realistic")
    monkeypatch.setenv("DEMO_TRAFFIC_INTERVAL_MS", str(TICK_MS))
    monkeypatch.setenv("DEMO_TRAFFIC_SEED", "5")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    # Adapters record to the global provider, which the API lets a process set only once:
    # this one stands in for the length of the test, and the process is left as it was.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield lambda: [span for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER]
    provider.shutdown()


def routes_played(spans: list[Any]) -> set[tuple[str, str]]:
    """(method, route) of each request span, checked to agree with its http.route."""
    assert len(spans) >= 20, f"only {len(spans)} requests"
    played = set()
    for span in spans:
        method, route = span.name.split(" ", 1)
        assert span.attributes["http.route"] == route, span.name
        played.add((method, route))
    return played


# --- Each framework: serve the app a moment, counting the requests that reach it ----------
#
# Each takes the rendered demo module and the app, attaches the one to the other, serves the
# app with the framework's own test tooling for SERVE_S seconds, and returns the number of
# requests a hook inside the app saw.


def serve_starlette(demo: ModuleType, app: Any) -> int:
    from starlette.testclient import TestClient

    requests = itertools.count()

    class CountRequests:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                next(requests)
            await self.app(scope, receive, send)

    app.add_middleware(CountRequests)
    with TestClient(demo.attach(app)):
        time.sleep(SERVE_S)
    return next(requests)


def serve_litestar(demo: ModuleType, app: Any) -> int:
    from litestar.testing import TestClient

    requests = itertools.count()

    async def count_request(request: Any) -> None:
        next(requests)

    app.before_request = count_request
    with TestClient(demo.attach(app)):
        time.sleep(SERVE_S)
    return next(requests)


def serve_aiohttp(demo: ModuleType, app: Any) -> int:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    requests = itertools.count()

    @web.middleware
    async def count_request(request: web.Request, handler: Any) -> web.StreamResponse:
        next(requests)
        return await handler(request)

    app.middlewares.append(count_request)

    async def scenario() -> None:
        async with TestClient(TestServer(demo.attach(app))):
            await asyncio.sleep(SERVE_S)

    asyncio.run(scenario())
    return next(requests)


def serve_quart(demo: ModuleType, app: Any) -> int:
    requests = itertools.count()

    @app.before_request
    async def count_request() -> None:
        next(requests)

    async def scenario() -> None:
        async with demo.attach(app).test_app():
            await asyncio.sleep(SERVE_S)

    asyncio.run(scenario())
    return next(requests)


def serve_flask(demo: ModuleType, app: Any) -> int:
    """Flask has no startup hook: the generator starts with the first request, the test's."""
    requests = itertools.count()

    @app.before_request
    def count_request() -> None:
        next(requests)

    app.testing = False  # a testing app starts no generator
    demo.attach(app).test_client().get("/")
    time.sleep(SERVE_S)
    for traffic in list(demo._instances):  # it runs in a daemon thread until the process exits
        traffic.stop()
    return next(requests) - 1


def serve_django(demo: ModuleType, urlconf: Any) -> int:
    """Django's ASGI handler, its lifespan driven as uvicorn would, the URLconf given."""
    from django.core.asgi import get_asgi_application
    from django.core.signals import request_started
    from django.test import override_settings

    requests = itertools.count()

    def count_request(**kwargs: Any) -> None:
        next(requests)

    async def scenario(application: Any) -> None:
        received: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        sent: list[str] = []

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        await received.put({"type": "lifespan.startup"})
        serving = asyncio.create_task(application({"type": "lifespan"}, received.get, send))
        await asyncio.sleep(SERVE_S)
        await received.put({"type": "lifespan.shutdown"})
        await serving
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    request_started.connect(count_request)
    try:
        with override_settings(ROOT_URLCONF=urlconf):
            asyncio.run(scenario(demo.attach_asgi(get_asgi_application())))
    finally:
        request_started.disconnect(count_request)
    return next(requests)


@pytest.fixture
def django_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The Django sample project importable as it would be served (``myapp.settings``)."""
    import django

    monkeypatch.syspath_prepend(str(project.path))
    for name in list(sys.modules):  # other sample apps are packages named myapp too
        if name.split(".")[0] in {"myapp", "polls"}:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "myapp.settings")
    django.setup()
    return project


# --- The sample apps' routes ----------------------------------------------------------------


async def created() -> dict[str, int]:
    return {"id": 1}


def updated(order_id: int) -> str:
    return str(order_id)


@pytest.mark.parametrize("project", ["fastapi"], indirect=True)
def test_fastapi_requests_play_the_apps_operations(project: Project, server_spans: Any) -> None:
    app = project.app_module("main").app
    app.post("/items")(created)  # a write, so methods count as well as paths
    assert serve_starlette(project.demo, app) == 0
    assert routes_played(server_spans()) == {
        ("GET", "/"),
        ("GET", "/items/{item_id}"),
        ("POST", "/items"),
    }


@pytest.mark.parametrize("project", ["starlette"], indirect=True)
def test_starlette_requests_play_the_apps_routes(project: Project, server_spans: Any) -> None:
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def create(request: Any) -> JSONResponse:
        return JSONResponse({"id": 1})

    app = project.app_module("main").create_app()
    app.router.routes.append(Mount("/api", routes=[Route("/items", create, methods=["POST"])]))
    assert serve_starlette(project.demo, app) == 0
    assert routes_played(server_spans()) == {("GET", "/"), ("POST", "/api/items")}


@pytest.mark.parametrize("project", ["litestar"], indirect=True)
def test_litestar_requests_play_the_apps_handlers(project: Project, server_spans: Any) -> None:
    from litestar import post

    app = project.app_module("app").app
    app.register(post("/items")(created))
    assert serve_litestar(project.demo, app) == 0
    assert routes_played(server_spans()) == {("GET", "/"), ("POST", "/items")}


@pytest.mark.parametrize("project", ["aiohttp"], indirect=True)
def test_aiohttp_requests_play_the_apps_routes(project: Project, server_spans: Any) -> None:
    app = project.app_module("main").create_app()
    app.router.add_post("/orders", created)
    assert serve_aiohttp(project.demo, app) == 0
    assert routes_played(server_spans()) == {("GET", "/"), ("GET", "/{name}"), ("POST", "/orders")}


@pytest.mark.parametrize("project", ["quart"], indirect=True)
def test_quart_requests_play_the_apps_rules(project: Project, server_spans: Any) -> None:
    app = project.app_module("app").create_app()
    app.add_url_rule("/orders/<int:order_id>", view_func=updated, methods=["PUT"])
    assert serve_quart(project.demo, app) == 0
    assert routes_played(server_spans()) == {("GET", "/"), ("PUT", "/orders/<int:order_id>")}


@pytest.mark.parametrize("project", ["flask"], indirect=True)
def test_flask_requests_play_the_apps_rules(project: Project, server_spans: Any) -> None:
    app = project.app_module("app").app
    app.add_url_rule("/orders/<int:order_id>", view_func=updated, methods=["DELETE"])
    assert serve_flask(project.demo, app) == 0, "requests beyond the one that started it"
    assert routes_played(server_spans()) == {("GET", "/"), ("DELETE", "/orders/<int:order_id>")}


@pytest.mark.parametrize("project", ["django"], indirect=True)
def test_django_requests_play_the_projects_urls_but_the_admin(
    django_project: Project, server_spans: Any
) -> None:
    assert serve_django(django_project.demo, "myapp.urls") == 0
    assert routes_played(server_spans()) == {("GET", "/polls/")}


@pytest.mark.parametrize("project", ["django"], indirect=True)
def test_django_regex_urls_and_class_based_views_read_as_routes(
    django_project: Project, server_spans: Any
) -> None:
    from django.http import HttpResponse
    from django.urls import include, path, re_path
    from django.views import View

    class Orders(View):
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse()

        def post(self, request: Any) -> HttpResponse:
            return HttpResponse()

    urls = ModuleType("shop_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("orders/", Orders.as_view()),
        path("api/", include([re_path(r"^articles/(?P<year>[0-9]{4})\.json$", created)])),
    ]
    assert serve_django(django_project.demo, urls) == 0
    assert routes_played(server_spans()) == {
        ("GET", "/orders/"),
        ("POST", "/orders/"),
        ("GET", "/api/articles/<year>.json"),
    }


# --- No routes: the reference ones ----------------------------------------------------------


def empty_app(framework: str, demo: ModuleType) -> int:
    """Serve an app of ``framework`` with no routes of its own; return the requests it saw."""
    if framework in {"fastapi", "starlette"}:
        from fastapi import FastAPI
        from starlette.applications import Starlette

        return serve_starlette(demo, FastAPI() if framework == "fastapi" else Starlette())
    if framework == "litestar":
        from litestar import Litestar

        return serve_litestar(demo, Litestar())
    if framework == "aiohttp":
        from aiohttp import web

        return serve_aiohttp(demo, web.Application())
    if framework == "quart":
        from quart import Quart

        return serve_quart(demo, Quart(__name__, static_folder=None))
    if framework == "flask":
        from flask import Flask

        return serve_flask(demo, Flask(__name__))
    no_urls = ModuleType("no_urls")
    no_urls.urlpatterns = []  # type: ignore[attr-defined]
    return serve_django(demo, no_urls)


@pytest.mark.parametrize("project", [*APP_TARGETS, "django"], indirect=True)
def test_an_app_without_routes_plays_the_reference_routes(
    project: Project, request: pytest.FixtureRequest, server_spans: Any
) -> None:
    if project.framework == "django":
        request.getfixturevalue("django_project")
    assert empty_app(project.framework, project.demo) == 0
    assert routes_played(server_spans()) == REFERENCE_ROUTES


@pytest.mark.parametrize("project", ["flask"], indirect=True)
def test_head_and_options_alone_leave_the_reference_routes(project: Project) -> None:
    traffic = project.demo.DemoTraffic(environ={"DEMO_TRAFFIC_PROFILE": "realistic"})
    traffic.use_routes([("HEAD", "/"), ("OPTIONS", "/")])
    assert set(traffic._telemetry.routes) == REFERENCE_ROUTES
    traffic.use_routes([("GET", "/a"), ("HEAD", "/a"), ("GET", "/a")])
    assert traffic._telemetry.routes == (("GET", "/a"),)


@pytest.mark.parametrize("project", ["fastapi"], indirect=True)
def test_a_router_that_fails_to_list_its_routes_neither_stops_the_app_nor_the_demo(
    project: Project, server_spans: Any
) -> None:
    app = project.app_module("main").app

    def broken_openapi() -> dict[str, Any]:
        raise RuntimeError("schema generation failed")

    app.openapi = broken_openapi
    assert serve_starlette(project.demo, app) == 0
    assert routes_played(server_spans()) == REFERENCE_ROUTES
