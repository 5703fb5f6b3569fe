//! Flags and environment (SPEC §2), validated once.
//!
//! clap reads raw strings (flag beats variable); [`Config::from_cli`] turns
//! them into typed values or a [`ConfigError`] that names the flag, the
//! value and what is expected. `main` prints that one line and exits 2.
//! The API key is never part of an error or a `Debug` rendering.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Raw command line. Everything is a string so that validation, not clap,
/// decides what a bad value looks like.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cased-agent",
    version,
    about = "Kubernetes node agent: node, container, HTTP and trace metrics for the Cased API"
)]
pub struct Cli {
    /// API base URL
    #[arg(
        long,
        env = "CASED_API_ENDPOINT",
        default_value = "https://app.cased.com"
    )]
    pub endpoint: String,
    /// Bearer token; required by the `cased` sink
    #[arg(long, env = "CASED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Cluster identifier; required by the `cased` sink (`local` otherwise)
    #[arg(long, env = "CASED_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Node identifier (default: the host name)
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Collection interval (`500ms`, `15s`, `1m`)
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_INTERVAL",
        default_value = "15s"
    )]
    pub interval: String,
    /// Max metrics (or spans) per request
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_BATCH_SIZE",
        default_value = "100"
    )]
    pub batch_size: String,
    /// Host proc filesystem
    #[arg(long, env = "PROC_PATH", default_value = "/proc")]
    pub proc_path: PathBuf,
    /// Host cgroup root
    #[arg(long, env = "CGROUP_PATH", default_value = "/sys/fs/cgroup")]
    pub cgroup_path: PathBuf,
    /// eBPF HTTP tracing (true/false/1/0)
    #[arg(long, env = "ENABLE_EBPF", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub enable_ebpf: String,
    /// Where eBPF sees HTTP: auto (sock when the kernel has the socket
    /// tracepoints, 6.3+), sock, syscalls (the fallback)
    #[arg(long, env = "CASED_EBPF_ATTACH", default_value = "auto")]
    pub ebpf_attach: String,
    /// eBPF: also HTTPS, through uprobes on OpenSSL's SSL_read/SSL_write in
    /// every libssl (or binary with OpenSSL's symbols) a process maps
    /// (true/false/1/0)
    #[arg(long, env = "CASED_EBPF_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub ebpf_tls: String,
    /// OTLP receiver (true/false/1/0)
    #[arg(long, env = "ENABLE_OTEL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub enable_otel: String,
    /// OTLP/HTTP port
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "OTEL_PORT",
        default_value = "4318"
    )]
    pub otel_port: String,
    /// OTLP/gRPC port
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "OTEL_GRPC_PORT",
        default_value = "4317"
    )]
    pub otel_grpc_port: String,
    /// OTLP metric series held per service; data points of further series
    /// are counted, not kept
    #[arg(
        long,
        env = "CASED_OTEL_MAX_SERIES_PER_SERVICE",
        default_value = "2000"
    )]
    pub otel_max_series_per_service: String,
    /// Health, readiness and /metrics port
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "HEALTH_PORT",
        default_value = "8080"
    )]
    pub health_port: String,
    /// Where batches go: `cased` or `stdout` (default: `cased` with an API key, else `stdout`)
    #[arg(long, env = "CASED_SINK")]
    pub sink: Option<String>,
    /// The agent's own namespace (its leader-election Lease lives there)
    #[arg(long, env = "POD_NAMESPACE", default_value = "cased-system")]
    pub namespace: String,
    /// Directory of the disk buffer (memory only when unset)
    #[arg(long, env = "CASED_BUFFER_PATH")]
    pub buffer_path: Option<PathBuf>,
    /// Cap of the disk buffer (`256MiB`, `1GiB`, bytes)
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_BUFFER_MAX_BYTES",
        default_value = "256MiB"
    )]
    pub buffer_max_bytes: String,
    /// Cap of the in-memory delivery queue
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_QUEUE_MAX_BYTES",
        default_value = "32MiB"
    )]
    pub queue_max_bytes: String,
    /// `none` or `gzip` for API requests
    #[arg(long, env = "CASED_COMPRESSION", default_value = "none")]
    pub compression: String,
    /// Timeout of one API request
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_REQUEST_TIMEOUT",
        default_value = "10s"
    )]
    pub request_timeout: String,
    /// How long SIGTERM/SIGINT waits for queued data to be delivered
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "CASED_SHUTDOWN_GRACE",
        default_value = "10s"
    )]
    pub shutdown_grace: String,
    /// `text` or `json` log lines on stderr
    #[arg(long, env = "CASED_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Run one collection cycle (primed about a second earlier), deliver it, exit
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Cased,
    Stdout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The API key: kept out of `Debug` and `Display` so it cannot leak into logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: url::Url,
    pub api_key: Secret,
    pub cluster_id: String,
    pub node_name: String,
    pub interval: Duration,
    pub batch_size: usize,
    pub proc_path: PathBuf,
    pub cgroup_path: PathBuf,
    pub enable_ebpf: bool,
    pub ebpf_attach: crate::ebpf::Attach,
    pub ebpf_tls: bool,
    pub enable_otel: bool,
    pub otel_port: u16,
    pub otel_grpc_port: u16,
    pub otel_max_series_per_service: usize,
    pub health_port: u16,
    pub sink: SinkKind,
    pub namespace: String,
    pub buffer_path: Option<PathBuf>,
    pub buffer_max_bytes: u64,
    pub queue_max_bytes: u64,
    pub compression: Compression,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub once: bool,
}

