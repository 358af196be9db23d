//! The real agent binary against a stand-in relay on loopback, plain and TLS.

use crate::common;

use common::{Admission, Agent, Event, FakeRelay, Order, Process, TestCa, Trickler};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789abcdef";
const SOON: Duration = Duration::from_secs(10);

fn agent_for(relay: &FakeRelay, extra: &[&str]) -> Process {
    let url = relay.url();
    let mut args = vec!["--server", url.as_str(), "--token", TOKEN];
    args.extend_from_slice(extra);
    Agent::spawn(&args)
}

fn host_mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn host_cpu_count() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64
}

/// Every field of PROTOCOL.md's `metrics` table, with a sane value.
fn assert_complete_sample(data: &Value) {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(data["hostname"], hostname.trim());
    assert!(data["timestamp"].as_str().unwrap().ends_with('Z'), "{data}");
    for field in ["name", "kernel", "arch"] {
        assert!(
            !data["os"][field].as_str().unwrap().is_empty(),
            "os.{field}: {data}"
        );
    }
    assert!(data["os"]["version"].is_string());
    let cpu = &data["cpu"];
    assert_eq!(cpu["cores"].as_u64().unwrap(), host_cpu_count());
    assert!(!cpu["brand"].as_str().unwrap().is_empty());
    let usage = cpu["usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&usage), "cpu.usage {usage}");
    assert_eq!(
        cpu["per_core"].as_array().unwrap().len() as u64,
        host_cpu_count()
    );
    let memory = &data["memory"];
    assert_eq!(memory["total"].as_u64().unwrap(), host_mem_total_bytes());
    assert_eq!(
        memory["used"].as_u64().unwrap() + memory["available"].as_u64().unwrap(),
        memory["total"].as_u64().unwrap()
    );
    for field in ["usage_percent", "swap_total", "swap_used"] {
        assert!(memory[field].is_number(), "memory.{field}");
    }
    assert!(data["disks"].is_array());
    for field in ["read_rate", "write_rate"] {
        assert!(data["disk_io"][field].as_f64().unwrap() >= 0.0);
    }
    let network = &data["network"];
    for field in ["rx", "tx", "rx_total", "tx_total"] {
        assert!(network[field].as_f64().unwrap() >= 0.0, "network.{field}");
    }
    assert!(
        network["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"] != "lo")
    );
    assert!(data["uptime"].as_u64().unwrap() > 0);
    for field in ["one", "five", "fifteen"] {
        assert!(data["load_average"][field].as_f64().unwrap() >= 0.0);
    }
    assert!(data["temperatures"].is_array());
    assert!(data["sockets"]["tcp"].is_u64() && data["sockets"]["udp"].is_u64());
    assert!(data["processes"].as_u64().unwrap() > 0);
}

#[test]
fn metrics_stream_over_plain_websocket_with_every_field() {
    let relay = FakeRelay::start(None);
    let agent = agent_for(&relay, &["--interval", "1"]);

    let (_, request) = relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    assert_eq!(
        request,
        Event::Request {
            uri: "/ws/agent".to_owned(),
            authorization: Some(format!("Bearer {TOKEN}")),
        }
    );
    let first = relay.wait_for_frame(SOON, "metrics");
    assert_complete_sample(&first["data"]);
    assert!(first["timestamp"].is_string());
    assert_ne!(first["data"]["timestamp"], Value::Null);
    // Then patches: only what moved, the static facts left out.
    let second = relay.wait_for_frame(SOON, "patch");
    assert!(second["data"]["elapsed_ms"].as_u64().unwrap() >= 500);
    for fact in ["hostname", "os", "timestamp"] {
        assert!(second["data"].get(fact).is_none(), "{second}");
    }
    assert!(second.get("timestamp").is_none(), "{second}");
    assert!(
        !agent.log().contains(TOKEN),
        "token leaked into the log:\n{}",
        agent.log()
    );
}

