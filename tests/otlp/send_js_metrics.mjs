// Send known metrics with the OpenTelemetry JavaScript SDK, DELTA
// temporality, over OTLP/HTTP JSON (the exporter's default encoding).
//
// Used by tests/it/otlp_metrics.rs. Usage:
//
//   node send_js_metrics.mjs --endpoint URL --service NAME [--gap SECONDS]
//
// The same three phases as send_python_metrics.py (see there), each ending
// with a flush, GAP seconds apart. With the DELTA preference, the counter
// and histograms are exported as deltas; the up-down counter stays
// cumulative (the SDK's rule for non-monotonic sums). Prints {"ok": true}.

import { metrics } from '@opentelemetry/api';
import {
  AggregationTemporalityPreference,
  OTLPMetricExporter,
} from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationType,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const endpoint = arg('endpoint');
const service = arg('service');
const gapMs = Number(arg('gap', '2.5')) * 1000;

const exporter = new OTLPMetricExporter({
  url: endpoint,
  timeoutMillis: 10_000,
  temporalityPreference: AggregationTemporalityPreference.DELTA,
});
const reader = new PeriodicExportingMetricReader({
  exporter,
  exportIntervalMillis: 3_600_000,
  exportTimeoutMillis: 10_000,
});
const provider = new MeterProvider({
  resource: resourceFromAttributes({ 'service.name': service }),
  readers: [reader],
  views: [
    {
      instrumentName: 'lat.exp',
      aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM, options: { maxSize: 160 } },
    },
  ],
});
const meter = provider.getMeter('cased-agent-test', '1.0');
const requests = meter.createCounter('requests', { unit: '1' });
const depth = meter.createUpDownCounter('queue.depth', { unit: '1' });
const temp = meter.createGauge('temperature', { unit: 'Cel' });
const explicit = meter.createHistogram('lat.explicit', { unit: 'ms' });
const exp = meter.createHistogram('lat.exp', { unit: 'ms' });
const route = { route: '/a' };

async function phase(adds, step, delta, t, values) {
  for (let i = 0; i < adds; i++) requests.add(step, route);
  depth.add(delta);
  temp.record(t);
  for (const v of values) {
    explicit.record(v);
    exp.record(v);
  }
  await reader.forceFlush();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
await phase(3, 1, 10, 42.5, [7]);
await sleep(gapMs);
await phase(17, 1, -3, 17, hundred);
await sleep(gapMs);
await phase(5, 2, 5, 3, Array(10).fill(1000));
void metrics;
console.log(JSON.stringify({ ok: true }));
// no shutdown: it would export once more, maybe in another agent interval
process.exit(0);
