"""A minimal Litestar app, as Litestar's docs write one, with a lifespan of its own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.datastructures import State

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    app.state.started = True
    logger.warning("myapp's own lifespan started")
    yield
    logger.warning("myapp's own lifespan ended")


@get("/")
async def index(state: State) -> dict[str, object]:
    return {"hello": "world", "lifespan_ran": state.get("started", False)}


app = Litestar(route_handlers=[index], lifespan=[lifespan])
