-- wrk: wait DELAY_MS after each response on a connection, so the load is
-- bounded (about connections / delay) and a debug-built tracer keeps up.
local delay_ms = tonumber(os.getenv("DELAY_MS") or "2")
function delay()
  return delay_ms
end
