// Functions that tests/browser/drive.mjs calls in the page for tests/cors_browser.rs. Each takes
// one JSON argument and resolves to a JSON value; every wait is a bounded poll on a condition.
(function () {
  'use strict';

  // Resolves with the first truthy value of `check()`, polled until `deadline` (performance.now()).
  async function until(what, check, deadline) {
    for (;;) {
      const value = await check();
      if (value) return value;
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  // One cross-origin fetch; a network or CORS failure is a value, not an exception, so the test
  // can assert on it. Response headers are those the browser lets the page read.
  async function fetchOne(req) {
    try {
      const response = await fetch(req.url, {
        method: req.method || 'GET',
        headers: req.headers || {},
        mode: 'cors',
        credentials: req.credentials || 'same-origin',
      });
      const body = await response.text();
      const headers = {};
      response.headers.forEach((value, name) => {
        headers[name] = value;
      });
      return { ok: true, status: response.status, body, headers };
    } catch (e) {
      return { ok: false, error: `${e.name}: ${e.message}` };
    }
  }

  // { requests: [{ url, method?, headers?, credentials? }, ...] } -> one result each, in order.
  async function fetchAll(arg) {
    const results = [];
    for (const req of arg.requests) results.push(await fetchOne(req));
    return results;
  }

  // The real @datadog/browser-rum SDK traces fetches, one after the other, in one RUM session.
  //   { targets: [url, ...], traced_origin, propagator_types, intake, recorded, baggage,
  //     timeout_ms }
  // Resolves with the session id and, for each target, the fetch result and the RUM resource
  // event as the SDK built it. It returns only once the local intake (`recorded` lists what it
  // received) holds every one of those events, so the batch has really left the browser.
  async function rumFetch(arg) {
    const deadline = performance.now() + (arg.timeout_ms || 10000);
    const resources = [];
    window.DD_RUM.init({
      applicationId: '00000000-0000-4000-8000-000000000000',
      clientToken: 'pub00000000000000000000000000000000',
      site: 'datadoghq.com',
      service: 'stitch-browser-test',
      env: 'test',
      proxy: arg.intake,
      sessionSampleRate: 100,
      sessionReplaySampleRate: 0,
      traceSampleRate: 100,
      trackResources: true,
      trackLongTasks: false,
      trackUserInteractions: false,
      propagateTraceBaggage: !!arg.baggage,
      // The SDK ignores synthetic DOM events unless told otherwise; the page-exit event below
      // that makes it send its batch now is one.
      allowUntrustedEvents: true,
      allowedTracingUrls: [{ match: arg.traced_origin, propagatorTypes: arg.propagator_types }],
      beforeSend(event) {
        if (event.type !== 'resource') return true;
        // The page's own polls of the intake are not part of the story.
        if (event.resource.url.startsWith(arg.recorded)) return false;
        resources.push(JSON.parse(JSON.stringify(event)));
        return true;
      },
    });
    // The SDK starts asynchronously; it traces only once a tracked session exists.
    const sessionId = await until(
      'the RUM SDK to start a tracked session',
      () => {
        const context = window.DD_RUM.getInternalContext();
        return context && context.session_id;
      },
      deadline,
    );
    const traces = [];
    for (const target of arg.targets) {
      const fetched = await fetchOne({ url: target });
      const event = await until(
        `the SDK to build the resource event of ${target}`,
        () => resources.find((e) => e.resource && e.resource.url === target),
        deadline,
      );
      // The protocol the fetch went over (`h2`, `http/1.1`), as Resource Timing reports it.
      const timing = performance.getEntriesByName(target).pop();
      traces.push({ target, fetch: fetched, event, protocol: timing && timing.nextHopProtocol });
    }
    // The SDK sends its batch (with sendBeacon) when the page may go away: hidden, frozen or
    // unloading. Say the page is being frozen, so the batch leaves now rather than in 30 s.
    window.dispatchEvent(new Event('freeze'));
    await until(
      'the local intake to receive every resource event',
      async () => {
        const response = await fetch(arg.recorded, { cache: 'no-store' });
        const events = await response.json();
        return arg.targets.every((target) =>
          events.some((e) => e.type === 'resource' && e.resource && e.resource.url === target),
        );
      },
      deadline,
    );
    const navigation = performance.getEntriesByType('navigation')[0];
    return {
      session_id: sessionId,
      traces,
      page_protocol: navigation && navigation.nextHopProtocol,
    };
  }

  window.stitchTest = { fetchAll, rumFetch };
})();
