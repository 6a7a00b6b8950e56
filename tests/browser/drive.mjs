// Drives Debian's headless Chromium for stitch's browser tests (tests/cors_browser.rs).
//
// One Chromium for the whole test binary: this process launches it once, prints
// `{"ready":true,...}` on stdout, then reads one JSON job per line on stdin and answers each with
// one JSON line carrying the job's `id`. Jobs run concurrently, each in a fresh browser context
// (its own cookies and storage), so tests cannot see each other's RUM sessions. When stdin closes
// (the test binary exited), Chromium is closed and this process exits.
//
// A job (or, instead of `call` and `arg`, `steps`: see runSteps below):
//   { "id": 1, "url": "http://127.0.0.1:PORT/pages/fetch.html",
//     "call": "plainFetch", "arg": { ... }, "timeout_ms": 15000 }
// The page is opened, `window.stitchTest[call](arg)` is awaited in it, and the answer is
//   { "id": 1, "ok": true, "value": <what the function returned>,
//     "console": ["error: ...", ...], "page_errors": [...], "failed_requests": [...] }
// or { "id": 1, "ok": false, "error": "...", ...same diagnostics }.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const executablePath = process.env.STITCH_CHROMIUM || '/usr/bin/chromium';

// playwright-core gives every launch a fresh temporary --user-data-dir of its own (and refuses one
// passed in args), so a run never inherits a profile.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    // Extra flags a test binary passes (tests/browser_h2.rs: host mapping, a trusted test key).
    ...JSON.parse(process.env.STITCH_CHROMIUM_ARGS || '[]'),
  ],
});

function write(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

write({ ready: true, version: browser.version() });

async function runJob(job) {
  const diagnostics = { console: [], page_errors: [], failed_requests: [] };
  const timeout = job.timeout_ms ?? 15000;
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => diagnostics.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => diagnostics.page_errors.push(String(e)));
    page.on('requestfailed', (r) =>
      diagnostics.failed_requests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
    );
    await page.goto(job.url, { waitUntil: 'load', timeout });
    const call = job.steps
      ? runSteps(page, job.steps)
      : page.evaluate(([name, arg]) => window.stitchTest[name](arg), [job.call, job.arg ?? {}]);
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`job timed out after ${timeout} ms`)), timeout);
    });
    try {
      const value = await Promise.race([call, expired]);
      return { id: job.id, ok: true, value, ...diagnostics };
    } finally {
      clearTimeout(timer);
    }
  } catch (e) {
    return { id: job.id, ok: false, error: String(e?.stack ?? e), ...diagnostics };
  } finally {
    await context.close().catch(() => {});
  }
}

// A page that runs no script of its own (stitch's request inspector) is driven by steps, each
// answered in order:
//   { "select": [css, value] }   choose an <option> by value          -> null
//   { "click": css }             click, and wait for the page it loads -> the new URL
//   { "texts": css }             innerText of every element matching   -> [string]
//   { "screenshot": path }       full-page PNG written to path         -> path
async function runSteps(page, steps) {
  const out = [];
  for (const step of steps) {
    if (step.select) {
      await page.selectOption(step.select[0], step.select[1]);
      out.push(null);
    } else if (step.click) {
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(step.click)]);
      out.push(page.url());
    } else if (step.texts) {
      out.push(await page.$$eval(step.texts, (els) => els.map((e) => e.innerText)));
    } else if (step.screenshot) {
      await page.screenshot({ path: step.screenshot, fullPage: true });
      out.push(step.screenshot);
    } else {
      throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }
  return out;
}

const pending = new Set();
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let job;
  try {
    job = JSON.parse(line);
  } catch (e) {
    write({ id: null, ok: false, error: `bad job line: ${e}` });
    return;
  }
  const p = runJob(job).then(write);
  pending.add(p);
  p.finally(() => pending.delete(p));
});
lines.on('close', async () => {
  await Promise.allSettled([...pending]);
  await browser.close().catch(() => {});
  process.exit(0);
});
