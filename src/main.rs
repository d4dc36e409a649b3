//! The `fleetctl` binary: parse arguments, set up logging, run the command, map the outcome to
//! an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fleetctl::cli::Cli::parse();
    fleetctl::cli::init_logging(&cli);
    match fleetctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
