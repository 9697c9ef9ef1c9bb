//! The `etl` binary: parse the command line, hand it to the library, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena and keeps freed memory in them; with
    // DuckDB's and Polars' thread pools that grew a large file's peak memory by a third. Two
    // arenas keep it bounded (measured in BENCHMARKS.md); set before any thread starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called once, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = match etl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Bad arguments exit 2; --help and --version are successes.
            return if e.use_stderr() { ExitCode::from(etl::exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    etl::run(cli)
}
