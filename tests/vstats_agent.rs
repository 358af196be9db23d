//! A real vStats agent reports into our relay. The frames its Go
//! agent really sent (`tests/vstats-real/`) are replayed to a real relay's
//! `/compat/ws/agent`, with the server id and token `server add` gave, and
//! what a dashboard, `/api/servers` and `/metrics` see is checked.

use crate::common;

use common::relay::{Client, Relay, Seen, is};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);
const FRAMES: &str = include_str!("vstats-real/agent-frames.jsonl");

fn frame(line: usize) -> &'static str {
    FRAMES.lines().nth(line).unwrap()
}

/// The captured `auth` frame, speaking for this server id and token.
fn auth(server_id: &str, token: &str) -> String {
    let mut auth: Value = serde_json::from_str(frame(0)).unwrap();
    auth["server_id"] = json!(server_id);
    auth["token"] = json!(token);
    auth.to_string()
}

/// A vStats agent's connection (no token in the URL), after its `auth`
/// frame: returns it and the relay's answer.
fn vstats_agent(relay: &Relay, server_id: &str, token: &str) -> (Client, Value) {
    let mut agent = relay.connect("/compat/ws/agent", &[]).unwrap();
    agent.send(auth(server_id, token));
    match agent.next(SOON) {
        Some(Seen::Frame(answer)) => (agent, answer),
        other => panic!("no answer to auth: {other:?}"),
    }
}

/// Polls `/metrics` until it has `line`.
fn wait_for_metric(relay: &Relay, line: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let (_, body) = relay.get("/metrics");
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line} in:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The captured `aggregated_metrics` frame with its first bucket repeated
/// to about `size` bytes (a day of local history looks like this), laid
/// out as their encoder writes it: `type` first.
fn aggregated_of(size: usize) -> String {
    let captured = frame(4);
    let at = captured.find(r#""metrics":["#).unwrap() + r#""metrics":["#.len();
    let bucket = &captured[at..=at + captured[at..].find('}').unwrap()];
    let copies = size.saturating_sub(captured.len()) / (bucket.len() + 1);
    let mut text = String::with_capacity(size + bucket.len());
    text.push_str(&captured[..at]);
    for _ in 0..copies {
        text.push_str(bucket);
        text.push(',');
    }
    text.push_str(&captured[at..]);
    assert!(text.starts_with(r#"{"type":"aggregated_metrics""#));
    serde_json::from_str::<Value>(&text).expect("still JSON");
    text
}

#[test]
fn a_real_vstats_agents_frames_reach_dashboards_in_our_shape() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("vm", "");
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "its server", |f| is(f, "server_added", &id));

    let (mut agent, answer) = vstats_agent(&relay, &id, &token);
    assert_eq!(answer, json!({"type": "auth", "status": "ok"}));
    dashboard.wait_for(SOON, "online", |f| {
        is(f, "status", &id) && f["data"]["online"] == true
    });
    // Their agent sends aggregated_metrics at once after auth: one the
    // size of the capture, then one of about 900 KB. Neither is a sample.
    agent.send(frame(4).to_owned());
    agent.send(aggregated_of(900 * 1024));
    for line in 1..=3 {
        agent.send(frame(line).to_owned());
    }

    let mut samples = Vec::new();
    while samples.len() < 3 {
        let message = dashboard.wait_for(SOON, "a sample", |f| is(f, "metrics", &id));
        samples.push(message["data"]["metrics"].clone());
    }
    let last = &samples[2];
    assert_eq!(last["hostname"], "vm");
    assert_eq!(last["timestamp"], "2026-12-01T10:56:22Z");
    assert_eq!(last["cpu"]["usage"], 100);
    assert_eq!(last["cpu"]["cores"], 2);
    assert_eq!(last["memory"]["total"], 25276059648u64);
    assert_eq!(last["memory"]["available"], 23961288704u64);
    assert_eq!(last["disks"][0]["mount"], "/");
    assert_eq!(last["disks"][0]["total"], 274877906944u64);
    assert_eq!(last["disk_io"]["read_rate"], 57351);
    assert_eq!(last["disk_io"]["write_rate"], 12189155);
    assert_eq!(last["network"]["rx_total"], 581235905);
    assert_eq!(last["network"]["rx"], 0);
    assert_eq!(last["uptime"], 393);
    assert_eq!(samples[1]["disk_io"]["write_rate"], 0);

    let (status, body) = relay.get("/api/servers");
    assert_eq!(status, 200);
    let servers: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(servers[0]["id"], *id);
    assert_eq!(servers[0]["online"], true);
    assert_eq!(servers[0]["metrics"]["cpu"]["usage"], 100);

    wait_for_metric(
        &relay,
        "vstats_relay_compat_ignored_frames_total{type=\"aggregated_metrics\"} 2",
    );
    let (_, exposition) = relay.get("/metrics");
    assert!(
        exposition.contains(&format!("vstats_up{{server_id=\"{id}\",name=\"vm\"}} 1")),
        "{exposition}"
    );
    assert!(exposition.contains("vstats_relay_malformed_frames_total 0"));

    // Still connected: a ping is answered, a later sample arrives.
    agent
        .ws
        .send(tungstenite::Message::Ping(Default::default()))
        .unwrap();
    agent.send(frame(1).to_owned());
    dashboard.wait_for(SOON, "a later sample", |f| is(f, "metrics", &id));
}

#[test]
fn a_wrong_token_or_an_unknown_id_gets_vstats_error_and_1008() {
    let relay = Relay::start(&[]);
    let (id, _token) = relay.add_server("vm", "");
    let (_, other_token) = relay.add_server("other", "");
    for (server_id, message) in [
        (id.as_str(), "Invalid token"),
        ("0123456789ab", "Server not found"),
    ] {
        let (mut agent, answer) = vstats_agent(&relay, server_id, &other_token);
        assert_eq!(
            answer,
            json!({"type": "auth", "status": "error", "message": message})
        );
        assert_eq!(agent.wait_for_close(SOON), Some(1008));
    }
    let (_, body) = relay.get("/api/servers");
    assert!(body.contains(r#""online":false"#) && !body.contains(r#""online":true"#));
    // Our own endpoint still refuses before the upgrade.
    assert_eq!(
        relay.connect("/ws/agent", &[]).err().as_deref(),
        Some("401")
    );
}

#[test]
fn a_message_over_1_mib_is_closed_1009_and_the_log_names_the_agent_option() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("vm", "");
    let (mut agent, answer) = vstats_agent(&relay, &id, &token);
    assert_eq!(answer["status"], "ok");
    agent.send(aggregated_of(1100 * 1024));
    assert_eq!(agent.wait_for_close(SOON), Some(1009));
    let log = relay.process.wait_for_log(SOON, "enable_offline_storage");
    assert!(log.contains("over 1 MiB"), "{log}");
}
