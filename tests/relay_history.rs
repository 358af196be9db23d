//! History in the real relay process: served by
//! `/api/servers/{id}/history`, saved at SIGTERM beside the state file and
//! loaded at start; a removed server's is dropped, and a corrupt file never
//! stops a start.

use crate::common;

use common::relay::Relay;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);

/// The CPU values of a server's last hour that are not gaps.
fn cpu_history(relay: &Relay, id: &str) -> Vec<Value> {
    let (status, body) = relay.get(&format!("/api/servers/{id}/history"));
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let cpu = history["series"]["cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), 360);
    cpu.iter().filter(|v| !v.is_null()).cloned().collect()
}

fn send_cpu(relay: &Relay, token: &str, cpu: f64) {
    let mut agent = relay.fake_agent(token);
    agent.send_metrics(json!({"hostname": "h", "cpu": {"usage": cpu}}));
}

/// Waits until the relay has recorded a sample in the server's history.
fn wait_for_history(relay: &Relay, id: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let values = cpu_history(relay, id);
        if !values.is_empty() || started.elapsed() > SOON {
            return values;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_server(state: &std::path::Path, id: &str) {
    let output = common::relay_command()
        .args(["server", "remove", id, "--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn history_survives_a_clean_restart_but_not_its_server() {
    let relay = Relay::start(&[]);
    let (kept, token) = relay.add_server("kept", "");
    let (gone, gone_token) = relay.add_server("gone", "");
    send_cpu(&relay, &token, 12.5);
    send_cpu(&relay, &gone_token, 40.0);
    assert_eq!(wait_for_history(&relay, &kept), [json!(12.5)]);
    assert_eq!(wait_for_history(&relay, &gone), [json!(40)]);

    let relay = relay.restart(&[]);
    relay
        .process
        .wait_for_log(SOON, "history of 2 server(s) loaded");
    assert_eq!(cpu_history(&relay, &kept), [json!(12.5)]);
    assert_eq!(cpu_history(&relay, &gone), [json!(40)]);

    let relay = relay.restart_with(|state| remove_server(state, &gone), &[]);
    let log = relay
        .process
        .wait_for_log(SOON, "history of 1 server(s) loaded");
    assert!(log.contains("1 no longer registered: dropped"), "{log}");
    assert_eq!(cpu_history(&relay, &kept), [json!(12.5)]);
    assert_eq!(relay.get(&format!("/api/servers/{gone}/history")).0, 404);
}

#[test]
fn a_corrupt_history_file_is_skipped_with_a_warning() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    send_cpu(&relay, &token, 12.5);
    assert_eq!(wait_for_history(&relay, &id), [json!(12.5)]);
    let relay = relay.restart_with(
        |state| {
            let history = state.with_extension("history");
            let mut bytes = std::fs::read(&history).unwrap();
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&history, bytes).unwrap();
        },
        &[],
    );
    relay.process.wait_for_log(SOON, "not a valid history file");
    assert!(cpu_history(&relay, &id).is_empty());
    // It records again, and its next save replaces the corrupt file.
    send_cpu(&relay, &token, 30.0);
    assert_eq!(wait_for_history(&relay, &id), [json!(30)]);
}
