"""A minimal aiohttp app, as aiohttp's docs write one, with a startup hook of its own."""

from __future__ import annotations

import logging

from aiohttp import web

logger = logging.getLogger(__name__)
logging.getLogger().addHandler(logging.StreamHandler())  # the app's console log
STARTED = web.AppKey("started", bool)


async def handle(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "Anonymous")
    started = request.app.get(STARTED, False)
    return web.Response(text=f"Hello, {name} (startup hook ran: {started})")


async def on_startup(app: web.Application) -> None:
    app[STARTED] = True
    logger.warning("myapp's own startup hook ran")


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", handle), web.get("/{name}", handle)])
    app.on_startup.append(on_startup)
    return app


app = create_app()

if __name__ == "__main__":
    web.run_app(app)
