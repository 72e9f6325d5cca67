//! `bge-m3-server`: see `bge-m3-server --help` and the crate's README.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use bge_m3_server::{logging, Config, Report, EXIT_ABANDONED};
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(config.log_format);
    match bge_m3_server::run(config).await {
        Ok(stopped) if stopped.abandoned == 0 => ExitCode::SUCCESS,
        // Stopped, but some requests were cut off: say so to the supervisor.
        Ok(_) => ExitCode::from(EXIT_ABANDONED),
        Err(error) => {
            tracing::error!(error = %Report(&error), "bge-m3-server stopped");
            ExitCode::FAILURE
        }
    }
}
