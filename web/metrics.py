"""`/metrics`: the service's figures in Prometheus' text format, read from Redis at each scrape.

Workers, bots and this app count into Redis (`core.metrics`); the queues' depth and the live workers are read from
RQ's keys. Nothing is kept in this process, so any number of web processes export the same figures (scrape one).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core import metrics
from web.admin import lanes_and_running, workers

NAMESPACE = "imagine"

COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    metrics.JOBS: ("jobs", "Jobs that reached an outcome, by kind, lane and outcome.", ("kind", "lane", "outcome")),
    metrics.GPU_SECONDS: ("gpu_seconds", "Seconds jobs held a device, by model.", ("model",)),
    metrics.REFUSALS: ("admission_refusals", "Requests for jobs refused before queueing, by reason and front end.",
                       ("reason", "via")),
    metrics.DELIVERY_RETRIES: ("discord_delivery_retries", "Redelivery attempts of outcomes Discord did not take.",
                               ()),
    metrics.DISCORD_RETRIES: ("discord_request_retries", "Requests to Discord's API the workers sent again, by "
                              "reason (a 429, a 5xx, no answer).", ("reason",)),
}
"""core.metrics counter -> (exported name without `_total`, help, label names)."""

HISTOGRAMS: dict[str, tuple[str, str, str]] = {
    metrics.WAIT: ("job_wait_seconds", "Seconds from a job's creation to the start of its latest attempt.", "lane"),
    metrics.RENDER: ("job_render_seconds", "Seconds from a done job's start to its outcome.", "kind"),
}


class RedisCollector(Collector):
    """Builds every family from one pipelined read of `core.metrics`' keys plus RQ's queues and workers."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        with self.conn.pipeline(transaction=False) as pipe:
            for command in metrics.read_commands():
                pipe.execute_command(*command)
            snapshot = metrics.parse(pipe.execute())
        for key, (name, help_text, label_names) in COUNTERS.items():
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", help_text, labels=label_names)
            for labels, value in snapshot.counters.get(key, []):
                family.add_metric([labels.get(n, "") for n in label_names], value)
            yield family
        for key, (name, help_text, label) in HISTOGRAMS.items():
            spread = HistogramMetricFamily(f"{NAMESPACE}_{name}", help_text, labels=[label])
            for label_text, histogram in snapshot.histograms.get(key, {}).items():
                bounds = [*(str(b) for b in metrics.BUCKETS_S[key]), "+Inf"]
                below, buckets = 0.0, []
                for bound, count in zip(bounds, histogram.buckets, strict=True):
                    below += count
                    buckets.append((bound, below))
                spread.add_metric([metrics.labels_of(label_text).get(label, "")], buckets, histogram.sum)
            yield spread
        lanes, _ = lanes_and_running(self.conn)
        waiting = GaugeMetricFamily(f"{NAMESPACE}_queue_depth", "Jobs waiting in each lane.", labels=["lane"])
        running = GaugeMetricFamily(f"{NAMESPACE}_jobs_running", "Jobs running from each lane.", labels=["lane"])
        for lane in lanes:
            waiting.add_metric([lane.name], lane.waiting)
            running.add_metric([lane.name], lane.running)
        yield waiting
        yield running
        live = workers(self.conn)
        by_model = GaugeMetricFamily(f"{NAMESPACE}_workers", "Live workers, by model.", labels=["model"])
        for model in sorted({w.model for w in live}):
            by_model.add_metric([model], sum(1 for w in live if w.model == model))
        yield by_model


def exposition(conn: redis.Redis) -> bytes:
    """The text format of every figure now (blocking: run it in a thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(conn))
    return generate_latest(registry)
