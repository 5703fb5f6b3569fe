//! cgroup v1 files: every parser of `collect::cgroup::v1` (and the shared
//! helpers of `collect::cgroup::parse`) over the same input.
#![no_main]
use cased_agent::collect::cgroup::{parse, v1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = v1::cpuacct_usage(text);
    let _ = v1::cpu_stat(text);
    let _ = v1::cfs_quota(text);
    let _ = v1::cfs_period(text);
    let _ = v1::memory_usage(text);
    let _ = v1::memory_limit(text);
    let _ = v1::memory_stat(text);
    let _ = v1::oom_kills(text);
    let _ = v1::io_service_bytes(text);
    let _ = parse::single_u64("fuzz", text);
    let _ = parse::max_or_u64("fuzz", text);
    for (k, v) in parse::kv_lines(text) {
        let _ = parse::num("fuzz", k, v);
    }
});
