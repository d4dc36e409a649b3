//! The `fleetctl` binary: parse arguments, set up logging, run the command, map the outcome to
//! an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 1 like every other error: `plan` keeps 2 for "changes pending".
    let cli = match fleetctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    fleetctl::cli::init_logging(&cli);
    match fleetctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
