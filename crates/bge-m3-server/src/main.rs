//! `bge-m3-server`: see `bge-m3-server --help` and the crate's README.

use std::process::ExitCode;

use bge_m3_server::{logging, Config, Report};
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(config.log_format);
    match bge_m3_server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %Report(&error), "bge-m3-server stopped");
            ExitCode::FAILURE
        }
    }
}
