//! What a probe of the relay found it could be taken down with,
//! each tried again on a real relay process over loopback. A test per
//! fault, named after what it guards; each fails on the relay before the
//! fix (`VSTATS_RELAY_BIN` runs another build). `scripts/bench-hostile.sh`
//! measures the same attacks at full size (BENCHMARKS.md).

use crate::common;

use common::relay::Relay;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);

fn metric(relay: &Relay, name: &str) -> f64 {
    let (status, text) = relay.get("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn full_sample() -> Value {
    json!({"type": "metrics", "data": {"hostname": "pi", "cpu": {"usage": 1.0},
        "network": {"interfaces": [{"name": "eth0", "counted": true, "rx": 0, "tx": 0,
            "rx_total": 1, "tx_total": 1}]}}})
}

fn patch_of_interfaces(entries: Vec<Value>) -> String {
    json!({"type": "patch", "data": {"elapsed_ms": 1000,
        "network": {"interfaces": entries}}})
    .to_string()
}

/// Waits until `/metrics` shows `name` at `value` (the loop may not have
/// read the last frames yet).
fn wait_for_metric(relay: &Relay, name: &str, value: f64) {
    let deadline = Instant::now() + SOON;
    while metric(relay, name) != value {
        assert!(Instant::now() < deadline, "{name} never reached {value}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_patch_that_rebuilds_past_64_kib_drops_no_dashboard() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboards: Vec<_> = (0..2).map(|_| relay.dashboard()).collect();
    let mut agent = relay.fake_agent(&token);
    agent.send(full_sample().to_string());
    for dashboard in &mut dashboards {
        dashboard.wait_for(SOON, "the full sample", |f| f["type"] == "metrics");
    }
    // 12 KB that would rebuild 4096 empty interfaces: a 214 KB message,
    // past every dashboard's 160 KiB write buffer.
    agent.send(patch_of_interfaces(vec![json!({}); 4096]));
    wait_for_metric(&relay, "vstats_relay_malformed_frames_total", 1.0);
    agent.send(full_sample().to_string().replace("\"pi\"", "\"pi-2\""));
    for dashboard in &mut dashboards {
        let sample = dashboard.wait_for(SOON, "the next good sample", |f| f["type"] == "metrics");
        assert_eq!(sample["data"]["metrics"]["hostname"], "pi-2");
    }
    // A new dashboard gets its snapshot, the good sample in it.
    let mut late = relay.dashboard();
    let snapshot = late.wait_for(SOON, "the snapshot's sample", |f| {
        f["type"] == "metrics" && f["data"]["server_id"] == id.as_str()
    });
    assert_eq!(snapshot["data"]["metrics"]["hostname"], "pi-2");
}

#[test]
fn patches_cannot_grow_a_sample_or_the_relay() {
    let relay = Relay::start(&["--agent-max-rate", "1000"]);
    let (_, token) = relay.add_server("pi", "");
    let mut agent = relay.fake_agent(&token);
    agent.send(full_sample().to_string());
    agent.send(patch_of_interfaces(vec![json!({}); 4096]));
    // Each patch names 12 of 4096 interfaces with 4,000 bytes: without a
    // bound, 100 of them made a 5 MB sample re-serialized on every patch.
    let rss_before = relay.rss_kib();
    let name = "x".repeat(4000);
    for k in 0..100usize {
        let mut entries = vec![json!({}); 4096];
        for slot in 0..12 {
            entries[(k * 12 + slot) % 4096] = json!({ "name": name });
        }
        agent.send(patch_of_interfaces(entries));
    }
    // The first refused patch leaves the relay without the agent's view:
    // what follows is refused too, and the agent is closed (1007).
    assert_eq!(agent.wait_for_close(SOON), Some(1007));
    let (status, servers) = relay.get("/api/servers");
    assert_eq!(status, 200);
    assert!(
        servers.len() < 64 * 1024,
        "/api/servers of {} bytes",
        servers.len()
    );
    let rss_after = relay.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
}

#[test]
fn frames_after_a_1007_close_are_not_counted() {
    let relay = Relay::start(&[]);
    let (_, token) = relay.add_server("pi", "");
    // A raw client, which does not answer the relay's close as
    // tungstenite would: it goes on sending.
    let mut tcp = TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let head = format!(
        "GET /ws/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{UPGRADE}"
    );
    tcp.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_head(&mut tcp), 101);
    let malformed = masked_text(b"{not json");
    // Ten malformed in a row close the agent (1007).
    for _ in 0..10 {
        tcp.write_all(&malformed).unwrap();
    }
    let mut seen = Vec::new();
    let mut chunk = [0u8; 256];
    while !seen.contains(&0x88) {
        let n = tcp.read(&mut chunk).unwrap();
        assert!(n > 0, "no close frame");
        seen.extend_from_slice(&chunk[..n]);
    }
    // What it sends before answering the close is no longer parsed or
    // counted.
    for _ in 0..2000 {
        tcp.write_all(&malformed).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&relay, "vstats_relay_malformed_frames_total"), 10.0);
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads a response head to its blank line; its status.
fn read_head(tcp: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A whole masked client text frame of a short `payload`.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A raw upgrade to `/compat/ws/agent` from `source` (a loopback address):
/// the socket and the response's status.
fn compat_upgrade(relay: &Relay, source: [u8; 4]) -> (TcpStream, u16) {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    let from = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(source.into(), 0));
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &from).unwrap();
    let to = nix::sys::socket::SockaddrIn::from(match relay.addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("a loopback relay on IPv4"),
    });
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&socket), &to).unwrap();
    let mut tcp = TcpStream::from(socket);
    tcp.set_read_timeout(Some(SOON)).unwrap();
    let head = format!("GET /compat/ws/agent HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}");
    tcp.write_all(head.as_bytes()).unwrap();
    let status = read_head(&mut tcp);
    (tcp, status)
}

