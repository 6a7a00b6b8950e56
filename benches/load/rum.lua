-- wrk script for benches/load: requests as a browser running Datadog RUM sends them.
--
-- BENCH_MODE=get (default): GET with the RUM tracing headers (datadog + tracecontext with the
--   same 64-bit trace id, as the browser SDK writes them), baggage with a session id, an Origin
--   and the usual browser headers. Sixteen id sets are cycled so requests are not all identical.
-- BENCH_MODE=preflight: the CORS preflight a browser sends before such a request.
--
-- BENCH_DELAY_MS (optional): each connection waits this long after a response before its next
--   request, which paces the load (benches/load/run --paced) instead of saturating the proxy.
--
-- done() prints one line `BENCH_RESULT {...}` (JSON) that benches/load/run reads.

local mode = os.getenv("BENCH_MODE") or "get"
local origin = "http://localhost:3000"

-- trace id (decimal), parent id (decimal), the same two in hex, session id
local ids = {
  { "17485029721327973432", "3641603982383516983", "f2a74de452e6b438", "32899387269e0d37", "d23f0824-128b-4f33-8c5c-7fd0a6a3a450" },
  { "1736392818365009963", "5375270654777870840", "1818e811892f902b", "4a98cc2e5d9dc9f8", "36f675cc-81e7-4ef5-a8e2-5d940ed90475" },
  { "1585446675937841368", "3856957380441106266", "1600a35a099950d8", "3586aa4d6f03675a", "8d116ece-1738-47d9-bd9c-172411e20b8f" },
  { "1090396360377453094", "5215389816265151663", "0f21ddb66cad4a26", "4860c967d3ac94af", "a170b338-3926-4059-b28c-105d1fb17c23" },
  { "10754394637803157173", "570576685538020777", "953f48f1a09f76b5", "07eb1878f29d0da9", "0cb1e29c-658c-4a14-95e6-0af593bd04cf" },
  { "4078239883182463692", "5134327459162675120", "3898d190f9ebdacc", "4740cb9f0becd7b0", "6b4cb242-4a23-4596-a217-beaddbc496cb" },
  { "9973894190648387236", "5265749391392088512", "8a6a63ec24ede6a4", "4913b32c1e27a1c0", "ae97ba94-d0ed-482f-8f6d-05584ef8aa38" },
  { "1901042282212365707", "5268430586848198545", "1a61dbe22e44158b", "491d39b494e3bf91", "18f135d2-5f55-4203-b018-50c5a38fd547" },
  { "13136125050165459753", "5205378733842821175", "b64ce4228c38fb29", "483d38611012f037", "7f150524-34b9-45df-9e77-69b10f4205b4" },
  { "9808507260218814804", "7168670181184942206", "881ed162ae2eb154", "637c3b8c6d76b07e", "ec66a787-95e7-41d1-b731-af10506bf2ef" },
  { "6670017245504332848", "2291330809929238445", "5c90a9587403e430", "1fcc713b4cbd87ad", "c7a2ea20-b2f1-4c94-ae05-319acb5c7427" },
  { "1509958490544479227", "2769309333409590959", "14f4733f3e7d1bfb", "266e902a930d6eaf", "57ee05cd-e009-42c7-bebf-f20686734721" },
  { "8279529517580348704", "5616655581780003336", "72e6cc3ababced20", "4df25e7e49b64a08", "830e07bc-1e39-4f10-92bd-4acefaecbd38" },
  { "3043013691408259304", "3154907980451020031", "2a3af4d46b0a18e8", "2bc87c17c1d3fcff", "6bf46c69-7d2c-4f82-aeea-cbe226e87555" },
  { "17746119819956681879", "715922548047491536", "f646e1f40a097c97", "09ef77c3ab1031d0", "ca02135e-92b1-43f2-8ede-0d7ac3baea9e" },
  { "15095954672103411799", "3137075042405433804", "d17f9acae01f5057", "2b8921215051c1cc", "7f26144b-9828-4fcd-99a5-4a7bb1fee08f" },
}

local browser = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  ["Accept"] = "application/json, text/plain, */*",
  ["Accept-Language"] = "en-US,en;q=0.9",
  ["Referer"] = origin .. "/",
  ["Origin"] = origin,
}

local requests = {}
local n = 0

function init(args)
  for i, id in ipairs(ids) do
    local h = {}
    for k, v in pairs(browser) do h[k] = v end
    if mode == "preflight" then
      h["Access-Control-Request-Method"] = "GET"
      h["Access-Control-Request-Headers"] =
        "baggage,traceparent,tracestate,x-datadog-origin,x-datadog-parent-id,x-datadog-sampling-priority,x-datadog-trace-id"
      h["Accept"] = "*/*"
      requests[i] = wrk.format("OPTIONS", nil, h)
    else
      h["x-datadog-origin"] = "rum"
      h["x-datadog-parent-id"] = id[2]
      h["x-datadog-sampling-priority"] = "1"
      h["x-datadog-trace-id"] = id[1]
      h["traceparent"] = "00-0000000000000000" .. id[3] .. "-" .. id[4] .. "-01"
      h["tracestate"] = "dd=s:1;o:rum"
      h["baggage"] = "session.id=" .. id[5]
      requests[i] = wrk.format("GET", nil, h)
    end
  end
end

local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pace and pace > 0 then
  function delay()
    return pace
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end

function done(summary, latency, reqs)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
