//! The `bulwark` binary: parses the command line and hands each command to
//! the module that carries it out.
//!
//! It stays thin: no protocol, storage or directory logic lives here, only
//! wiring (open the store named by the configuration, start the services)
//! and the presentation of admin command results.

mod admin;
mod cli;
mod init;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command's failure, printed as one line.
pub type CmdResult = Result<(), Box<dyn std::error::Error>>;

fn run(cli: cli::Cli) -> CmdResult {
    use cli::Command;
    match cli.command {
        Command::Init(args) => init::init(&args).map(|_| ()),
        Command::Quickstart(args) => init::quickstart(&args),
        Command::Serve => serve::serve(&cli.config),
        command => admin::run(&cli.config, command),
    }
}
