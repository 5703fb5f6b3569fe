//! Helpers shared by the integration tests.

pub mod receiver;

use cased_agent::config::Config;
use cased_agent::sink::{self, AnySink};

/// The `cased` sink of a config with this endpoint and key (cluster `prod`,
/// node `n1`).
pub fn cased_sink(endpoint: &str, key: &str) -> AnySink {
    let cfg = Config::try_parse_from([
        "cased-agent",
        "--sink",
        "cased",
        "--endpoint",
        endpoint,
        "--api-key",
        key,
        "--cluster-id",
        "prod",
        "--node-name",
        "n1",
    ])
    .expect("valid config");
    sink::build(&cfg).expect("sink builds")
}
