//! The TLS path's ELF readers on arbitrary bytes: the string-table looks
//! (all, and the dynamic symbols' one; header and section headers split at
//! a chosen point), Go's buildinfo version, return-instruction decoding,
//! and the whole-file parses for OpenSSL's and Go's functions.
#![no_main]
use cased_agent::ebpf::tls::elf::{self, Probes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // the last 10 bytes choose the split point and the code's address; the
    // parsers see the whole input (an ELF file starts at byte 0)
    let mut ctl = [0u8; 10];
    let n = data.len().min(10);
    ctl[..n].copy_from_slice(&data[data.len() - n..]);
    let split = usize::from(u16::from_le_bytes([ctl[0], ctl[1]])) % (data.len() + 1);
    let ip = u64::from_le_bytes(ctl[2..].try_into().unwrap());

    let (head, shdrs) = data.split_at(split);
    if let Some(tables) = elf::string_tables(head, shdrs) {
        assert!(tables.len() <= shdrs.len() / 64);
    }
    if let Some(dynstr) = elf::dynamic_string_table(head, shdrs) {
        assert_eq!(dynstr.len(), 1);
        assert!(elf::string_tables(head, shdrs).is_some());
    }
    let _ = elf::go_version(data);
    for off in elf::ret_offsets(data, ip) {
        assert!(
            (off as usize) < data.len(),
            "ret at {off} of {}",
            data.len()
        );
    }
    if let Ok(funcs) = elf::defined_ssl_functions(data) {
        // SSL_read and SSL_write both, or nothing; each once
        assert!(
            funcs.is_empty() || (funcs.contains(&"SSL_read") && funcs.contains(&"SSL_write")),
            "{funcs:?}"
        );
        for (i, f) in funcs.iter().enumerate() {
            assert!(!funcs[..i].contains(f), "{funcs:?}");
        }
    }
    if let Ok(Some(p)) = elf::go_probes(data) {
        match p {
            Probes::Go { rets, .. } => assert!((1..=64).contains(&rets.len()), "{rets:?}"),
            other => panic!("go_probes gave {other:?}"),
        }
    }
});
