//! Entry point: parse flags, set up logging, run the agent.

use std::process::ExitCode;

use clap::Parser;

use cased_agent::config::{Cli, Config};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // one line, no usage dump: the first line names the problem
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("cased-agent: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cased-agent: {e}");
            return ExitCode::from(2);
        }
    };
    cased_agent::logging::init(cfg.log_format);
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cased-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cased_agent::agent::run(cfg))
}

/// glibc gives every thread that allocates its own arena; the cycle's
/// buffers then sit in several arenas at once and peak RSS with 1,000
/// containers was ~20 MiB instead of ~16 (BENCHMARKS.md). Two arenas are
/// plenty for a runtime of two workers and one collection thread.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called once at start,
    // before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
