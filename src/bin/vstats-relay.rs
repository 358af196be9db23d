//! Thin shell: parse flags, dispatch `server ...` to the registry CLI and
//! `notify test` to the notifier, otherwise serve.

use std::process::ExitCode;
use vstats::relay::{self, Command};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let command = match relay::parse_command_line(args, |name| std::env::var(name).ok()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("vstats-relay: {e}\nTry 'vstats-relay --help'.");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", relay::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("vstats-relay {}", vstats::VERSION);
            ExitCode::SUCCESS
        }
        Command::Registry(args) => {
            let code = relay::server_command(
                args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            ExitCode::from(code)
        }
        Command::NotifyTest(config) => {
            vstats::init_logging(config.log_level);
            let code = relay::notify_test_command(
                &config.notify,
                config.notify_ca_file.as_deref(),
                &mut std::io::stdout().lock(),
            );
            ExitCode::from(code)
        }
        Command::Serve(config) => {
            vstats::init_logging(config.log_level);
            match relay::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vstats-relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