/// A bad value: names the flag, the value (never the API key's) and what is
/// expected. Rendered as one line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: &'static str,
    pub value: String,
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "missing value for --{}: {}", self.flag, self.expected)
        } else {
            write!(
                f,
                "invalid value '{}' for --{}: {}",
                self.value.escape_debug(),
                self.flag,
                self.expected
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn bad(flag: &'static str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// `15s`, `500ms`, `1m`, `1h30m`; zero is refused.
pub fn parse_duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let expected = "expected a positive duration such as 500ms, 15s or 1m";
    let d = humantime::parse_duration(s.trim()).map_err(|_| bad(flag, s, expected))?;
    if d.is_zero() {
        return Err(bad(flag, s, expected));
    }
    Ok(d)
}

/// `true`/`false`/`1`/`0` (case-insensitive).
pub fn parse_bool(flag: &'static str, s: &str) -> Result<bool, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(flag, s, "expected true, false, 1 or 0")),
    }
}

/// A positive count, at most 1,000,000.
pub fn parse_count(flag: &'static str, s: &str) -> Result<usize, ConfigError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(bad(flag, s, "expected a whole number from 1 to 1000000")),
    }
}

/// A TCP port, 1–65535.
pub fn parse_port(flag: &'static str, s: &str) -> Result<u16, ConfigError> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(bad(flag, s, "expected a port number from 1 to 65535")),
    }
}

/// Byte sizes: `1048576`, `512KiB`, `256MiB`, `1GiB`, `100MB`, `1G`.
pub fn parse_bytes(flag: &'static str, s: &str) -> Result<u64, ConfigError> {
    let expected = "expected a positive size such as 268435456, 512KiB, 256MiB or 1GiB";
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad(flag, s, expected))?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" | "ki" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" | "mi" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" | "gi" => 1 << 30,
        _ => return Err(bad(flag, s, expected)),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(bad(flag, s, expected)),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// `--sink` (by default `cased` with an API key, else `stdout`) and the
/// cluster id (`local` for stdout), checking what the cased sink needs.
fn sink_and_cluster(
    sink: Option<&str>,
    api_key: &Secret,
    cluster_id: Option<String>,
) -> Result<(SinkKind, String), ConfigError> {
    let sink = match sink.map(str::trim) {
        None | Some("") => {
            if api_key.is_empty() {
                SinkKind::Stdout
            } else {
                SinkKind::Cased
            }
        }
        Some("cased") => SinkKind::Cased,
        Some("stdout") => SinkKind::Stdout,
        Some(other) => return Err(bad("sink", other, "expected cased or stdout")),
    };
    let cluster_id = cluster_id
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if sink == SinkKind::Cased {
        if api_key.is_empty() {
            return Err(bad(
                "api-key",
                "",
                "the cased sink needs an API key (--api-key or CASED_API_KEY)",
            ));
        }
        if cluster_id.is_none() {
            return Err(bad(
                "cluster-id",
                "",
                "the cased sink needs a cluster id (--cluster-id or CASED_CLUSTER_ID)",
            ));
        }
    }
    Ok((sink, cluster_id.unwrap_or_else(|| "local".to_string())))
}

fn parse_batch_size(v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(bad(
            "batch-size",
            v,
            "expected a whole number from 1 to 100000",
        )),
    }
}

fn parse_compression(v: &str) -> Result<Compression, ConfigError> {
    match v.trim() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        _ => Err(bad("compression", v, "expected none or gzip")),
    }
}

fn parse_log_format(v: &str) -> Result<LogFormat, ConfigError> {
    match v.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(bad("log-format", v, "expected text or json")),
    }
}

