//! The relay at its limits, as a real process on loopback: the open-files
//! limit, `--max-connections`, protocol violations and the sample limits.

use crate::common;

use common::relay::{Relay, is};
use serde_json::json;
use std::io::{Read, Write};
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

#[test]
fn a_protocol_violation_gets_a_1002_close_and_is_counted() {
    let relay = Relay::start(&[]);
    let (_, token) = relay.add_server("pi", "");
    let mut tcp = TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /ws/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A text frame without the mask every client frame must carry.
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let mut close = [0u8; 4];
    tcp.read_exact(&mut close).unwrap();
    assert_eq!(close[0], 0x88, "not a close frame: {close:?}");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
    let (_, metrics) = relay.get("/metrics");
    assert!(
        metrics.contains("\nvstats_relay_protocol_errors_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_sample_with_20000_disk_entries_is_dropped_not_forwarded() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(Duration::from_secs(10), "hello", |f| f["type"] == "hello");
    let mut agent = relay.fake_agent(&token);

    // Under the 64 KiB frame limit, so only the sample limits can stop it.
    let hostile = format!(
        r#"{{"type":"metrics","data":{{"hostname":"hostile","disks":[{}]}}}}"#,
        vec!["{}"; 20_000].join(",")
    );
    assert!(hostile.len() < 64 * 1024, "{} bytes", hostile.len());
    agent.send(hostile);
    agent.send_metrics(json!({"hostname": "good", "disks": [{"mount": "/"}]}));

    let frame = dashboard.wait_for(Duration::from_secs(10), "a sample", |f| {
        is(f, "metrics", &id)
    });
    assert_eq!(frame["data"]["metrics"]["hostname"], "good", "{frame}");
    let (_, servers) = relay.get("/api/servers");
    assert!(servers.contains(r#""hostname":"good""#), "{servers}");
    let (_, metrics) = relay.get("/metrics");
    assert!(
        metrics.contains("\nvstats_relay_malformed_frames_total 1\n"),
        "{metrics}"
    );
    assert!(
        relay
            .process
            .log()
            .contains("an array or object with more than 4096 entries"),
        "{}",
        relay.process.log()
    );
}