#[test]
fn full_samples_sends_every_sample_whole() {
    let relay = FakeRelay::start(None);
    let _agent = agent_for(&relay, &["--interval", "0.2", "--full-samples"]);
    let first = relay.wait_for_frame(SOON, "metrics");
    assert_complete_sample(&first["data"]);
    let kinds: Vec<String> = relay
        .collect(Duration::from_millis(1500))
        .into_iter()
        .filter_map(|(_, event)| match event {
            Event::Text(text) => Some(serde_json::from_str::<Value>(&text).unwrap()),
            _ => None,
        })
        .map(|frame| frame["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.len() >= 4, "{kinds:?}");
    assert!(kinds.iter().all(|kind| kind == "metrics"), "{kinds:?}");
}

/// The upgrade request the relay saw: its target and `Authorization`.
fn upgrade_request(relay: &FakeRelay) -> (String, Option<String>) {
    match relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    }) {
        (_, Event::Request { uri, authorization }) => (uri, authorization),
        _ => unreachable!(),
    }
}

#[test]
fn the_token_goes_only_in_the_authorization_header_by_default() {
    let relay = FakeRelay::start(None);
    let agent = agent_for(&relay, &[]);
    let (uri, authorization) = upgrade_request(&relay);
    assert!(!uri.contains("token="), "{uri}");
    assert!(!uri.contains(TOKEN), "{uri}");
    assert_eq!(authorization, Some(format!("Bearer {TOKEN}")));
    relay.wait_for_frame(SOON, "metrics");
    assert!(!agent.log().contains(TOKEN), "{}", agent.log());
}

#[test]
fn token_in_query_also_puts_the_token_in_the_url() {
    let relay = FakeRelay::start(None);
    let flagged = agent_for(&relay, &["--token-in-query"]);
    let expected = (
        format!("/ws/agent?token={TOKEN}"),
        Some(format!("Bearer {TOKEN}")),
    );
    assert_eq!(upgrade_request(&relay), expected);
    drop(flagged);
    let mut command = common::agent_command();
    command
        .args(["--server", &relay.url(), "--token", TOKEN])
        .env("VSTATS_TOKEN_IN_QUERY", "1");
    let from_environment = Process::spawn(command);
    assert_eq!(upgrade_request(&relay), expected);
    relay.wait_for_frame(SOON, "metrics");
    assert!(
        !from_environment.log().contains(TOKEN),
        "{}",
        from_environment.log()
    );
}

#[test]
fn metrics_stream_over_tls_with_a_private_ca() {
    let ca = TestCa::new();
    let relay = FakeRelay::start(Some(ca.server_config()));
    let ca_file = ca.ca_pem.to_str().unwrap();
    let _agent = agent_for(&relay, &["--ca-file", ca_file]);
    let sample = relay.wait_for_frame(SOON, "metrics");
    assert_complete_sample(&sample["data"]);
}

#[test]
fn tls_refuses_a_certificate_nobody_vouches_for() {
    let ca = TestCa::new();
    let relay = FakeRelay::start(Some(ca.server_config()));
    let agent = agent_for(&relay, &[]);
    relay.wait_for(SOON, "connection", |e| *e == Event::Accepted);
    let events = relay.collect(Duration::from_secs(2));
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Request { .. })),
        "the agent spoke HTTP over an unverified TLS session: {events:?}"
    );
    assert!(agent.log().contains("UnknownIssuer"), "{}", agent.log());
}

#[test]
fn pings_are_answered() {
    let relay = FakeRelay::start(None);
    let _agent = agent_for(&relay, &["--interval", "60"]);
    relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    relay.order(Order::Ping(b"are you there".to_vec()));
    relay.wait_for(SOON, "pong", |e| {
        *e == Event::Pong(b"are you there".to_vec())
    });
}

#[test]
fn heartbeat_keeps_a_long_interval_alive() {
    let relay = FakeRelay::start(None);
    let _agent = agent_for(&relay, &["--interval", "3600"]);
    let (connected, _) = relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    let (beat, event) = relay.wait_for(Duration::from_secs(40), "heartbeat", |e| {
        matches!(e, Event::Text(_))
    });
    let Event::Text(text) = event else {
        unreachable!()
    };
    let frame: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(frame["type"], "heartbeat", "{text}");
    assert!(frame["timestamp"].is_string());
    let quiet = beat - connected;
    assert!(
        quiet >= Duration::from_secs(29),
        "heartbeat after only {quiet:?}"
    );
}

