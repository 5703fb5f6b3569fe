//! /proc/<pid>/maps as the TLS path reads it: the executable file mappings,
//! one per file, each one's name under map_files/ and whether it is a
//! shared library.
#![no_main]
use cased_agent::ebpf::tls::maps::parse_maps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let found = parse_maps(&text);
    for (i, m) in found.iter().enumerate() {
        assert!(m.path.starts_with('/'), "{m:?}");
        assert!(
            found[..i].iter().all(|o| o.file != m.file),
            "file twice: {m:?}"
        );
        let _ = m.shared();
        let name = m.map_file();
        assert_eq!(name.matches('-').count(), 1, "{name:?} from {m:?}");
    }
});