/// A masked client text frame's head announcing `len` bytes of payload.
fn frame_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    head
}

/// The close code the relay sent on a raw WebSocket, if it sent one
/// before the end of the stream.
fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    // An unmasked server close frame: 0x88, length, then the code.
    let at = bytes.iter().position(|&b| b == 0x88)?;
    bytes
        .get(at + 2..at + 4)
        .map(|code| u16::from_be_bytes([code[0], code[1]]))
}

#[test]
fn a_vstats_socket_before_auth_takes_4_kib_not_1_mib() {
    let relay = Relay::start(&[]);
    let (mut tcp, status) = compat_upgrade(&relay, [127, 0, 0, 1]);
    assert_eq!(status, 101);
    // A frame that says 1 MiB follows: refused at its head (1009).
    tcp.write_all(&frame_head(1 << 20)).unwrap();
    let _ = tcp.write_all(&vec![0x20; 8 * 1024]);
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    assert_eq!(close_code(&mut tcp), Some(1009));
}

#[test]
fn unauthenticated_vstats_sockets_are_few_per_address() {
    let relay = Relay::start(&[]);
    let held: Vec<TcpStream> = (0..16)
        .map(|_| {
            let (tcp, status) = compat_upgrade(&relay, [127, 0, 0, 1]);
            assert_eq!(status, 101);
            tcp
        })
        .collect();
    let (_, status) = compat_upgrade(&relay, [127, 0, 0, 1]);
    assert_eq!(status, 503, "a 17th from one address");
    let (_other, status) = compat_upgrade(&relay, [127, 0, 0, 2]);
    assert_eq!(status, 101, "another address has its own share");
    // A place comes back when its socket goes.
    drop(held);
    let deadline = Instant::now() + SOON;
    loop {
        let (_tcp, status) = compat_upgrade(&relay, [127, 0, 0, 1]);
        if status == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "no place given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_vstats_sample_of_thousands_of_long_interfaces_is_malformed() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("vs", "");
    let mut agent = relay.connect("/compat/ws/agent", &[]).unwrap();
    agent
        .send(json!({"type": "auth", "server_id": id, "token": token, "version": "x"}).to_string());
    agent.wait_for(SOON, "auth ok", |f| f["status"] == "ok");
    // The probe's frame: 3,600 interfaces with 230-byte names, 900 KB,
    // mapped in O(n²) before the fix.
    let interfaces: Vec<Value> = (0..3600)
        .map(|i| json!({"name": format!("{i:0>230}"), "rx_bytes": i, "tx_bytes": i}))
        .collect();
    let frame = json!({"type": "metrics", "metrics": {"hostname": "h",
        "network": {"interfaces": interfaces, "total_rx": 1, "total_tx": 1}}})
    .to_string();
    for _ in 0..3 {
        agent.send(frame.clone());
    }
    wait_for_metric(&relay, "vstats_relay_malformed_frames_total", 3.0);
    let (_, servers) = relay.get("/api/servers");
    let servers: Value = serde_json::from_str(&servers).unwrap();
    assert_eq!(servers[0]["metrics"], Value::Null, "{servers}");
}

#[test]
fn metrics_needs_the_viewer_token_as_a_bearer_token() {
    let relay = Relay::start(&["--viewer-token", "viewer-secret"]);
    let (status, _) = relay.get("/metrics");
    assert_eq!(status, 401);
    let (status, body) = relay.http(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer viewer-secret\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.contains("vstats_relay_connections"), "{body}");
}

#[test]
fn a_page_on_another_name_cannot_read_the_fleet_without_a_viewer_token() {
    let relay = Relay::start(&["--allowed-host", "relay.lan"]);
    let request = |path: &str, host: &str| {
        relay.http(&format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\r\n"
        ))
    };
    for path in ["/", "/api/servers", "/metrics"] {
        let (status, body) = request(path, "rebound.example:3001");
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("--allowed-host rebound.example"), "{body}");
        assert_eq!(request(path, "relay.lan:3001").0, 200, "{path}");
        assert_eq!(request(path, "localhost:3001").0, 200, "{path}");
    }
    // The rebinding page's own origin passes the Origin check: its Host
    // is what gives it away.
    let port = relay.addr.port();
    let origin = format!("http://rebound.example:{port}");
    let host = format!("rebound.example:{port}");
    let refused = relay.connect("/ws", &[("host", &host), ("origin", &origin)]);
    assert_eq!(refused.err().as_deref(), Some("403"));
    // Any UTF-8 in a Host is refused, not a crash.
    assert_eq!(request("/", "€€€€").0, 403);
    assert_eq!(relay.get("/healthz").0, 200);
}

