-- wrk script for benches/ebpf_http.sh: a fixed pause (WRK_DELAY_MS, whole
-- milliseconds; wrk truncates the value) after each response on each
-- connection, so the offered load is about connections / (delay + latency).
local d = tonumber(os.getenv("WRK_DELAY_MS") or "10")

function delay()
    return d
end
