//! `skiff`: one binary for the daemon (`skiff server`), the per-group supervisor (hidden
//! `skiff supervisor`) and every client command (`skiff container ...`).

mod admin_token;
mod private_file;
mod server;
mod streams;
mod tls;

use std::process::ExitCode;

use clap::Parser;
use skiff_cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The supervisor builds its own small runtime: it must not inherit a multi-threaded one.
        Command::Supervisor(args) => ExitCode::from(skiff_runtime::supervisor_main(&args.group_dir).clamp(0, 255) as u8),
        Command::Server(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => skiff_cli::run(cli),
    }
}
