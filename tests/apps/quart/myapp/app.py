"""A minimal Quart app, as Quart's docs write one, with a before_serving hook of its own."""

from __future__ import annotations

import logging

from quart import Quart

logger = logging.getLogger(__name__)
logging.getLogger().addHandler(logging.StreamHandler())  # the app's console log


def create_app() -> Quart:
    app = Quart(__name__)
    app.config["STARTED"] = False

    @app.route("/")
    async def hello() -> str:
        return f"hello (startup hook ran: {app.config['STARTED']})"

    @app.before_serving
    async def startup() -> None:
        app.config["STARTED"] = True
        logger.warning("myapp's own startup hook ran")

    return app


app = create_app()

if __name__ == "__main__":
    app.run()