#[test]
fn agent_comes_back_after_the_relay_drops_it() {
    let relay = FakeRelay::start(None);
    let _agent = agent_for(&relay, &[]);
    relay.wait_for_frame(SOON, "metrics");
    relay.order(Order::Drop);
    relay.wait_for(SOON, "end of the first connection", |e| *e == Event::Gone);
    // After a working connection the backoff restarts at 1 s.
    relay.wait_for(Duration::from_secs(3), "reconnection", |e| {
        matches!(e, Event::Request { .. })
    });
    relay.wait_for_frame(SOON, "metrics");
}

/// How many TCP connections the agent opened to `relay` within `window`.
fn attempts_in(relay: &FakeRelay, window: Duration) -> usize {
    relay
        .collect(window)
        .into_iter()
        .filter(|(_, e)| *e == Event::Accepted)
        .count()
}

#[test]
fn agent_backs_off_while_the_relay_hangs_up() {
    let relay = FakeRelay::start(None);
    relay.admit(Admission::HangUp);
    let mut agent = agent_for(&relay, &[]);
    let attempts = attempts_in(&relay, Duration::from_secs(20));
    // Retrying every second would be 20; delays of up to 1, 2, 4, 8, 16 s
    // (full jitter) allow a handful.
    assert!((2..=12).contains(&attempts), "{attempts} attempts in 20 s");
    assert!(agent.is_running());
}

#[test]
fn a_relay_that_refuses_the_sample_does_not_reset_the_backoff() {
    let relay = FakeRelay::start(None);
    relay.admit(Admission::CloseAfterFrame(1009));
    let mut agent = agent_for(&relay, &[]);
    let attempts = attempts_in(&relay, Duration::from_secs(20));
    // The connection worked, but the relay refused what came over it: a
    // reset would retry within a second, some 30 times in 20 s.
    assert!((2..=12).contains(&attempts), "{attempts} attempts in 20 s");
    assert!(agent.is_running());
    let log = agent.log();
    assert!(log.contains("1009"), "{log}");
}

#[test]
fn rejected_token_is_logged_once_and_does_not_kill_the_agent() {
    let relay = FakeRelay::start(None);
    relay.admit(Admission::Reject401);
    let mut agent = agent_for(&relay, &[]);
    relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    relay.admit(Admission::Accept);
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.is_running());
    let log = agent.log();
    assert_eq!(log.matches("token rejected").count(), 1, "{log}");
    assert!(!log.contains(TOKEN), "{log}");
    // The retry after a rejection waits 15-30 s, then the fixed token works.
    relay.wait_for_frame(Duration::from_secs(35), "metrics");
}

#[test]
fn a_silent_relay_is_dropped_after_75_seconds() {
    let relay = FakeRelay::start(None);
    relay.admit(Admission::Mute);
    let _agent = agent_for(&relay, &[]);
    let (muted, _) = relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    relay.admit(Admission::Accept);
    let (back, _) = relay.wait_for(Duration::from_secs(90), "reconnection", |e| {
        matches!(e, Event::Request { .. })
    });
    let silence = back - muted;
    assert!(
        silence >= Duration::from_secs(75),
        "gave up after {silence:?}"
    );
}

#[test]
fn sigterm_sends_a_close_frame_and_exits_zero() {
    let relay = FakeRelay::start(None);
    let mut agent = agent_for(&relay, &[]);
    relay.wait_for_frame(SOON, "metrics");
    agent.signal(Signal::SIGTERM);
    relay.wait_for(SOON, "close frame", |e| *e == Event::Close(Some(1001)));
    assert!(agent.wait(SOON).success());
}

#[test]
fn sigint_while_waiting_to_reconnect_exits_zero() {
    let relay = FakeRelay::start(None);
    relay.admit(Admission::HangUp);
    let mut agent = agent_for(&relay, &[]);
    relay.wait_for(SOON, "connection", |e| *e == Event::Accepted);
    std::thread::sleep(Duration::from_millis(300));
    agent.signal(Signal::SIGINT);
    assert!(agent.wait(Duration::from_secs(3)).success());
}

/// procd sends SIGKILL 5 s after SIGTERM; a stop must not wait for the
/// connect step to end.
const STOP_PROMPTLY: Duration = Duration::from_secs(1);

