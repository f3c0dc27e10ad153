//! `cloud`: the command-line client of The Cloud. Parses the command line, runs the command,
//! and turns a failure into `error: …` on stderr with exit code 1 (usage errors exit 2).

// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod cli_network;
mod cli_snapshot;
mod cli_volume;
mod commands;
mod config;
mod errors;
mod output;
mod output_network;
mod output_volume;
mod rulespec;
#[cfg(test)]
mod testutil;
mod wait;
mod wait_snapshot;
mod wait_volume;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(commands::run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", errors::render(&err));
            ExitCode::from(1)
        }
    }
}
