//! The disk buffer's record reader (what recovery runs over a segment after
//! a crash) and the cursor decoder. Invariants: the scan covers the input
//! exactly, in order; every record it accepts re-encodes to the same bytes.
#![no_main]
use bytes::Bytes;
use cased_agent::delivery::disk::{self, Scanned};
use cased_agent::sink::EncodedBatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    for s in disk::scan_records(data) {
        match s {
            Scanned::Record { offset, len, view } => {
                assert_eq!(offset, pos);
                let again = disk::encode_record(&EncodedBatch {
                    kind: view.kind,
                    items: view.items,
                    encoding: view.encoding,
                    body: Bytes::copy_from_slice(view.body),
                });
                assert_eq!(&again[..], &data[offset..offset + len]);
                pos += len;
            }
            Scanned::Corrupt { offset, len } => {
                assert_eq!(offset, pos);
                assert!(len > 0);
                pos += len;
            }
        }
    }
    assert_eq!(pos, data.len());
    let _ = disk::decode_cursor(data);
});
