-- wrk script: long paced streams, the way the public AI-gateway boards load
-- gateways: 20 chunks 50 ms apart (about 1 s per stream), include_usage on.
-- With -c1000 it holds ~1,000 streams open at once.
-- Usage: wrk -t2 -c1000 -d15s --timeout 10s -s loadtest/chat-stream-paced.lua http://127.0.0.1:8080/mock/v1/chat/completions
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-mock-tokens"] = "20"
wrk.headers["x-mock-delay-ms"] = "50"
wrk.body = '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in five words, slowly."}]}'

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, errors))
end