#[test]
fn a_history_saved_with_steps_from_the_future_records_again() {
    use vstats::relay::{History, Reading, history_to_file as to_file};
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let relay = relay.restart_with(
        |state| {
            // Saved while the clock was a day ahead.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut ahead = History::default();
            ahead.record(now + 86_400, &Reading::default());
            std::fs::write(
                state.with_extension("history"),
                to_file([(id.as_str(), &ahead)]),
            )
            .unwrap();
        },
        &[],
    );
    let log = relay.process.wait_for_log(SOON, "listening on");
    assert_eq!(
        log.matches("steps later than the clock").count(),
        1,
        "{log}"
    );
    // Samples across more than one 10 s step: finished steps are kept,
    // where before the fix each was older than the saved one, and lost.
    let mut agent = relay.fake_agent(&token);
    for _ in 0..13 {
        agent.send(full_sample().to_string());
        std::thread::sleep(Duration::from_secs(1));
    }
    let (status, body) = relay.get(&format!("/api/servers/{id}/history"));
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let steps = history["series"]["cpu"].as_array().unwrap();
    let recorded = steps.iter().filter(|v| **v == json!(1)).count();
    assert!(
        recorded >= 2,
        "{recorded} steps recorded: {:?}",
        &steps[340..]
    );
}
