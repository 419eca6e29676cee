//! `vx6`: the VX6 command-line tool and (from the sessions issue on) its daemon.
//!
//! This binary is the only place that reads files, the environment and the clock; it hands what
//! it reads to `vx6-core` as plain values.

mod atomic;
mod cli;
mod clock;
mod config;
mod daemon;
mod home;
mod identity_file;
mod logging;
mod registry_file;
mod spec;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "reading X: permission denied".
            eprintln!("vx6: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
