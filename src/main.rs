//! The `etl` binary: parse the command line, hand it to the library, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
