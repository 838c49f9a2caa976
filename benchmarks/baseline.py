"""The SDK floor: the same spans, metric records and log records as the generator's
activities, emitted straight from a plain loop, with no event loop, tasks or waiting.

Each function mirrors one activity of the rendered module (same random draws, span names,
kinds and attributes under the default conventions, same metrics, same log calls with the
same ``extra``), so the difference between the two is what the engine itself costs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentelemetry import context
from opentelemetry.trace import SpanKind

from sdk import LOGGER_NAME, Sdk

logger = logging.getLogger(LOGGER_NAME)


class Floor:
    def __init__(self, demo: ModuleType, sdk: Sdk) -> None:
        self.demo = demo
        self.tracer = sdk.tracer_provider.get_tracer(LOGGER_NAME)
        meter = sdk.meter_provider.get_meter(LOGGER_NAME)
        self.http_duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=demo.HTTP_DURATION_BUCKETS,
        )
        self.db_duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=demo.DB_DURATION_BUCKETS,
        )
        self.db_wait = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            explicit_bucket_boundaries_advisory=demo.DB_DURATION_BUCKETS,
        )
        self.job_duration = meter.create_histogram(
            "job.duration", unit="s", explicit_bucket_boundaries_advisory=demo.HTTP_DURATION_BUCKETS
        )
        self.cache_operations = meter.create_counter("cache.operations", unit="{operation}")
        self.activities: tuple[Callable[[random.Random], None], ...] = (
            self.http_request,
            self.db_query,
            self.background_job,
            self.cache_operation,
        )

    def span(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        return self.tracer.start_as_current_span(
            name, context=context.Context(), kind=kind, attributes=attributes
        )

    def run(self, rng: random.Random, count: int) -> None:
        activities = self.activities
        for _ in range(count):
            rng.choice(activities)(rng)

    def http_request(self, rng: random.Random) -> None:
        d = self.demo
        method = rng.choice(d.HTTP_METHODS)
        path = rng.choice(d.HTTP_PATHS)
        status = rng.choices(tuple(d.HTTP_STATUSES), weights=tuple(d.HTTP_STATUSES.values()))[0]
        request_id = f"{rng.getrandbits(64):016x}"
        attributes = {
            "http.method": method,
            "http.target": path,
            "http.route": path,
            "http.scheme": "http",
            "http.status_code": status,
        }
        with self.span(f"{method} {path}", SpanKind.SERVER, attributes):
            seconds = rng.uniform(*d.HTTP_DURATION_MS) / 1000
            self.http_duration.record(
                seconds,
                {
                    "http.request.method": method,
                    "http.route": path,
                    "http.response.status_code": status,
                    "url.scheme": "http",
                },
            )
            logger.info(
                "%s %s — %d in %dms",
                method,
                path,
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "request_id": request_id,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )

    def db_query(self, rng: random.Random) -> None:
        d = self.demo
        table = rng.choice(d.DB_TABLES)
        operation = rng.choice(tuple(d.DB_STATEMENTS))
        statement = d.DB_STATEMENTS[operation].format(table=table)
        seconds = rng.uniform(*d.DB_DURATION_MS) / 1000
        pool_wait_s = seconds * rng.uniform(*d.DB_POOL_WAIT_SHARE)
        attributes = {
            "db.system": d.DB_SYSTEM,
            "db.sql.table": table,
            "db.operation": operation,
            "db.statement": statement,
        }
        with self.span(f"{operation} {table}", SpanKind.CLIENT, attributes):
            self.db_wait.record(pool_wait_s, {"db.system.name": d.DB_SYSTEM})
            self.db_duration.record(
                seconds,
                {
                    "db.system.name": d.DB_SYSTEM,
                    "db.operation.name": operation,
                    "db.collection.name": table,
                },
            )
            logger.debug(
                "%s %s — %dms",
                operation,
                table,
                seconds * 1000,
                extra={
                    "table": table,
                    "operation": operation,
                    "duration_ms": round(seconds * 1000, 1),
                    "queue_ms": round(pool_wait_s * 1000, 1),
                },
            )

    def background_job(self, rng: random.Random) -> None:
        d = self.demo
        job = rng.choice(d.JOB_TYPES)
        job_id = f"{rng.getrandbits(32):08x}"
        attributes = {
            "job.type": job,
            "messaging.operation.type": "process",
            "messaging.destination.name": job,
            "messaging.message.id": job_id,
        }
        with self.span(f"process {job}", SpanKind.CONSUMER, attributes):
            logger.info("Job %s started", job, extra={"job": job, "job_id": job_id})
            seconds = rng.uniform(*d.JOB_DURATION_MS) / 1000
            self.job_duration.record(seconds, {"job.type": job})
            logger.info(
                "Job %s completed in %dms",
                job,
                seconds * 1000,
                extra={"job": job, "job_id": job_id, "duration_ms": round(seconds * 1000, 1)},
            )

    def cache_operation(self, rng: random.Random) -> None:
        d = self.demo
        key = rng.choice(d.CACHE_KEYS)
        hit = rng.random() < d.CACHE_HIT_RATIO
        attributes = {
            "cache.key": key,
            "cache.hit": hit,
            "db.system": d.CACHE_SYSTEM,
            "db.operation": "GET",
            "db.statement": f"GET {key}",
        }
        with self.span("GET cache", SpanKind.CLIENT, attributes):
            seconds = rng.uniform(*d.CACHE_DURATION_MS) / 1000
            self.cache_operations.add(1, {"cache.hit": hit, "db.system.name": d.CACHE_SYSTEM})
            logger.debug(
                "Cache %s %s",
                "hit" if hit else "miss",
                key,
                extra={"key": key, "hit": hit, "duration_ms": round(seconds * 1000, 1)},
            )
