-- wrk script: "everything on" — a gateway key, and a body that differs per
-- request so every request is a cache miss that still goes through the
-- cache (lookup, coalescing registry, store).
-- Usage: AIGW_KEY=aigw-... wrk -t1 -c32 -d5s -s loadtest/chat-all.lua http://127.0.0.1:8080/mock/v1/chat/completions
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("AIGW_KEY") or "")
local n = 0

function request()
  n = n + 1
  local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words. ' .. n .. '"}]}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, errors))
end
