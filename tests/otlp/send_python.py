"""Send a known set of spans with the OpenTelemetry Python SDK.

Used by tests/it/otlp_clients.rs. Usage:

    python send_python.py --protocol http|grpc --endpoint URL \
        [--compression none|gzip|deflate] [--services a,b] [--per-service N]

For each service, one TracerProvider (its resource carries service.name)
with a BatchSpanProcessor: all N spans of a service leave in one export
request when the provider shuts down. Span i of a service:

- lasts (i + 1) * 0.75 ms, plus 100 ms for every 10th span (a tail);
- has status ERROR ("boom <i>") when i % 5 == 0, else UNSET;
- has an event "cache.miss" (attributes key="k<i>", attempt=i) when i % 4 == 0;
- carries HTTP attributes of the old semantic conventions when i is even
  (http.method GET, http.status_code 200, http.target /cart/<i>), of the
  new ones when odd (http.request.method POST, http.response.status_code
  503, url.path /pay/<i>);
- carries app.retry=3, app.ratio=0.25, app.cached=True, app.tags=["a","b"];
- is a child of span i-1 when i is odd, else a root; kind SERVER (2) for
  roots, CLIENT (3) for children.

Prints one JSON object: {"spans": [...]} describing what was sent (ids in
lowercase hex, start/end in ns, the HTTP fields the agent must derive).
"""

import argparse
import json
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporter(protocol, endpoint, compression):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        comp = {"none": Compression.NoCompression, "gzip": Compression.Gzip, "deflate": Compression.Deflate}
        return OTLPSpanExporter(endpoint=endpoint, compression=comp[compression], timeout=10)
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    comp = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip}
    return OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=comp[compression], timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["http", "grpc"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--compression", choices=["none", "gzip", "deflate"], default="none")
    ap.add_argument("--services", default="checkout,cart")
    ap.add_argument("--per-service", type=int, default=40)
    a = ap.parse_args()

    sent = []
    base = time.time_ns() - 60 * 10**9
    for s, service in enumerate(a.services.split(",")):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter(a.protocol, a.endpoint, a.compression),
                max_export_batch_size=512,
                schedule_delay_millis=60_000,
            )
        )
        tracer = provider.get_tracer("cased-agent-test", "1.0")
        prev = None
        for i in range(a.per_service):
            dur_ns = (i + 1) * 750_000 + (100_000_000 if i % 10 == 9 else 0)
            start = base + s * 10**9 + i * 10**6
            end = start + dur_ns
            child = i % 2 == 1
            if i % 2 == 0:
                http = {"http.method": "GET", "http.status_code": 200, "http.target": f"/cart/{i}"}
                want = ("GET", 200, f"/cart/{i}")
            else:
                http = {
                    "http.request.method": "POST",
                    "http.response.status_code": 503,
                    "url.path": f"/pay/{i}",
                }
                want = ("POST", 503, f"/pay/{i}")
            attrs = dict(http)
            attrs.update({"app.retry": 3, "app.ratio": 0.25, "app.cached": True, "app.tags": ["a", "b"]})
            ctx = trace.set_span_in_context(prev) if child else None
            span = tracer.start_span(
                f"op-{i}",
                context=ctx,
                kind=SpanKind.CLIENT if child else SpanKind.SERVER,
                attributes=attrs,
                start_time=start,
            )
            event = None
            if i % 4 == 0:
                event = {"name": "cache.miss", "time_unix_nano": start + 1000, "attributes": {"key": f"k{i}", "attempt": str(i)}}
                span.add_event("cache.miss", {"key": f"k{i}", "attempt": i}, timestamp=start + 1000)
            error = i % 5 == 0
            if error:
                span.set_status(Status(StatusCode.ERROR, f"boom {i}"))
            span.end(end_time=end)
            sc = span.get_span_context()
            sent.append(
                {
                    "trace_id": format(sc.trace_id, "032x"),
                    "span_id": format(sc.span_id, "016x"),
                    "parent_span_id": format(prev.get_span_context().span_id, "016x") if child else "",
                    "service_name": service,
                    "span_name": f"op-{i}",
                    "span_kind": 3 if child else 2,
                    "start_ns": start,
                    "end_ns": end,
                    "status_code": 2 if error else 0,
                    "status_message": f"boom {i}" if error else "",
                    "http_method": want[0],
                    "http_status_code": want[1],
                    "http_url": want[2],
                    "event": event,
                }
            )
            prev = span
        provider.shutdown()
    json.dump({"spans": sent}, sys.stdout)


if __name__ == "__main__":
    main()
