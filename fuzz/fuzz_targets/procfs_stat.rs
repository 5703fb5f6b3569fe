//! /proc/stat: the aggregate `cpu` line.
#![no_main]
use cased_agent::collect::procfs::stat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = stat::parse_cpu(text) {
        let _ = t.total();
    }
});
