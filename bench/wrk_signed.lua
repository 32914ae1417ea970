-- wrk script: POSTs pre-signed Stream webhooks, one line each: webhook_id \t signature \t body.
-- Usage: wrk -s bench/wrk_signed.lua URL -- requests.tsv API_KEY
-- The HMAC is computed in Python beforehand (wrk's Lua has no crypto); each line has its own
-- X-Webhook-Id, and the list is long enough that a run does not wrap around.
local reqs = {}
local counter = 0
local api_key = "bench-key"

function init(args)
  api_key = args[2] or api_key
  for line in io.lines(args[1]) do
    local id, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    if id then
      reqs[#reqs + 1] = { id = id, sig = sig, body = body }
    end
  end
end

function request()
  counter = counter + 1
  local r = reqs[((counter - 1) % #reqs) + 1]
  return wrk.format("POST", "/webhooks/stream", {
    ["Content-Type"] = "application/json",
    ["X-Api-Key"] = api_key,
    ["X-Signature"] = r.sig,
    ["X-Webhook-Id"] = r.id,
    ["X-Webhook-Attempt"] = "1",
  }, r.body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, \"connect\": %d, " ..
    "\"read\": %d, \"write\": %d, \"timeout\": %d, \"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
