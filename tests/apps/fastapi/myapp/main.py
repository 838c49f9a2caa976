"""A minimal FastAPI app, as FastAPI's docs write one, with a lifespan of its own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.started = True
    logger.warning("myapp's own lifespan started")
    yield
    logger.warning("myapp's own lifespan ended")


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def read_root() -> dict[str, object]:
    return {"Hello": "World", "lifespan_ran": getattr(app.state, "started", False)}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}
