//! The cgroup path classifier, and the `/proc/<pid>/cgroup` line split that
//! feeds it. Invariant: the container's cgroup is a prefix of the input.
#![no_main]
use cased_agent::collect::cgroup::path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(c) = path::classify(text) {
        assert!(text.starts_with(c.cgroup));
    }
    for line in text.lines() {
        if let Some((_, p)) = path::split_proc_cgroup_line(line)
            && let Some(c) = path::classify(p)
        {
            assert!(p.starts_with(c.cgroup));
        }
    }
    let _ = path::unescape_unit(text);
});
