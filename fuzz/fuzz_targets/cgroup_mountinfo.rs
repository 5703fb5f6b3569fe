//! /proc/self/mountinfo: the cgroup mounts and the layout built from them.
#![no_main]
use cased_agent::collect::cgroup::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mountinfo::cgroup_mounts(text);
    let _ = mountinfo::layout_from_mountinfo(text, std::path::Path::new("/sys/fs/cgroup"));
    let _ = mountinfo::unescape(text);
});
