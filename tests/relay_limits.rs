//! The relay at its connection limits, as a real process on loopback: the
//! open-files limit and `--max-connections`.

mod common;

use common::relay::Relay;
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The relay's user plus system CPU time so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: nix::unistd::Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn at_the_open_files_limit_the_relay_pauses_accepting_instead_of_spinning() {
    // Room for 1000 connections but only 48 descriptors: accept fails with
    // EMFILE while connections wait in the backlog.
    let relay_binary = std::env::var("VSTATS_RELAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vstats-relay").to_owned());
    let mut command = Command::new("sh");
    command.args(["-c", r#"ulimit -n 48 && exec "$0" "$@""#, &relay_binary]);
    let relay = Relay::start_binary(command, &["--max-connections", "1000"]);
    let pid = relay.process.pid();
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(relay.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(pid) - before;
    // A spinning listener takes the whole 3 s (300 ticks).
    assert!(spent <= 30, "{spent} ticks of CPU in 3 s at the limit");
    let log = relay.process.log();
    let accept_lines = log.lines().filter(|l| l.contains("accept:")).count();
    assert!(
        (1..=2).contains(&accept_lines),
        "{accept_lines} accept lines:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(log.contains("pausing new connections"), "{log}");

    // Descriptors come back when the idle clients leave; accepting resumes.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(relay.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = std::io::Write::write_all(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz after the clients left: {response:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_over_max_connections_gets_a_503() {
    let relay = Relay::start(&["--max-connections", "2"]);
    let _idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(relay.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(relay.addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut response = String::new();
    let _ = over.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response:?}"
    );
    assert!(response.ends_with("too many connections\n"), "{response:?}");
}
