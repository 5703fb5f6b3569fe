//! /proc/pressure/{cpu,memory,io} (PSI).
#![no_main]
use cased_agent::collect::procfs::pressure;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pressure::parse(text);
});