impl Config {
    /// Validate the raw command line.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let endpoint = url::Url::parse(cli.endpoint.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                bad(
                    "endpoint",
                    &cli.endpoint,
                    "expected an http:// or https:// URL such as https://app.cased.com",
                )
            })?;
        let api_key = Secret(cli.api_key.unwrap_or_default().trim().to_string());
        let (sink, cluster_id) = sink_and_cluster(cli.sink.as_deref(), &api_key, cli.cluster_id)?;
        let node_name = cli
            .node_name
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(host_name);

        let batch_size = parse_batch_size(&cli.batch_size)?;
        let compression = parse_compression(&cli.compression)?;
        let log_format = parse_log_format(&cli.log_format)?;
        let namespace = cli.namespace.trim().to_string();
        if namespace.is_empty() {
            return Err(bad(
                "namespace",
                &cli.namespace,
                "expected a namespace name",
            ));
        }
        Ok(Config {
            endpoint,
            api_key,
            cluster_id,
            node_name,
            interval: parse_duration("interval", &cli.interval)?,
            batch_size,
            proc_path: cli.proc_path,
            cgroup_path: cli.cgroup_path,
            enable_ebpf: parse_bool("enable-ebpf", &cli.enable_ebpf)?,
            ebpf_attach: crate::ebpf::Attach::parse(&cli.ebpf_attach).ok_or_else(|| {
                bad(
                    "ebpf-attach",
                    &cli.ebpf_attach,
                    "expected auto, sock or syscalls",
                )
            })?,
            ebpf_tls: parse_bool("ebpf-tls", &cli.ebpf_tls)?,
            enable_otel: parse_bool("enable-otel", &cli.enable_otel)?,
            otel_port: parse_port("otel-port", &cli.otel_port)?,
            otel_grpc_port: parse_port("otel-grpc-port", &cli.otel_grpc_port)?,
            otel_max_series_per_service: parse_count(
                "otel-max-series-per-service",
                &cli.otel_max_series_per_service,
            )?,
            health_port: parse_port("health-port", &cli.health_port)?,
            sink,
            namespace,
            buffer_path: cli.buffer_path.filter(|p| !p.as_os_str().is_empty()),
            buffer_max_bytes: parse_bytes("buffer-max-bytes", &cli.buffer_max_bytes)?,
            queue_max_bytes: parse_bytes("queue-max-bytes", &cli.queue_max_bytes)?,
            compression,
            request_timeout: parse_duration("request-timeout", &cli.request_timeout)?,
            shutdown_grace: parse_duration("shutdown-grace", &cli.shutdown_grace)?,
            log_format,
            once: cli.once,
        })
    }

    /// Parse `args` (and the environment) and validate.
    pub fn try_parse_from<I, T>(args: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::from_cli(cli).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["cased-agent"];
        v.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(v).expect("clap accepts"))
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("interval", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("interval", "15s").unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            parse_duration("interval", "1m").unwrap(),
            Duration::from_secs(60)
        );
        assert!(parse_duration("interval", "0s").is_err());
        assert!(parse_duration("interval", "soon").is_err());
        assert!(parse_duration("interval", "-1s").is_err());
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("x", "256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("x", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("x", "1000").unwrap(), 1000);
        assert_eq!(parse_bytes("x", "2MB").unwrap(), 2_000_000);
        assert!(parse_bytes("x", "0").is_err());
        assert!(parse_bytes("x", "lots").is_err());
        assert!(parse_bytes("x", "99999999999999GiB").is_err());
    }

    #[test]
    fn sink_defaults() {
        let c = parse(&[
            "--api-key",
            "k",
            "--cluster-id",
            "prod",
            "--node-name",
            "n1",
        ])
        .unwrap();
        assert_eq!(c.sink, SinkKind::Cased);
        assert_eq!(c.cluster_id, "prod");
        let c = parse(&["--node-name", "n1"]).unwrap();
        assert_eq!(c.sink, SinkKind::Stdout);
        assert_eq!(c.cluster_id, "local");
        let e = parse(&["--sink", "cased", "--cluster-id", "x"]).unwrap_err();
        assert_eq!(e.flag, "api-key");
        let e = parse(&["--api-key", "sekrit"]).unwrap_err();
        assert_eq!(e.flag, "cluster-id");
        assert!(!e.to_string().contains("sekrit"));
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--interval", "abc"][..], "interval"),
            (&["--batch-size", "0"][..], "batch-size"),
            (&["--otel-port", "70000"][..], "otel-port"),
            (
                &["--otel-max-series-per-service", "0"][..],
                "otel-max-series-per-service",
            ),
            (&["--health-port", "0"][..], "health-port"),
            (&["--endpoint", "ftp://x"][..], "endpoint"),
            (&["--endpoint", "not a url"][..], "endpoint"),
            (&["--enable-ebpf=maybe"][..], "enable-ebpf"),
            (&["--ebpf-attach=kprobe"][..], "ebpf-attach"),
            (&["--compression", "brotli"][..], "compression"),
            (&["--sink", "kafka"][..], "sink"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.flag, flag, "{args:?}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn booleans() {
        assert!(parse(&["--enable-otel"]).unwrap().enable_otel);
        assert!(!parse(&["--enable-otel=0"]).unwrap().enable_otel);
        assert!(parse(&["--enable-ebpf=1"]).unwrap().enable_ebpf);
        use crate::ebpf::Attach;
        assert_eq!(parse(&[]).unwrap().ebpf_attach, Attach::Auto);
        for (v, want) in [("sock", Attach::Sock), ("SYSCALLS", Attach::Syscalls)] {
            assert_eq!(parse(&["--ebpf-attach", v]).unwrap().ebpf_attach, want);
        }
    }

    #[test]
    fn secret_is_not_debug_printed() {
        let c = parse(&["--api-key", "topsecret", "--cluster-id", "c"]).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
        assert_eq!(c.api_key.expose(), "topsecret");
    }
}
