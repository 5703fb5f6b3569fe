// Send a known set of spans with the OpenTelemetry JavaScript SDK over
// OTLP/HTTP JSON (the exporter's default encoding).
//
// Used by tests/it/otlp_clients.rs. Usage:
//
//   node send_js.mjs --endpoint URL [--gzip] [--services a,b] [--per-service N]
//
// The same span set as send_python.py (see there): durations
// (i + 1) * 0.75 ms (+100 ms for every 10th), ERROR when i % 5 == 0, an
// event when i % 4 == 0, old HTTP attributes on even spans and new ones on
// odd, odd spans children of the one before. All spans of a service leave
// in one request when its provider shuts down. Prints {"spans": [...]}.

import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const endpoint = arg('endpoint');
const services = arg('services', 'checkout,cart').split(',');
const perService = Number(arg('per-service', '40'));
const compression = process.argv.includes('--gzip') ? 'gzip' : 'none';

// ns since the epoch, as BigInt, and as the SDK's [seconds, nanos]
const toHr = (ns) => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
const base = BigInt(Date.now() - 60_000) * 1_000_000n + 123n;

const sent = [];
for (const [s, service] of services.entries()) {
  const exporter = new OTLPTraceExporter({ url: endpoint, timeoutMillis: 10_000, compression });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, { maxExportBatchSize: 512, scheduledDelayMillis: 60_000 }),
    ],
  });
  const tracer = provider.getTracer('cased-agent-test', '1.0');
  let prev = null;
  for (let i = 0; i < perService; i++) {
    const durNs = BigInt((i + 1) * 750_000 + (i % 10 === 9 ? 100_000_000 : 0));
    const start = base + BigInt(s) * 1_000_000_000n + BigInt(i) * 1_000_000n;
    const end = start + durNs;
    const child = i % 2 === 1;
    let http;
    let want;
    if (i % 2 === 0) {
      http = { 'http.method': 'GET', 'http.status_code': 200, 'http.target': `/cart/${i}` };
      want = ['GET', 200, `/cart/${i}`];
    } else {
      http = { 'http.request.method': 'POST', 'http.response.status_code': 503, 'url.path': `/pay/${i}` };
      want = ['POST', 503, `/pay/${i}`];
    }
    const attributes = { ...http, 'app.retry': 3, 'app.ratio': 0.25, 'app.cached': true, 'app.tags': ['a', 'b'] };
    const ctx = child ? trace.setSpan(ROOT_CONTEXT, prev) : ROOT_CONTEXT;
    const span = tracer.startSpan(
      `op-${i}`,
      { kind: child ? SpanKind.CLIENT : SpanKind.SERVER, attributes, startTime: toHr(start) },
      ctx,
    );
    let event = null;
    if (i % 4 === 0) {
      const at = start + 1000n;
      span.addEvent('cache.miss', { key: `k${i}`, attempt: i }, toHr(at));
      event = { name: 'cache.miss', time_unix_nano: at.toString(), attributes: { key: `k${i}`, attempt: String(i) } };
    }
    const error = i % 5 === 0;
    if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: `boom ${i}` });
    span.end(toHr(end));
    const sc = span.spanContext();
    sent.push({
      trace_id: sc.traceId,
      span_id: sc.spanId,
      parent_span_id: child ? prev.spanContext().spanId : '',
      service_name: service,
      span_name: `op-${i}`,
      span_kind: child ? 3 : 2,
      start_ns: start.toString(),
      end_ns: end.toString(),
      status_code: error ? 2 : 0,
      status_message: error ? `boom ${i}` : '',
      http_method: want[0],
      http_status_code: want[1],
      http_url: want[2],
      event,
    });
    prev = span;
  }
  await provider.shutdown();
}
process.stdout.write(JSON.stringify({ spans: sent }));
