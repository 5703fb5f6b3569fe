"""Send known metrics with the OpenTelemetry Python SDK (cumulative
temporality, the SDK's default).

Used by tests/it/otlp_metrics.rs. Usage:

    python send_python_metrics.py --protocol http|grpc --endpoint URL \
        --service NAME [--gap SECONDS]

One MeterProvider (resource service.name=NAME) whose reader exports only
when flushed. Three phases, each ending with a flush, GAP seconds apart
(longer than the agent's interval, so each export lands in its own cycle):

  phase 0: requests (counter, route=/a) += 1 x 3; queue.depth (up-down
           counter) += 10; temperature (gauge) = 42.5; lat.explicit and
           lat.exp (histograms, ms) record 7
  phase 1: requests += 1 x 17; queue.depth -= 3; temperature = 17;
           both histograms record 1, 2, ..., 100
  phase 2: requests += 2 x 5; queue.depth += 5; temperature = 3;
           both histograms record 1000 x 10

lat.explicit uses the SDK's default explicit buckets, lat.exp an
exponential histogram of at most 160 buckets. Prints {"ok": true}.
"""

import argparse
import json
import os
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def exporter(protocol, endpoint):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, timeout=10)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["http", "grpc"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--gap", type=float, default=2.5)
    a = ap.parse_args()

    reader = PeriodicExportingMetricReader(
        exporter(a.protocol, a.endpoint), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        resource=Resource.create({"service.name": a.service}),
        metric_readers=[reader],
        views=[
            View(
                instrument_name="lat.exp",
                aggregation=ExponentialBucketHistogramAggregation(max_size=160),
            )
        ],
    )
    meter = provider.get_meter("cased-agent-test", "1.0")
    requests = meter.create_counter("requests", unit="1")
    depth = meter.create_up_down_counter("queue.depth", unit="1")
    temp = meter.create_gauge("temperature", unit="Cel")
    explicit = meter.create_histogram("lat.explicit", unit="ms")
    exp = meter.create_histogram("lat.exp", unit="ms")
    route = {"route": "/a"}

    def phase(adds, step, delta, t, values):
        for _ in range(adds):
            requests.add(step, route)
        depth.add(delta)
        temp.set(t)
        for v in values:
            explicit.record(v)
            exp.record(v)
        if not provider.force_flush(timeout_millis=10_000):
            raise SystemExit("flush failed")

    phase(3, 1, 10, 42.5, [7])
    time.sleep(a.gap)
    phase(17, 1, -3, 17, range(1, 101))
    time.sleep(a.gap)
    phase(5, 2, 5, 3, [1000] * 10)
    print(json.dumps({"ok": True}), flush=True)
    # no shutdown: it would export once more, maybe in another agent
    # interval (a repeated gauge value, a zero increase)
    os._exit(0)


if __name__ == "__main__":
    main()