/// Sends SIGTERM and returns how long the agent took to exit 0.
fn stop(agent: &mut Process) -> Duration {
    let sent = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait(STOP_PROMPTLY);
    let took = sent.elapsed();
    eprintln!("the agent exited {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", agent.log());
    // The log's last lines may still be on their way through the pipe.
    agent.wait_for_log(SOON, "stopping");
    took
}

#[test]
fn sigterm_during_a_trickled_handshake_stops_the_agent_at_once() {
    let relay = Trickler::start(Duration::from_secs(2));
    let mut agent = Agent::spawn(&["--server", &relay.url(), "--token", TOKEN]);
    relay.wait_for(SOON, "upgrade request", |e| {
        matches!(e, Event::Request { .. })
    });
    // Well into the response: each byte would reset a per-read timeout.
    std::thread::sleep(Duration::from_millis(2500));
    stop(&mut agent);
}

#[test]
fn sigterm_during_a_hanging_tcp_connect_stops_the_agent_at_once() {
    let (listener, _queue) = common::unanswered_listener();
    let port = listener.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut agent = Agent::spawn(&["--server", &url, "--token", TOKEN]);
    let deadline = Instant::now() + SOON;
    while !common::syn_sent_to(port) {
        assert!(
            Instant::now() < deadline,
            "the agent never tried to connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut agent);
}

#[test]
fn a_relay_given_by_host_name_is_resolved_and_reached() {
    // Resolved on a helper thread; "localhost" may give ::1 first, where
    // nothing listens, and the next address is tried.
    let relay = FakeRelay::start(None);
    let url = format!("ws://localhost:{}", relay.port);
    let _agent = Agent::spawn(&["--server", &url, "--token", TOKEN]);
    relay.wait_for_frame(SOON, "metrics");
}

#[test]
fn the_whole_connect_step_has_one_deadline() {
    let relay = Trickler::start(Duration::from_secs(2));
    let agent = Agent::spawn(&["--server", &relay.url(), "--token", TOKEN]);
    let (accepted, _) = relay.wait_for(SOON, "connection", |e| *e == Event::Accepted);
    let (gone, _) = relay.wait_for(Duration::from_secs(20), "the agent giving up", |e| {
        *e == Event::Gone
    });
    let took = gone - accepted;
    eprintln!("the agent gave up {took:?} after the relay accepted");
    // 10 s for the step, started a moment before the accept; a limit per
    // read or per phase would go on for as long as bytes keep coming.
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(11)).contains(&took),
        "gave up after {took:?}"
    );
    let log = agent.wait_for_log(SOON, "reconnecting in");
    assert!(log.contains("timed out: Handshake"), "{log}");
    // First failure: the retry comes within 1 s.
    relay.wait_for(Duration::from_secs(3), "another attempt", |e| {
        *e == Event::Accepted
    });
}

#[test]
fn wrong_flags_exit_2_with_a_message() {
    for args in [
        &["--bogus"][..],
        &["--interval", "-1", "--once"],
        &["--server", "http://x", "--token", "t"],
    ] {
        let output = common::agent_command().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("vstats-agent: "), "{args:?}: {stderr}");
    }
    let help = common::agent_command().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("VSTATS_TOKEN"));
}

#[test]
fn once_prints_one_sample_of_this_host() {
    let output = common::agent_command()
        .args(["--once", "--interval", "0.2"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let data: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_complete_sample(&data);
}

#[test]
fn once_turns_a_captured_tree_into_a_sample() {
    let tree = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rpi3bplus-raspios12-aarch64"
    );
    let output = common::agent_command()
        .arg("--once")
        .args(["--interval", "0.1"])
        .args(["--path-procfs", &format!("{tree}/proc")])
        .args(["--path-sysfs", &format!("{tree}/sys")])
        .args(["--path-rootfs", tree])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let data: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(data["hostname"], "raspberrypi");
    assert_eq!(data["os"]["kernel"], "6.6.31+rpt-rpi-v8");
    assert_eq!(data["cpu"]["brand"], "Raspberry Pi 3 Model B Plus Rev 1.3");
    assert_eq!(data["memory"]["total"], 951_398_400);
}
