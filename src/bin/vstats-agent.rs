//! Thin shell: parse flags and environment, then hand over to `vstats::agent`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vstats::agent::collect::Collector;
use vstats::agent::config::{self, Command};
use vstats::agent::session::{self, Signals};

/// dlmalloc rather than the C library's `malloc`: the static builds link
/// zig's libc, whose allocator (SmpAllocator) keeps one free list per CPU
/// and moves a single-threaded process from one list to the next whenever a
/// size class runs out, stranding the blocks freed on the other: the agent's
/// heap kept growing by about 1 KiB a sample (RssAnon 172 KiB after 8 s,
/// 240 KiB after 65 s on 2 CPUs; flat when pinned to one CPU).
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The longest `--once` waits between its baseline and its sample.
const ONCE_WINDOW: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let command = match config::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok())
    {
        Ok(command) => command,
        Err(e) => {
            eprintln!("vstats-agent: {e}\nTry 'vstats-agent --help'.");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", config::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("vstats-agent {}", vstats::VERSION);
            ExitCode::SUCCESS
        }
        Command::Once(config) => {
            vstats::init_logging(config.log_level);
            let mut collector = Collector::new(config.paths, config.counted_interfaces);
            std::thread::sleep(config.interval.min(ONCE_WINDOW));
            let mut sample = collector.sample();
            sample.timestamp = vstats::protocol::rfc3339(std::time::SystemTime::now());
            match vstats::protocol::to_json_pretty(&sample) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vstats-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(config, relay) => {
            vstats::init_logging(config.log_level);
            let tls = if relay.endpoint.tls {
                match vstats::tls::client_config(relay.ca_file.as_deref()) {
                    Ok(tls) => Some(Arc::new(tls)),
                    Err(e) => {
                        eprintln!("vstats-agent: --ca-file: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                None
            };
            let signals = match Signals::install() {
                Ok(signals) => signals,
                Err(e) => {
                    eprintln!("vstats-agent: cannot watch for signals: {e}");
                    return ExitCode::FAILURE;
                }
            };
            session::run(&config, &relay, tls, &signals);
            ExitCode::SUCCESS
        }
    }
}
