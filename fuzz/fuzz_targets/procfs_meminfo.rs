//! /proc/meminfo.
#![no_main]
use cased_agent::collect::procfs::meminfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = meminfo::parse(text);
});
