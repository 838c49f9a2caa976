"""A minimal Starlette app, as Starlette's docs write one, with a lifespan of its own and
a pure ASGI middleware (the kind Starlette's docs show) in its middleware stack."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class State(TypedDict):
    started: bool


class ServerHeaderMiddleware:
    """Pure ASGI middleware: adds a header to every HTTP response, passes lifespan through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-served-by", b"myapp"))
            await send(message)

        await self.app(scope, receive, send_with_header)


async def homepage(request: Request) -> JSONResponse:
    started = getattr(request.state, "started", False)  # without a lifespan, no state
    return JSONResponse({"hello": "world", "lifespan_ran": started})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    logger.warning("myapp's own lifespan started")
    yield {"started": True}
    logger.warning("myapp's own lifespan ended")


def create_app() -> Starlette:
    return Starlette(
        routes=[Route("/", homepage)],
        middleware=[Middleware(ServerHeaderMiddleware)],
        lifespan=lifespan,
    )


app = create_app()
