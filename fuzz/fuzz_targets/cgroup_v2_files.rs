//! cgroup v2 files: every parser of `collect::cgroup::v2` over the same
//! input.
#![no_main]
use cased_agent::collect::cgroup::v2;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = v2::cpu_stat(text);
    let _ = v2::cpu_max(text);
    let _ = v2::memory_stat(text);
    let _ = v2::oom_kills(text);
    let _ = v2::io_stat(text);
});
