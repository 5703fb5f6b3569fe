//! /proc/net/dev: the line parser, the virtual-interface filter and sums.
#![no_main]
use cased_agent::collect::procfs::net_dev;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = net_dev::parse(text, |name, _| {
        let _ = net_dev::is_virtual(name);
    });
    let _ = net_dev::sum_but_lo(text);
    let _ = net_dev::sum_physical(text);
});
