//! Test helpers shared by unit tests.

/// The text of a file under `shared/fixtures/` (beside the project's root).
pub fn fixture(rel: &str) -> String {
    let p = format!("{}/../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}
