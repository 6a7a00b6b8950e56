"""Answers keep/drop for trace ids and rates with dd-trace-py's own sampling code.

Used by tests/sampling_ddtrace.rs to check stitch's edge sampler against the real tracer.

stdin (JSON):  {"trace_ids": ["<decimal, up to 128 bits>", ...], "rates": [0.05, ...]}
stdout (JSON): {
  "version": "<ddtrace version>",
  "rule": [{"rate": r, "keep": "0110...", "priority": [...], "dm": [...]}, ...],
  "default": {"priority": [...], "dm": [...]}
}
- "keep": one character per trace id, from SamplingRule(sample_rate=r).sample(span), the
  function a DD_TRACE_SAMPLING_RULES rule runs.
- "priority"/"dm": what DatadogSampler with that single rule (no rate limit) records on the
  span: the sampling priority and the _dd.p.dm tag.
- "default": the same for a DatadogSampler with no rule and no agent rates (the tracer's
  behaviour when no rate is configured).
"""

import json
import os
import sys

# Keep the tracer quiet and off the network: only its sampling code is used here.
os.environ.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
os.environ.setdefault("DD_REMOTE_CONFIGURATION_ENABLED", "false")
os.environ.setdefault("DD_TRACE_STARTUP_LOGS", "false")

import ddtrace  # noqa: E402
from ddtrace._trace.sampler import DatadogSampler  # noqa: E402
from ddtrace._trace.sampling_rule import SamplingRule  # noqa: E402
from ddtrace._trace.span import Span  # noqa: E402


def new_span(trace_id):
    span = Span("stitch.edge", trace_id=trace_id)
    if span.trace_id != trace_id:
        raise SystemExit(f"ddtrace changed trace id {trace_id} into {span.trace_id}")
    return span


def decided(sampler, trace_id):
    span = new_span(trace_id)
    sampler.sample(span)
    return span.context.sampling_priority, span.context._meta.get("_dd.p.dm")


def main():
    request = json.load(sys.stdin)
    trace_ids = [int(t) for t in request["trace_ids"]]
    rates = [float(r) for r in request["rates"]]

    rule_results = []
    for rate in rates:
        rule = SamplingRule(sample_rate=rate)
        keep = "".join("1" if rule.sample(new_span(t)) else "0" for t in trace_ids)
        sampler = DatadogSampler(rules=[SamplingRule(sample_rate=rate)], rate_limit=-1)
        decisions = [decided(sampler, t) for t in trace_ids]
        rule_results.append(
            {
                "rate": rate,
                "keep": keep,
                "priority": [p for p, _ in decisions],
                "dm": [dm for _, dm in decisions],
            }
        )

    default_sampler = DatadogSampler(rules=[], rate_limit=-1)
    defaults = [decided(default_sampler, t) for t in trace_ids]
    json.dump(
        {
            "version": ddtrace.__version__,
            "rule": rule_results,
            "default": {"priority": [p for p, _ in defaults], "dm": [dm for _, dm in defaults]},
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
