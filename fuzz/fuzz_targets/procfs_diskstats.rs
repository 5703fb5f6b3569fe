//! /proc/diskstats: the line parser, the whole-disk filter and the sum.
#![no_main]
use cased_agent::collect::procfs::diskstats;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = diskstats::parse(text, |d| {
        let _ = diskstats::is_whole_disk(d.name);
    });
    let _ = diskstats::sum_whole_disks(text);
});
