//! The seed document's JSON examples against our protocol types.
//!
//! `tests/seed/websocket-api.zh.md` is a verbatim copy of the original API
//! document; its examples elide arrays and objects as `[...]` and `{...}`,
//! which we read as empty.

use serde_json::Value;
use vstats::protocol::{AgentMessage, DashboardMessage, Frame, Metrics};

fn seed_examples() -> Vec<Value> {
    let seed = include_str!("seed/websocket-api.zh.md");
    seed.split("```json\n")
        .skip(1)
        .map(|block| {
            let json = block.split("```").next().unwrap();
            let json = json
                .replace("[...]", "[]")
                .replace("{ ... }", "{}")
                .replace("{...}", "{}");
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
        })
        .collect()
}

fn example(kind: &str, has: &str) -> Value {
    seed_examples()
        .into_iter()
        .find(|v| v["type"] == kind && v.pointer(has).is_some())
        .unwrap_or_else(|| panic!("the seed has no {kind} example with {has}"))
}

/// Every object key path of `expected` exists in `actual`.
fn assert_keys_present(expected: &Value, actual: &Value, path: &str) {
    if let Value::Object(map) = expected {
        for (key, value) in map {
            let child = format!("{path}/{key}");
            let Some(found) = actual.get(key) else {
                panic!("{child} missing from {actual}");
            };
            assert_keys_present(value, found, &child);
        }
    }
}

#[test]
fn seed_has_the_examples_we_check() {
    assert_eq!(seed_examples().len(), 7);
}

#[test]
fn agent_metrics_example_parses_and_round_trips_field_names() {
    let seed = example("metrics", "/data/hostname");
    let frame = AgentMessage::parse(&seed.to_string()).unwrap();
    let AgentMessage::Metrics(metrics) = &frame.message else {
        panic!("not metrics: {frame:?}");
    };
    assert_eq!(metrics.hostname, "my-server");
    assert_eq!(metrics.os.version, "22.04");
    assert_eq!(metrics.cpu.as_ref().unwrap().cores, 8);
    assert_eq!(metrics.memory.as_ref().unwrap().used, 8_589_934_592);
    assert_eq!(metrics.uptime, Some(86400));
    assert_eq!(metrics.load_average.as_ref().unwrap().fifteen, 0.6);

    let ours = serde_json::to_value(&frame).unwrap();
    assert_keys_present(&seed, &ours, "");
}

#[test]
fn heartbeat_example_round_trips_exactly() {
    let seed = example("heartbeat", "/timestamp");
    let frame = AgentMessage::parse(&seed.to_string()).unwrap();
    assert_eq!(frame.message, AgentMessage::Heartbeat);
    assert_eq!(serde_json::to_value(&frame).unwrap(), seed);
}

#[test]
fn dashboard_examples_round_trip_exactly() {
    for (kind, has) in [
        ("metrics", "/data/server_id"),
        ("status", "/data/online"),
        ("server_added", "/data/location"),
        ("server_removed", "/data/id"),
    ] {
        let seed = example(kind, has);
        let frame = DashboardMessage::<Value>::parse(&seed.to_string()).unwrap();
        assert_ne!(frame.message, DashboardMessage::Unknown, "{kind}");
        assert_eq!(serde_json::to_value(&frame).unwrap(), seed, "{kind}");
    }
}

#[test]
fn seed_dashboard_metrics_parse_into_our_sample_type() {
    let seed = example("metrics", "/data/server_id");
    let frame = DashboardMessage::<Box<Metrics>>::parse(&seed.to_string()).unwrap();
    let DashboardMessage::Metrics(update) = frame.message else {
        panic!("not metrics");
    };
    assert_eq!(update.server_id, "abc123");
    assert_eq!(update.metrics.cpu.unwrap().usage, 45.2);
    assert_eq!(update.metrics.network.unwrap().tx, 2048.0);
}

#[test]
fn server_added_keeps_utf8_location() {
    let frame = Frame {
        message: DashboardMessage::<Value>::ServerAdded(vstats::protocol::ServerInfo {
            id: "x".into(),
            name: "n".into(),
            location: "上海".into(),
        }),
        timestamp: None,
    };
    let text = serde_json::to_string(&frame).unwrap();
    assert_eq!(
        text,
        r#"{"type":"server_added","data":{"id":"x","name":"n","location":"上海"}}"#
    );
}
