//! The engine's decisions, one test each, on a fake clock: no sockets, no
//! threads, no sleeping. Each fault found has a test named after what it
//! guards.

use super::*;
use crate::relay::sim;
use serde_json::{Value, json};

const T0_PEER: &str = "192.0.2.7:40000";

/// An engine with a registry, driven at times counted from `t0`.
struct Bench {
    engine: Engine,
    registry: Registry,
    t0: Instant,
    tokens: Vec<String>,
    ids: Vec<String>,
    next_id: ConnId,
}

/// The relay's configuration with these flags; requests name the relay
/// `relay.example`, which is allowed as a host.
fn config(extra: &[&str]) -> Config {
    let mut args = vec![
        "--state",
        "/nonexistent/vstats-state.json",
        "--allowed-host",
        "relay.example",
    ];
    args.extend(extra);
    sim::config(&args)
}

impl Bench {
    fn new(servers: &[&str]) -> Bench {
        Bench::with(servers, &[], 100)
    }

    fn with(servers: &[&str], flags: &[&str], max_connections: usize) -> Bench {
        let mut registry = Registry::empty();
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for name in servers {
            let (server, token) = registry.add(name, "").unwrap();
            ids.push(server.id.clone());
            tokens.push(token);
        }
        let t0 = Instant::now();
        Bench {
            engine: sim::engine(config(flags), registry.clone(), max_connections, t0),
            registry,
            t0,
            tokens,
            ids,
            next_id: 10,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn effects(&mut self) -> Vec<Effect> {
        self.engine.poll_effects()
    }

    /// Accepts a connection and hands the engine its request head.
    fn request(&mut self, head: Head, ms: u64) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.at(ms);
        let peer = T0_PEER.parse().unwrap();
        sim::open(&mut self.engine, id, peer, Box::new(head), now);
        id
    }

    /// Runs a request through to its response: its status and what the
    /// connection becomes.
    fn get(&mut self, path: &str, ms: u64) -> (ConnId, u16, After) {
        let id = self.request(get(path), ms);
        let (status, after) = response(&self.effects(), id);
        (id, status, after)
    }

    /// An agent with this token, through its `101`.
    fn agent_with(&mut self, token: &str, ms: u64) -> ConnId {
        let id = self.request(upgrade("/ws/agent", Some(token)), ms);
        let effects = self.effects();
        assert_eq!(response(&effects, id), (101, After::Agent), "{effects:?}");
        self.engine.handle_responded(id, self.at(ms));
        id
    }

    fn agent(&mut self, server: usize, ms: u64) -> ConnId {
        let token = self.tokens[server].clone();
        self.agent_with(&token, ms)
    }

    fn dashboard(&mut self, ms: u64) -> ConnId {
        let id = self.request(upgrade("/ws", None), ms);
        let effects = self.effects();
        assert_eq!(
            response(&effects, id),
            (101, After::Dashboard),
            "{effects:?}"
        );
        self.engine.handle_responded(id, self.at(ms));
        id
    }

    fn send(&mut self, id: ConnId, frame: Value, ms: u64) {
        let text = frame.to_string();
        self.engine
            .handle_frame(id, Inbound::Text(&text), self.at(ms));
    }

    fn sample(&mut self, id: ConnId, cpu: f64, ms: u64) {
        self.send(
            id,
            json!({"type": "metrics", "data": {"hostname": "h", "cpu": {"usage": cpu}}}),
            ms,
        );
    }

    /// What a dashboard would receive now: `(type, data)` of each message
    /// in its outbox, which the pump empties.
    fn received(&mut self, id: ConnId, ms: u64) -> Vec<(String, Value)> {
        assert!(self.engine.dashboard_outbox(id).is_some(), "a dashboard");
        let now = self.at(ms);
        let messages = sim::drain(&mut self.engine, id, now);
        messages
            .iter()
            .map(|message| {
                let value: Value = serde_json::from_str(message).unwrap();
                let kind = value["type"].as_str().unwrap().to_owned();
                (kind, value["data"].clone())
            })
            .collect()
    }

    fn kinds(&mut self, id: ConnId, ms: u64) -> Vec<String> {
        self.received(id, ms)
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    }

    fn tick(&mut self, ms: u64) -> Vec<Effect> {
        self.engine.handle_timeout(self.at(ms));
        self.effects()
    }

    fn online(&self, server: usize) -> bool {
        self.engine
            .hub
            .get(&self.ids[server])
            .unwrap()
            .presence
            .online()
    }
}

fn get(path: &str) -> Head {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (path, None),
    };
    Head {
        method: "GET".into(),
        path: path.into(),
        query,
        host: Some("relay.example".into()),
        ..Head::default()
    }
}

fn upgrade(path: &str, token: Option<&str>) -> Head {
    Head {
        authorization: token.map(|t| format!("Bearer {t}")),
        websocket: true,
        websocket_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
        websocket_version: Some("13".into()),
        ..get(path)
    }
}

fn status_of(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The status of the response the engine decided for `id`, and what the
/// connection becomes after it.
fn response(effects: &[Effect], id: ConnId) -> (u16, After) {
    effects
        .iter()
        .find_map(|effect| match effect {
            Effect::Respond {
                id: to,
                bytes,
                after,
            } if *to == id => Some((status_of(bytes), *after)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no response for {id} in {effects:?}"))
}

fn closes(effects: &[Effect]) -> Vec<(ConnId, u16)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Close { id, code, .. } => Some((*id, u16::from(*code))),
            _ => None,
        })
        .collect()
}

fn drops(effects: &[Effect]) -> Vec<ConnId> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Drop { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The lines logged at the default level (info) or above.
fn logs(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Log { text, level } if *level <= Level::Info => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn status_message(id: &str, online: bool) -> (String, Value) {
    ("status".into(), json!({"server_id": id, "online": online}))
}

// ----- the snapshot, fan-out, conflation ----------------------------------

#[test]
fn a_new_dashboard_starts_with_hello_then_each_server_its_sparklines_and_latest_sample() {
    let mut bench = Bench::new(&["a", "b"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 12.5, 10);
    let dashboard = bench.dashboard(20);
    let effects = bench.effects();
    assert!(
        effects.contains(&Effect::Wake { id: dashboard }),
        "{effects:?}"
    );
    let seen = bench.received(dashboard, 20);
    let kinds: Vec<&str> = seen.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "hello",
            "server_added",
            "status",
            "history",
            "metrics",
            "server_added",
            "status"
        ]
    );
    assert_eq!(seen[2], status_message(&bench.ids[0], true));
    let sparklines = &seen[3].1;
    assert_eq!(sparklines["server_id"], *bench.ids[0]);
    let cpu: Vec<&Value> = sparklines["series"]["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(cpu, [&json!(12.5)]);
    assert_eq!(seen[4].1["metrics"]["cpu"]["usage"], 12.5);
    // A server never heard from has no history message.
    assert_eq!(seen[6], status_message(&bench.ids[1], false));
}

#[test]
fn samples_a_dashboard_has_not_taken_conflate_to_the_newest() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    bench.received(dashboard, 0);
    // Its socket is full.
    bench
        .engine
        .handle_pumped(dashboard, 0, 0, true, bench.at(5));
    bench.effects();
    let agent = bench.agent(0, 10);
    for (i, cpu) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        bench.sample(agent, cpu, 100 + i as u64 * 100);
    }
    // One wake for the lot (the status and the samples): the loop pumps once.
    let wakes = bench
        .effects()
        .iter()
        .filter(|e| matches!(e, Effect::Wake { .. }))
        .count();
    assert_eq!(wakes, 1);
    let seen = bench.received(dashboard, 400);
    assert_eq!(seen.len(), 2, "{seen:?}"); // the status, one sample
    assert_eq!(seen[1].1["metrics"]["cpu"]["usage"], 3.0);
    assert_eq!(bench.engine.counters.conflated, 2);
    assert_eq!(bench.engine.counters.frames_in, 3);
}

/// Issue 11 (the soak): after the relay stalled, two samples of one agent
/// were read in the same turn, and every dashboard, keeping up or not, got
/// only the newer.
#[test]
fn a_dashboard_that_keeps_up_gets_two_samples_read_in_one_turn() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 10);
    // The socket took the snapshot and the status: it keeps up.
    bench.received(dashboard, 20);
    bench.sample(agent, 1.0, 2000);
    bench.sample(agent, 2.0, 2000);
    let seen = bench.received(dashboard, 2000);
    let cpu: Vec<&Value> = seen
        .iter()
        .map(|(_, data)| &data["metrics"]["cpu"]["usage"])
        .collect();
    assert_eq!(cpu, [1.0, 2.0], "{seen:?}");
    assert_eq!(bench.engine.counters.conflated, 0);
}

/// A dashboard whose socket took nothing while status events (offline
/// after the agent timeout, online again at the next frame ...) piled up
/// past its room; returns the bench, the dashboard and the time.
fn events_past_the_room() -> (Bench, ConnId, u64) {
    let mut bench = Bench::with(&["a"], &["--agent-timeout", "20"], 100);
    let dashboard = bench.dashboard(0);
    bench.received(dashboard, 0);
    let agent = bench.agent(0, 0);
    let mut now = 0;
    while !bench
        .engine
        .dashboard_outbox(dashboard)
        .unwrap()
        .over_limit()
    {
        assert!(now < 1 << 40, "the events never outgrew the room");
        now += 30_000;
        bench
            .engine
            .handle_frame(dashboard, Inbound::Control, bench.at(now)); // pongs
        bench.engine.handle_timeout(bench.at(now));
        bench.send(agent, json!({"type": "heartbeat"}), now); // online again
    }
    bench.effects();
    (bench, dashboard, now)
}

#[test]
fn a_dashboard_whose_events_outgrow_their_room_after_a_pump_is_closed_1013() {
    let (mut bench, dashboard, now) = events_past_the_room();
    bench
        .engine
        .handle_pumped(dashboard, 0, 0, true, bench.at(now));
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(dashboard, 1013)]);
    assert!(logs(&effects)[0].contains("(1013)"), "{effects:?}");
}

#[test]
fn a_burst_the_socket_takes_at_once_does_not_close_the_dashboard() {
    let (mut bench, dashboard, now) = events_past_the_room();
    bench.received(dashboard, now); // the pump takes everything
    assert!(closes(&bench.effects()).is_empty());
}

// ----- agents: admission, samples, the flood -------------------------------

#[test]
fn an_agent_that_floods_gets_its_rate_and_the_rest_is_counted_not_sent() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.received(dashboard, 0);
    // Its socket is full from here on.
    bench
        .engine
        .handle_pumped(dashboard, 0, 0, true, bench.at(0));
    // 1,000 samples in the same millisecond, then 1,000 over the next second.
    for i in 0..1000 {
        bench.sample(agent, f64::from(i), 1);
    }
    assert_eq!(bench.engine.counters.dropped_samples, 1000 - 20);
    for i in 0..1000 {
        bench.sample(agent, i as f64, 1 + i);
    }
    let passed = 2000 - bench.engine.counters.dropped_samples;
    assert!((39..=41).contains(&passed), "{passed} passed");
    // However many passed, a dashboard that has not read holds one sample.
    assert_eq!(bench.received(dashboard, 1001).len(), 1);
}

#[test]
fn an_agent_with_an_unknown_token_is_refused_401_after_the_state_file_is_checked() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.request(upgrade("/ws/agent", Some("not-a-token")), 0);
    assert_eq!(bench.effects(), [Effect::ReadRegistry { force: false }]);
    bench
        .engine
        .handle_registry_read(RegistryRead::Unchanged, bench.at(1));
    assert_eq!(response(&bench.effects(), id), (401, After::Close));
}

#[test]
fn an_agent_without_a_token_is_refused_at_once() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.request(upgrade("/ws/agent", None), 0);
    assert_eq!(response(&bench.effects(), id), (401, After::Close));
}

#[test]
fn an_agent_of_a_server_added_a_moment_ago_is_admitted() {
    let mut bench = Bench::new(&["a"]);
    let (_, token) = bench.registry.add("new", "").unwrap();
    let id = bench.request(upgrade("/ws/agent", Some(&token)), 0);
    assert_eq!(bench.effects(), [Effect::ReadRegistry { force: false }]);
    let registry = bench.registry.clone();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(1));
    let effects = bench.effects();
    assert_eq!(response(&effects, id), (101, After::Agent));
    assert!(logs(&effects).iter().any(|l| l.contains("server new")));
}

#[test]
fn a_newer_connection_replaces_the_old_whose_frames_and_end_no_longer_count() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let old = bench.agent(0, 0);
    let new = bench.agent(0, 1000);
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(old, 1000)]);
    bench.received(dashboard, 1000);
    bench.sample(old, 99.0, 1100);
    assert!(bench.received(dashboard, 1100).is_empty());
    bench
        .engine
        .handle_ended(old, SocketEnd::Closed, bench.at(1200));
    assert!(bench.online(0));
    assert!(bench.received(dashboard, 1200).is_empty());
    bench.sample(new, 1.0, 1300);
    assert_eq!(bench.kinds(dashboard, 1300), ["metrics"]);
}

#[test]
fn a_sample_read_with_the_close_is_forwarded_before_the_agent_leaves() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.received(dashboard, 0);
    bench.sample(agent, 42.0, 10);
    bench
        .engine
        .handle_frame(agent, Inbound::Close(Some(1000)), bench.at(10));
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(10));
    let seen = bench.received(dashboard, 10);
    assert_eq!(seen[0].1["metrics"]["cpu"]["usage"], 42.0);
    assert_eq!(seen[1], status_message(&bench.ids[0], false));
    let logged = logs(&bench.effects());
    assert!(
        logged
            .iter()
            .any(|l| l.contains(T0_PEER) && l.contains("closed by the peer (1000)")),
        "{logged:?}"
    );
}

#[test]
fn ten_malformed_frames_in_a_row_close_the_agent_1007() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.effects();
    for i in 0..9 {
        bench
            .engine
            .handle_frame(agent, Inbound::Text("{not json"), bench.at(i));
    }
    // A good frame resets the run.
    bench.send(agent, json!({"type": "heartbeat"}), 10);
    bench
        .engine
        .handle_frame(agent, Inbound::Binary, bench.at(11));
    bench.send(
        agent,
        json!({"type": "metrics", "data": {"cpu": {"usage": "high"}}}),
        12,
    );
    for i in 0..7 {
        bench.send(agent, json!({"type": "metrics"}), 20 + i);
    }
    assert!(closes(&bench.effects()).is_empty());
    bench
        .engine
        .handle_frame(agent, Inbound::Text("[]"), bench.at(30));
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(agent, 1007)]);
    assert_eq!(bench.engine.counters.malformed, 19);
    // One line per ten seconds, however many frames.
    assert_eq!(logs(&effects).len(), 0);
    let summary = bench.tick(10_000);
    assert!(
        logs(&summary)
            .iter()
            .any(|l| l.contains("18 more malformed frames")),
        "{summary:?}"
    );
}

#[test]
fn unknown_message_types_are_ignored_not_malformed() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.send(agent, json!({"type": "from_the_future", "data": {}}), 1);
    assert_eq!(bench.engine.counters.malformed, 0);
    assert_eq!(bench.engine.counters.frames_in, 1);
}

// ----- the clock -------------------------------------------------------------

#[test]
fn a_request_head_not_complete_in_ten_seconds_gets_408_and_is_dropped() {
    let mut bench = Bench::new(&[]);
    let peer = T0_PEER.parse().unwrap();
    assert_eq!(
        bench.engine.handle_accept(1, peer, bench.at(0)),
        Admission::Admit
    );
    assert!(drops(&bench.tick(9_999)).is_empty());
    let effects = bench.tick(10_000);
    let Some(Effect::Drop {
        id: 1,
        last_words: Some(bytes),
    }) = effects.iter().find(|e| matches!(e, Effect::Drop { .. }))
    else {
        panic!("{effects:?}");
    };
    assert_eq!(status_of(bytes), 408);
    assert!(bench.engine.conns.is_empty());
}

#[test]
fn a_response_not_taken_for_ten_seconds_is_dropped_but_a_download_that_moves_is_not() {
    let mut bench = Bench::new(&[]);
    let (slow, status, _) = bench.get("/healthz", 0);
    assert_eq!(status, 200);
    let (moving, _, _) = bench.get("/healthz", 0);
    for second in 1..=30 {
        bench.engine.handle_wrote(moving, bench.at(second * 1000));
        let effects = bench.tick(second * 1000);
        if second < 10 {
            assert!(drops(&effects).is_empty());
        } else if second == 10 {
            assert_eq!(drops(&effects), [slow]);
        }
    }
    bench.engine.handle_responded(moving, bench.at(30_500));
    assert_eq!(drops(&bench.effects()), [moving]);
}

#[test]
fn websockets_are_pinged_every_30s_and_dropped_after_75s_of_silence() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    let dashboard = bench.dashboard(0);
    bench.effects();
    let pings = |effects: &[Effect]| -> Vec<ConnId> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Ping { id } => Some(*id),
                _ => None,
            })
            .collect()
    };
    assert!(pings(&bench.tick(29_999)).is_empty());
    assert_eq!(pings(&bench.tick(30_000)), [agent, dashboard]);
    // The agent answers; the dashboard says nothing.
    bench
        .engine
        .handle_frame(agent, Inbound::Control, bench.at(30_010));
    assert_eq!(pings(&bench.tick(60_000)), [agent, dashboard]);
    let effects = bench.tick(75_000);
    assert_eq!(drops(&effects), [dashboard]);
    assert!(
        logs(&effects)
            .iter()
            .any(|l| l.contains("dashboard 192.0.2.7:40000 disconnected after 1m15s: silent")),
        "{effects:?}"
    );
    assert!(drops(&bench.tick(105_009)).is_empty());
    assert_eq!(drops(&bench.tick(105_010)), [agent]);
}

#[test]
fn a_close_not_answered_in_five_seconds_drops_the_socket() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench
        .engine
        .handle_fault(agent, Fault::TooLarge, bench.at(1000));
    assert_eq!(closes(&bench.effects()), [(agent, 1009)]);
    assert!(drops(&bench.tick(5_999)).is_empty());
    let effects = bench.tick(6_000);
    assert_eq!(drops(&effects), [agent]);
    // The first cause is the one logged.
    assert!(
        logs(&effects)
            .iter()
            .any(|l| l.contains("frame too large (1009)")),
        "{effects:?}"
    );
}

#[test]
fn a_silent_agent_goes_offline_after_the_agent_timeout_and_a_frame_brings_it_back() {
    let mut bench = Bench::with(&["a"], &["--agent-timeout", "20"], 100);
    let agent = bench.agent(0, 0);
    let dashboard = bench.dashboard(0);
    bench.received(dashboard, 0);
    bench.tick(19_999);
    assert!(bench.online(0));
    let effects = bench.tick(20_000);
    assert!(!bench.online(0));
    assert!(drops(&effects).is_empty(), "the socket stays");
    assert_eq!(
        bench.received(dashboard, 20_000),
        [status_message(&bench.ids[0], false)]
    );
    bench.send(agent, json!({"type": "heartbeat"}), 21_000);
    assert!(bench.online(0));
    assert_eq!(
        bench.received(dashboard, 21_000),
        [status_message(&bench.ids[0], true)]
    );
}

#[test]
fn a_dashboard_that_takes_nothing_for_15s_while_messages_wait_is_closed_1013() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    let reader = bench.dashboard(0);
    let stuck = bench.dashboard(0);
    bench.effects();
    let mut closed = Vec::new();
    for second in 0..=20u64 {
        let now = second * 1000;
        bench.sample(agent, second as f64, now);
        bench.received(reader, now);
        bench.engine.handle_pumped(stuck, 0, 0, true, bench.at(now));
        bench.send(reader, json!({}), now); // pongs, say
        bench.send(stuck, json!({}), now);
        closed.extend(closes(&bench.tick(now)).into_iter().map(|c| (second, c)));
    }
    assert_eq!(closed, [(15, (stuck, 1013))]);
}

#[test]
fn a_failing_accept_pauses_the_listener_and_logs_once() {
    let mut bench = Bench::new(&[]);
    let error = io::Error::from_raw_os_error(24); // EMFILE
    bench.engine.handle_accept_failure(&error, bench.at(0));
    let effects = bench.effects();
    assert_eq!(effects[0], Effect::PauseAccepting);
    assert_eq!(logs(&effects).len(), 1);
    assert_eq!(bench.engine.poll_timeout(bench.at(0)), ACCEPT_PAUSE);
    assert!(!bench.tick(99).contains(&Effect::ResumeAccepting));
    assert!(bench.tick(100).contains(&Effect::ResumeAccepting));
    for ms in [101, 500, 9_000] {
        bench.engine.handle_accept_failure(&error, bench.at(ms));
        assert_eq!(logs(&bench.effects()), Vec::<String>::new());
    }
    bench.engine.handle_accept_failure(&error, bench.at(10_000));
    let logged = logs(&bench.effects());
    assert!(
        logged[0].ends_with("(3 more since the last report)"),
        "{logged:?}"
    );
}

// ----- registry changes --------------------------------------------------------

#[test]
fn a_rotated_token_takes_the_server_offline_at_once() {
    let mut bench = Bench::new(&["a", "b"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    let other = bench.agent(1, 0);
    bench.received(dashboard, 0);
    bench.effects();
    let id = bench.ids[0].clone();
    bench.registry.rotate_token(&id).unwrap();
    let registry = bench.registry.clone();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(1000));
    assert_eq!(closes(&bench.effects()), [(agent, 1008)]);
    assert!(!bench.online(0));
    assert!(bench.online(1));
    assert_eq!(
        bench.received(dashboard, 1000),
        [status_message(&id, false)]
    );
    // Its goodbye changes nothing more.
    bench.sample(agent, 1.0, 1100);
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(1200));
    assert!(bench.received(dashboard, 1200).is_empty());
    let _ = other;
}

#[test]
fn a_removed_server_is_announced_and_its_agent_closed_1008() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 1.0, 10);
    bench.effects();
    let id = bench.ids[0].clone();
    bench.registry.remove(&id).unwrap();
    let registry = bench.registry.clone();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(1000));
    assert_eq!(closes(&bench.effects()), [(agent, 1008)]);
    // The sample it had waiting is not sent after the removal.
    let kinds = bench.kinds(dashboard, 1000);
    assert_eq!(kinds.last().unwrap(), "server_removed");
    assert!(!kinds.contains(&"metrics".to_owned()), "{kinds:?}");
}

#[test]
fn a_missing_state_file_keeps_every_server_and_agent() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.effects();
    bench
        .engine
        .handle_registry_read(RegistryRead::Missing, bench.at(2000));
    let effects = bench.effects();
    assert!(closes(&effects).is_empty());
    assert!(logs(&effects)[0].contains("missing; keeping the registry"));
    assert_eq!(bench.engine.servers(), 1);
    assert!(bench.online(0));
    let token = bench.tokens[0].clone();
    let again = bench.request(upgrade("/ws/agent", Some(&token)), 3000);
    assert_eq!(response(&bench.effects(), again), (101, After::Agent));
    let _ = agent;
}

#[test]
fn a_corrupt_state_file_keeps_the_registry_loaded_before() {
    let mut bench = Bench::new(&["a"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, "{not json").unwrap();
    let error = Registry::load(&path).unwrap_err();
    bench
        .engine
        .handle_registry_read(RegistryRead::Failed(error), bench.at(0));
    assert!(logs(&bench.effects())[0].contains("keeping the registry loaded before"));
    assert_eq!(bench.engine.servers(), 1);
}

#[test]
fn the_state_file_is_polled_every_two_seconds() {
    let mut bench = Bench::new(&[]);
    let reads = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| **e == Effect::ReadRegistry { force: false })
            .count()
    };
    assert_eq!(reads(&bench.tick(1_999)), 0);
    assert_eq!(reads(&bench.tick(2_000)), 1);
    assert_eq!(reads(&bench.tick(3_000)), 0);
    assert_eq!(reads(&bench.tick(4_000)), 1);
}

#[test]
fn sighup_forces_a_registry_read_and_a_certificate_reload() {
    let mut bench = Bench::new(&[]);
    bench.engine.handle_reload();
    let effects = bench.effects();
    assert!(effects.contains(&Effect::ReadRegistry { force: true }));
    assert!(effects.contains(&Effect::ReloadCertificate));
}

// ----- HTTP ---------------------------------------------------------------------

#[test]
fn routes_answer_with_their_status() {
    let mut bench = Bench::with(&["a"], &["--viewer-token", "secret"], 100);
    assert_eq!(bench.get("/healthz", 0).1, 200);
    assert_eq!(bench.get("/", 0).1, 200);
    assert_eq!(bench.get("/metrics", 0).1, 401);
    assert_eq!(bench.get("/metrics?token=secret", 0).1, 200);
    assert_eq!(bench.get("/api/servers", 0).1, 401);
    assert_eq!(bench.get("/api/servers?token=secret", 0).1, 200);
    assert_eq!(bench.get("/nothing", 0).1, 404);
    assert_eq!(bench.get("/dl/vstats-agent", 0).1, 404, "no --dist-dir");
    let id = bench.request(upgrade("/ws", None), 0);
    assert_eq!(response(&bench.effects(), id), (401, After::Close));
    let mut foreign = upgrade("/ws?token=secret", None);
    foreign.origin = Some("https://evil.example".into());
    let id = bench.request(foreign, 0);
    assert_eq!(response(&bench.effects(), id), (403, After::Close));
    let id = bench.request(upgrade("/ws?token=secret", None), 0);
    assert_eq!(response(&bench.effects(), id), (101, After::Dashboard));
    let mut post = get("/healthz");
    post.method = "POST".into();
    let id = bench.request(post, 0);
    assert_eq!(response(&bench.effects(), id), (405, After::Close));
    let mut plain = upgrade("/ws/agent", Some(&bench.tokens[0].clone()));
    plain.websocket_version = None;
    let id = bench.request(plain, 0);
    assert_eq!(response(&bench.effects(), id), (400, After::Close));
}

#[test]
fn a_refused_head_is_answered_with_its_status() {
    let mut bench = Bench::new(&[]);
    let peer = T0_PEER.parse().unwrap();
    bench.engine.handle_accept(1, peer, bench.at(0));
    bench
        .engine
        .handle_request(1, Request::Refuse(431), bench.at(0));
    assert_eq!(response(&bench.effects(), 1), (431, After::Close));
    bench.engine.handle_responded(1, bench.at(1));
    assert_eq!(drops(&bench.effects()), [1]);
}

#[test]
fn a_release_file_is_opened_by_the_loop_and_sent_after_its_head() {
    let mut bench = Bench::with(&[], &["--dist-dir", "/srv/dist"], 100);
    let id = bench.request(get("/dl/vstats-agent-mipsel"), 0);
    assert_eq!(
        bench.effects(),
        [Effect::OpenFile {
            id,
            dir: "/srv/dist".into(),
            name: "vstats-agent-mipsel".into()
        }]
    );
    bench
        .engine
        .handle_file_opened(id, "vstats-agent-mipsel", Ok(30_000_000));
    let effects = bench.effects();
    assert_eq!(response(&effects, id), (200, After::SendFile));
    let Effect::Respond { bytes, .. } = &effects[0] else {
        panic!("{effects:?}")
    };
    assert!(String::from_utf8_lossy(bytes).contains("Content-Length: 30000000"));
    // A link out of the folder, a FIFO, a missing file: all 404.
    let id = bench.request(get("/dl/fifo"), 0);
    bench.effects();
    let refused = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    bench.engine.handle_file_opened(id, "fifo", Err(refused));
    assert_eq!(response(&bench.effects(), id), (404, After::Close));
}

#[test]
fn past_max_connections_a_client_gets_503_and_is_counted() {
    let mut bench = Bench::with(&[], &[], 2);
    let peer: SocketAddr = T0_PEER.parse().unwrap();
    assert_eq!(
        bench.engine.handle_accept(1, peer, bench.at(0)),
        Admission::Admit
    );
    assert_eq!(
        bench.engine.handle_accept(2, peer, bench.at(0)),
        Admission::Admit
    );
    let Admission::Refuse(bytes) = bench.engine.handle_accept(3, peer, bench.at(0)) else {
        panic!("admitted");
    };
    assert_eq!(status_of(&bytes), 503);
    assert_eq!(bench.engine.counters.refused_connections, 1);
    // On TLS, no plain text.
    let clock = Box::new(sim::FakeClock::new(bench.t0));
    let mut tls = Engine::new(config(&[]), true, 0, Registry::empty(), bench.at(0), clock);
    assert_eq!(
        tls.handle_accept(1, peer, bench.at(0)),
        Admission::Refuse(Vec::new())
    );
}

#[test]
fn refusals_are_logged_with_the_peer_once_per_ten_seconds_then_summed_up() {
    let mut bench = Bench::new(&["a"]);
    for ms in 0..50 {
        let id = bench.request(upgrade("/ws/agent", None), ms);
        let effects = bench.effects();
        assert_eq!(response(&effects, id), (401, After::Close));
        bench.engine.handle_responded(id, bench.at(ms));
        let logged = logs(&effects);
        if ms == 0 {
            assert_eq!(
                logged,
                ["refused 192.0.2.7:40000: agent with an unknown or missing token"]
            );
        } else {
            assert!(logged.is_empty(), "{logged:?}");
        }
    }
    assert!(logs(&bench.tick(9_000)).is_empty());
    let summary = logs(&bench.tick(10_000));
    assert!(
        summary.contains(&"49 more connections refused in the last 10s".to_owned()),
        "{summary:?}"
    );
    assert!(logs(&bench.tick(30_000)).is_empty(), "said once");
}

#[test]
fn a_protocol_violation_is_closed_1002_and_counted() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.effects();
    bench
        .engine
        .handle_fault(agent, Fault::Protocol("unmasked frame".into()), bench.at(1));
    assert_eq!(closes(&bench.effects()), [(agent, 1002)]);
    assert_eq!(bench.engine.counters.protocol_errors, 1);
    bench
        .engine
        .handle_fault(agent, Fault::NotUtf8, bench.at(2));
    assert!(closes(&bench.effects()).is_empty(), "one close frame");
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(3));
    assert!(
        logs(&bench.effects())
            .iter()
            .any(|l| l.contains("protocol violation (1002): unmasked frame")),
    );
}

// ----- shutdown -------------------------------------------------------------------

#[test]
fn shutdown_says_1001_to_websockets_drops_the_rest_and_admits_no_one() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    let dashboard = bench.dashboard(0);
    let peer: SocketAddr = T0_PEER.parse().unwrap();
    bench.engine.handle_accept(99, peer, bench.at(0));
    bench.effects();
    bench.engine.handle_shutdown(bench.at(1));
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(agent, 1001), (dashboard, 1001)]);
    assert_eq!(drops(&effects), [99]);
    assert!(matches!(
        bench.engine.handle_accept(100, peer, bench.at(2)),
        Admission::Refuse(_)
    ));
}

// ----- small parts --------------------------------------------------------------

#[test]
fn ages_read_as_a_person_writes_them() {
    let text = |secs: u64| Lasted(Duration::from_secs(secs)).to_string();
    assert_eq!(Lasted(Duration::from_millis(850)).to_string(), "850ms");
    assert_eq!(text(42), "42s");
    assert_eq!(text(75), "1m15s");
    assert_eq!(text(3 * 3600 + 12 * 60 + 5), "3h12m5s");
}

#[test]
fn a_large_body_is_built_once_a_second_and_shared_a_small_one_each_time() {
    let names: Vec<String> = (0..700).map(|i| format!("server-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut bench = Bench::new(&names);
    let body = |bench: &mut Bench, path: &str, ms: u64| -> Rc<[u8]> {
        bench.request(get(path), ms);
        let effects = bench.effects();
        match effects.into_iter().next() {
            Some(Effect::Respond { bytes, .. }) => bytes,
            other => panic!("{other:?}"),
        }
    };
    let first = body(&mut bench, "/api/servers", 0);
    assert!(first.len() > SHARE_BODIES_ABOVE, "{} bytes", first.len());
    assert!(Rc::ptr_eq(&first, &body(&mut bench, "/api/servers", 999)));
    let later = body(&mut bench, "/api/servers", 1000);
    assert!(!Rc::ptr_eq(&first, &later));
    assert_eq!(first, later, "nothing changed meanwhile");
    let health = body(&mut bench, "/healthz", 1000);
    assert!(!Rc::ptr_eq(&health, &body(&mut bench, "/healthz", 1000)));
}

// ----- lean samples -----------------------------------------------------------------

fn full_sample() -> Value {
    json!({"type": "metrics", "data": {
        "hostname": "pi", "cpu": {"brand": "Cortex-A72", "cores": 4, "usage": 1.0},
        "memory": {"total": 1000, "used": 400, "available": 600, "usage_percent": 40.0},
        "network": {"rx": 0, "tx": 0, "rx_total": 100, "tx_total": 10, "interfaces": [
            {"name": "eth0", "counted": true, "rx": 0, "tx": 0, "rx_total": 100, "tx_total": 10}
        ]},
        "uptime": 50
    }})
}

#[test]
fn patches_after_a_full_sample_reach_dashboards_as_whole_samples() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    bench.received(dashboard, 10);
    bench.send(
        agent,
        json!({"type": "patch", "data": {"elapsed_ms": 1000, "cpu": {"usage": 7.5},
            "memory": {"available": 100}, "network": {"interfaces": [{"rx_bytes": 2000}]}}}),
        1010,
    );
    let seen = bench.received(dashboard, 1010);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let sample = &seen[0].1["metrics"];
    assert_eq!(sample["hostname"], "pi", "static facts kept");
    assert_eq!(sample["cpu"]["brand"], "Cortex-A72");
    assert_eq!(sample["cpu"]["usage"], 7.5);
    assert_eq!(sample["memory"]["used"], 900, "derived");
    assert_eq!(sample["memory"]["usage_percent"], 90.0);
    assert_eq!(sample["network"]["rx"], 2000.0);
    assert_eq!(sample["network"]["rx_total"], 2100);
    assert_eq!(sample["uptime"], 51);
    assert_eq!(bench.engine.counters.malformed, 0);
    // /api/servers has the whole sample too.
    let servers = bench.engine.hub.servers_json();
    let servers: Value = serde_json::from_slice(&servers).unwrap();
    assert_eq!(servers[0]["metrics"]["memory"]["used"], 900);
}

#[test]
fn a_patch_without_a_full_sample_on_its_connection_is_malformed() {
    let mut bench = Bench::new(&["a"]);
    let first = bench.agent(0, 0);
    bench.send(first, full_sample(), 10);
    // The device reconnects: its new connection must start over.
    let again = bench.agent(0, 1000);
    bench.send(
        again,
        json!({"type": "patch", "data": {"elapsed_ms": 1000}}),
        1010,
    );
    assert_eq!(bench.engine.counters.malformed, 1);
    bench.send(again, full_sample(), 1020);
    bench.send(
        again,
        json!({"type": "patch", "data": {"elapsed_ms": 1000}}),
        2020,
    );
    assert_eq!(bench.engine.counters.malformed, 1);
    bench.send(
        again,
        json!({"type": "patch", "data": {"elapsed_ms": "soon"}}),
        3020,
    );
    assert_eq!(bench.engine.counters.malformed, 2);
}

#[test]
fn patches_over_the_rate_still_count_though_they_are_not_forwarded() {
    let mut bench = Bench::with(&["a"], &["--agent-max-rate", "1"], 100);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 0);
    bench.received(dashboard, 0);
    let moved = |bytes: u64| {
        json!({"type": "patch", "data": {"elapsed_ms": 100,
            "network": {"interfaces": [{"rx_bytes": bytes}]}}})
    };
    bench.send(agent, moved(1000), 100);
    bench.send(agent, moved(500), 200);
    assert_eq!(bench.engine.counters.dropped_samples, 2);
    assert!(bench.received(dashboard, 200).is_empty());
    bench.send(agent, moved(0), 1200);
    let seen = bench.received(dashboard, 1200);
    assert_eq!(seen[0].1["metrics"]["network"]["rx_total"], 1600);
}

#[test]
fn a_full_sample_held_back_by_the_rate_is_the_base_of_the_next_patch() {
    let mut bench = Bench::with(&["a"], &["--agent-max-rate", "1"], 100);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 1.0, 0);
    bench.send(agent, full_sample(), 100); // over the rate: held back
    bench.received(dashboard, 100);
    bench.send(
        agent,
        json!({"type": "patch", "data": {"elapsed_ms": 1000}}),
        1100,
    );
    let seen = bench.received(dashboard, 1100);
    assert_eq!(seen[0].1["metrics"]["hostname"], "pi", "{seen:?}");
    assert_eq!(seen[0].1["metrics"]["memory"]["total"], 1000);
}

// ----- history ----------------------------------------------------------------------

/// A response's status and its body as JSON (`Null` if it is not JSON).
fn response_json(bench: &mut Bench, path: &str, ms: u64) -> (u16, Value) {
    let id = bench.request(get(path), ms);
    let effects = bench.effects();
    let (status, _) = response(&effects, id);
    let bytes = match effects.into_iter().next() {
        Some(Effect::Respond { bytes, .. }) => bytes,
        other => panic!("{other:?}"),
    };
    let text = String::from_utf8_lossy(&bytes);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn history_is_served_per_server_and_range_behind_the_viewer_token() {
    // Without a database: the hour and the day in memory.
    let mut bench = Bench::with(
        &["a", "b"],
        &["--viewer-token", "secret", "--history-db", "off"],
        100,
    );
    let agent = bench.agent(0, 0);
    bench.sample(agent, 12.5, 10);
    let id = bench.ids[0].clone();
    let path = format!("/api/servers/{id}/history");
    assert_eq!(bench.get(&path, 20).1, 401);

    let (status, hour) = response_json(&mut bench, &format!("{path}?token=secret"), 20);
    assert_eq!(status, 200);
    assert_eq!(
        (hour["id"].as_str(), hour["range"].as_str()),
        (Some(&*id), Some("1h"))
    );
    assert_eq!(hour["step"], 10);
    assert!(hour["last_seen"].as_str().unwrap().ends_with('Z'), "{hour}");
    let cpu = hour["series"]["cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), 360);
    // The sample's step is the last: the fake clock does not cross a step
    // between the sample and the request.
    let known: Vec<&Value> = cpu.iter().filter(|v| !v.is_null()).collect();
    assert_eq!(known, [&json!(12.5)]);
    assert_eq!(cpu[359], json!(12.5));
    assert!(
        hour["series"]["temperature"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );

    let (status, day) = response_json(&mut bench, &format!("{path}?range=24h&token=secret"), 30);
    assert_eq!((status, day["step"].as_u64()), (200, Some(300)));
    assert_eq!(day["series"]["cpu"].as_array().unwrap().len(), 288);

    let silent = bench.ids[1].clone();
    let (status, never) = response_json(
        &mut bench,
        &format!("/api/servers/{silent}/history?token=secret"),
        40,
    );
    assert_eq!(
        status, 200,
        "a server never heard from has an empty history"
    );
    assert!(
        never["series"]["cpu"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );

    let week = format!("{path}?range=7d&token=secret");
    assert_eq!(bench.get(&week, 50).1, 400);
    assert_eq!(
        bench.get("/api/servers/nope/history?token=secret", 50).1,
        404
    );
}

/// The database's jobs among `effects`.
fn store_jobs(effects: Vec<Effect>) -> Vec<Job> {
    effects
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Store(job) => Some(job),
            _ => None,
        })
        .collect()
}

/// The minutes handed to the database among `effects`: `(server, time,
/// cpu mean, cpu max)`.
fn stored_minutes(effects: Vec<Effect>) -> Vec<(String, u64, Option<f64>, Option<f64>)> {
    store_jobs(effects)
        .into_iter()
        .flat_map(|job| match job {
            Job::Minutes(rows) => rows,
            other => panic!("{other:?}"),
        })
        .map(|row| {
            let cpu = |point| history::decode(0, point);
            (
                row.server,
                row.step.time,
                cpu(&row.step.mean),
                cpu(&row.step.max),
            )
        })
        .collect()
}

#[test]
fn minutes_go_to_the_database_in_one_batch_just_after_each_minute() {
    // The fake wall clock starts 1 s into 08:00 (sim::wall_start).
    let minute = unix_seconds(sim::wall_start()) - 1;
    let mut bench = Bench::new(&["a", "b"]);
    let (a, b) = (bench.agent(0, 0), bench.agent(1, 0));
    bench.sample(a, 10.0, 1_000);
    bench.sample(a, 30.0, 30_000);
    bench.sample(b, 50.0, 40_000);
    // b falls silent; a goes on into the next minute, which finishes its
    // first at once: it waits for the batch.
    bench.sample(a, 70.0, 61_000);
    assert_eq!(stored_minutes(bench.tick(58_000)), []);
    bench.effects();
    let due = bench.engine.poll_timeout(bench.at(58_000));
    assert!(due <= Duration::from_secs(2), "{due:?}");
    let batch = stored_minutes(bench.tick(60_000));
    let (ida, idb) = (bench.ids[0].clone(), bench.ids[1].clone());
    assert_eq!(
        batch,
        [
            (ida.clone(), minute, Some(20.0), Some(30.0)),
            (idb, minute, Some(50.0), Some(50.0)),
        ]
    );
    // The next batch is a minute later, with a's second minute.
    assert_eq!(stored_minutes(bench.tick(100_000)), []);
    let batch = stored_minutes(bench.tick(120_000));
    assert_eq!(batch, [(ida, minute + 60, Some(70.0), Some(70.0))]);
}

#[test]
fn a_stop_hands_the_minute_in_progress_to_the_database() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 42.0, 5_000);
    bench.effects();
    bench.engine.handle_shutdown(bench.at(6_000));
    let minutes = stored_minutes(
        bench
            .effects()
            .into_iter()
            .filter(|effect| matches!(effect, Effect::Store(_)))
            .collect(),
    );
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].2, Some(42.0));
}

#[test]
fn without_a_database_no_minutes_are_kept_and_the_day_stays_in_memory() {
    let mut bench = Bench::with(&["a"], &["--history-db", "off"], 100);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 42.0, 5_000);
    assert!(store_jobs(bench.tick(125_000)).is_empty());
    bench.engine.handle_shutdown(bench.at(126_000));
    assert!(store_jobs(bench.effects()).is_empty());
    let server = bench.engine.hub.get(&bench.ids[0]).unwrap();
    let day = server
        .history
        .as_ref()
        .unwrap()
        .day
        .view(unix_seconds(sim::wall_start()) + 10);
    assert!(day.series[0].iter().any(Option::is_some));
}

#[test]
fn a_removed_server_has_its_rows_forgotten_by_the_database() {
    let mut bench = Bench::new(&["a", "b"]);
    let gone = bench.ids[1].clone();
    let mut registry = bench.registry.clone();
    registry.remove(&gone).unwrap();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(10));
    let jobs = store_jobs(bench.effects());
    assert_eq!(jobs, [Job::Forget(gone)]);
}

#[test]
fn restored_history_is_handed_to_the_database_once_with_the_servers_to_keep() {
    let mut bench = Bench::new(&["a", "b"]);
    let wall = unix_seconds(sim::wall_start());
    let mut saved = history::History::default();
    let mut reading = Reading::default();
    reading.values[0] = Some(5.0);
    saved.record(wall - 600, &reading);
    let kept = bench.engine.restore_history(
        vec![
            (bench.ids[0].clone(), saved.clone()),
            ("removed-long-ago".into(), saved.clone()),
        ],
        bench.at(0),
    );
    assert_eq!(kept, (1, 0));
    let jobs = store_jobs(bench.effects());
    assert_eq!(
        jobs,
        [
            Job::Import(vec![(bench.ids[0].clone(), Box::new(saved))]),
            Job::Keep(bench.ids.clone()),
        ]
    );
    // The day is the database's now: memory keeps the hour only.
    let server = bench.engine.hub.get(&bench.ids[0]).unwrap();
    let history = server.history.as_ref().unwrap();
    assert!(history.day.view(wall).series[0].iter().all(Option::is_none));
    assert!(
        history.hour.view(wall).series[0]
            .iter()
            .any(Option::is_some)
    );
}

/// The whole response the engine decided for `id`, as text.
fn response_text(effects: &[Effect], id: ConnId) -> String {
    effects
        .iter()
        .find_map(|effect| match effect {
            Effect::Respond { id: to, bytes, .. } if *to == id => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no response for {id} in {effects:?}"))
}

#[test]
fn an_empty_registry_at_start_deletes_nothing_from_the_database() {
    let mut bench = Bench::new(&[]);
    bench.engine.restore_history(Vec::new(), bench.at(0));
    assert_eq!(store_jobs(bench.effects()), []);
    let mut bench = Bench::new(&["a"]);
    bench.engine.restore_history(Vec::new(), bench.at(0));
    assert_eq!(
        store_jobs(bench.effects()),
        [Job::Keep(vec![bench.ids[0].clone()])]
    );
}

/// The read the engine asked of the database for `id`.
fn asked(effects: Vec<Effect>, id: ConnId) -> Ask {
    effects
        .into_iter()
        .find_map(|effect| match effect {
            Effect::QueryHistory(ask) if ask.id == id => Some(*ask),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no query for {id}"))
}

#[test]
fn a_long_range_is_read_off_the_loop_and_answered_when_the_database_answers() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.ids[0].clone();
    let request = bench.request(get(&format!("/api/servers/{id}/history?range=30d")), 10);
    let ask = asked(bench.effects(), request);
    assert_eq!(
        (ask.server.as_str(), ask.tier, ask.csv),
        (id.as_str(), rollup::Tier::Quarters, false)
    );
    assert_eq!((ask.range, ask.plan.step), ("30d", 2700));
    // Nothing is written until the answer comes; another's answer is
    // ignored.
    bench.engine.handle_history_answer(
        Answer {
            id: 999,
            body: Ok("{}".into()),
        },
        bench.at(20),
    );
    assert!(bench.effects().is_empty());
    bench.engine.handle_history_answer(
        Answer {
            id: request,
            body: Ok("{\"id\":1}".into()),
        },
        bench.at(30),
    );
    let effects = bench.effects();
    assert_eq!(response(&effects, request), (200, After::Close));
    let text = response_text(&effects, request);
    assert!(
        text.contains("application/json") && text.ends_with("{\"id\":1}"),
        "{text}"
    );

    let csv = bench.request(
        get(&format!("/api/servers/{id}/history?range=1y&format=csv")),
        40,
    );
    let ask = asked(bench.effects(), csv);
    assert_eq!((ask.tier, ask.csv), (rollup::Tier::Hours, true));
    bench.engine.handle_history_answer(
        Answer {
            id: csv,
            body: Err("disk I/O error".into()),
        },
        bench.at(50),
    );
    assert_eq!(response(&bench.effects(), csv), (503, After::Close));
}

#[test]
fn a_long_range_without_the_viewer_token_reads_nothing() {
    let mut bench = Bench::with(&["a"], &["--viewer-token", "secret"], 100);
    let id = bench.ids[0].clone();
    for query in ["range=1y", "range=30d&format=csv", "from=1"] {
        let request = bench.request(get(&format!("/api/servers/{id}/history?{query}")), 10);
        let effects = bench.effects();
        assert_eq!(response(&effects, request).0, 401, "{query}");
        assert!(
            !effects
                .iter()
                .any(|effect| matches!(effect, Effect::QueryHistory(_))),
            "{query}: {effects:?}"
        );
    }
    let request = bench.request(
        get(&format!("/api/servers/{id}/history?range=1y&token=secret")),
        20,
    );
    asked(bench.effects(), request);
}

#[test]
fn a_history_read_the_database_never_answers_ends_at_the_response_deadline() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.ids[0].clone();
    let request = bench.request(get(&format!("/api/servers/{id}/history?range=7d")), 0);
    asked(bench.effects(), request);
    let before = HEAD_TIMEOUT.as_millis() as u64 - 1;
    assert!(bench.tick(before).is_empty() || bench.engine.conns.contains_key(&request));
    let effects = bench.tick(HEAD_TIMEOUT.as_millis() as u64 + 1_000);
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Drop { id, .. } if *id == request)),
        "{effects:?}"
    );
    assert!(!bench.engine.conns.contains_key(&request));
}

#[test]
fn bad_history_requests_get_400_with_the_reason() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.ids[0].clone();
    let wall = unix_seconds(sim::wall_start());
    for (query, why) in [
        ("range=2w", "range must be one of 1h, 24h, 7d, 30d, 1y"),
        ("from=yesterday", "from must be a time in unix seconds"),
        (
            &format!("from={}&to={}", wall, wall - 10),
            "from is later than to",
        ),
        (
            &format!("from={}", wall - 400 * 86_400),
            "older than the history kept",
        ),
        ("range=1h&from=1", "not both"),
        ("format=xml", "format must be json or csv"),
    ] {
        let request = bench.request(get(&format!("/api/servers/{id}/history?{query}")), 10);
        let effects = bench.effects();
        assert_eq!(response(&effects, request).0, 400, "{query}");
        let text = response_text(&effects, request);
        assert!(text.contains(why), "{query}: {text}");
    }
    // Without a database, what only it keeps is not found.
    let mut bench = Bench::with(&["a"], &["--history-db", "off"], 100);
    let id = bench.ids[0].clone();
    let path = format!("/api/servers/{id}/history?from={}&format=csv", wall - 7200);
    assert_eq!(bench.get(&path, 10).1, 404);
}

#[test]
fn oversize_and_repeated_history_parameters_are_refused_or_read_once() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.ids[0].clone();
    // A time of 7,000 digits (within the 8 KiB head): not unix seconds.
    let long = format!("from={}", "9".repeat(7000));
    let request = bench.request(get(&format!("/api/servers/{id}/history?{long}")), 10);
    let effects = bench.effects();
    assert_eq!(response(&effects, request).0, 400);
    assert!(response_text(&effects, request).contains("from must be a time"));
    // A thousand ranges: the first one counts, and one read is asked.
    let many = vec!["range=1y"; 1000].join("&");
    let request = bench.request(get(&format!("/api/servers/{id}/history?{many}")), 20);
    let effects = bench.effects();
    let asks = effects
        .iter()
        .filter(|effect| matches!(effect, Effect::QueryHistory(_)))
        .count();
    assert_eq!(asks, 1);
    assert_eq!(asked(effects, request).range, "1y");
}

#[test]
fn the_last_hour_is_served_from_memory_as_csv_too() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 12.5, 10);
    let id = bench.ids[0].clone();
    let request = bench.request(get(&format!("/api/servers/{id}/history?format=csv")), 20);
    let effects = bench.effects();
    assert_eq!(response(&effects, request).0, 200);
    let text = response_text(&effects, request);
    assert!(text.contains("text/csv"), "{text}");
    let lines: Vec<&str> = text.split("\r\n\r\n").nth(1).unwrap().lines().collect();
    assert_eq!(lines.len(), 361, "a header and 360 steps of 10 s");
    assert!(lines[360].contains(",12.5,,"), "{}", lines[360]);
}

/// The notifications among `effects`: `(event, message)`.
fn notices(effects: &[Effect]) -> Vec<(&'static str, String)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Notify(notice) => Some((notice.event.as_str(), notice.message.clone())),
            _ => None,
        })
        .collect()
}

/// Ticks every 500 ms from `from` to `to`: the notifications on the way.
fn notices_between(bench: &mut Bench, from: u64, to: u64) -> Vec<(u64, &'static str)> {
    (from..=to)
        .step_by(500)
        .flat_map(|ms| {
            notices(&bench.tick(ms))
                .into_iter()
                .map(move |(event, _)| (ms, event))
        })
        .collect()
}

#[test]
fn an_agent_gone_past_notify_after_is_notified_offline_then_online() {
    let mut bench = Bench::with(&["pi"], &["--notify-after", "60"], 100);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 100);
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(1_000));
    assert_eq!(
        notices_between(&mut bench, 1_000, 61_000),
        [(61_000, "offline")]
    );
    let effects = bench.tick(61_000);
    assert_eq!(notices(&effects), [], "notified once");
    let agent = bench.agent(0, 90_000);
    let mut effects = bench.effects();
    bench.sample(agent, 5.0, 90_100);
    effects.extend(bench.tick(90_500));
    let back = notices(&effects);
    assert_eq!(back.len(), 1, "{effects:?}");
    assert_eq!(back[0].0, "online");
    assert!(
        back[0].1.contains("pi is back online after 1m 29s"),
        "{back:?}"
    );
    assert!(
        logs(&effects)
            .iter()
            .any(|l| l.contains("alert: pi is back online")),
        "{effects:?}"
    );
    // What is open was saved with the offline, and saved again when it closed.
    let saves = effects
        .iter()
        .filter(|e| matches!(e, Effect::SaveAlerts { .. }))
        .count();
    assert_eq!(saves, 1);
}

#[test]
fn a_flap_shorter_than_notify_after_notifies_nothing() {
    let mut bench = Bench::with(&["pi"], &["--notify-after", "5"], 100);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 100);
    bench.tick(500);
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(1_000));
    bench.tick(1_000);
    let agent = bench.agent(0, 5_500);
    bench.sample(agent, 5.0, 5_600);
    assert_eq!(notices_between(&mut bench, 1_500, 60_000), []);
}

#[test]
fn a_silent_agent_is_notified_after_the_agent_timeout_and_notify_after() {
    let mut bench = Bench::with(
        &["pi"],
        &["--notify-after", "10", "--agent-timeout", "20"],
        100,
    );
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 0);
    // Pongs would keep it online; this one is silent from 0 s.
    assert_eq!(
        notices_between(&mut bench, 500, 40_000),
        [(30_000, "offline")]
    );
}

#[test]
fn a_server_registered_but_never_seen_is_not_notified() {
    let mut bench = Bench::with(&["pi"], &["--notify-after", "0"], 100);
    assert_eq!(notices_between(&mut bench, 500, 600_000), []);
}

#[test]
fn a_threshold_notifies_when_it_has_held_its_time_and_when_it_stops() {
    let mut bench = Bench::with(&["pi"], &["--alert", "cpu>=90 for 10s"], 100);
    let agent = bench.agent(0, 0);
    let mut fired = Vec::new();
    for second in 0..=40 {
        let cpu = if second <= 15 { 97.0 } else { 10.0 };
        bench.sample(agent, cpu, second * 1_000);
        fired.extend(notices(&bench.effects()).into_iter().map(|n| (second, n)));
    }
    assert_eq!(
        fired,
        [
            (
                10,
                (
                    "threshold",
                    "pi: CPU usage is 97 %, at or above 90 % for 10s.".to_owned()
                )
            ),
            (
                26,
                (
                    "threshold",
                    "pi: CPU usage is back to 10 %, below 90 % for 10s.".to_owned()
                )
            ),
        ]
    );
}

#[test]
fn alert_off_turns_the_thresholds_off() {
    let mut bench = Bench::with(&["pi"], &["--alert", "off"], 100);
    let agent = bench.agent(0, 0);
    for second in 0..=400 {
        bench.sample(agent, 100.0, second * 1_000);
        assert_eq!(notices(&bench.effects()), []);
    }
}

#[test]
fn a_removed_server_leaves_no_open_alert_behind() {
    let mut bench = Bench::with(&["pi", "nas"], &["--notify-after", "0"], 100);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 0);
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(100));
    let effects = bench.tick(500);
    assert_eq!(notices(&effects).len(), 1, "{effects:?}");
    let saved = |effects: &[Effect]| {
        effects.iter().find_map(|e| match e {
            Effect::SaveAlerts { bytes, .. } => Some(alerts::from_file(bytes).unwrap()),
            _ => None,
        })
    };
    assert!(saved(&effects).unwrap().contains_key(&bench.ids[0]));
    bench.registry.remove(&bench.ids[0].clone()).unwrap();
    let registry = bench.registry.clone();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(1_000));
    let effects = bench.tick(1_500);
    assert_eq!(saved(&effects).unwrap().len(), 0, "{effects:?}");
}

/// The `history` message bytes queued to dashboard `id` (its snapshot).
fn history_message(bench: &mut Bench, id: ConnId) -> Utf8Bytes {
    let outbox = bench.engine.dashboard_outbox(id).expect("a dashboard");
    std::iter::from_fn(|| outbox.pop())
        .find(|message| message.as_str().contains(r#""type":"history""#))
        .expect("a history message")
}

#[test]
fn dashboards_opening_in_one_step_share_one_build_of_the_sparklines() {
    let mut bench = Bench::new(&["pi"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 0);
    let (first, second) = (bench.dashboard(100), bench.dashboard(200));
    let (first, second) = (
        history_message(&mut bench, first),
        history_message(&mut bench, second),
    );
    // Ten dashboards at 10,000 servers held 150 MB of copies and the loop
    // for five seconds; one build is shared now.
    assert_eq!(first.as_str().as_ptr(), second.as_str().as_ptr());
    assert_eq!(first, second);
}

// ----- vStats agents ---------------------------------------------

/// The real vStats agent's frames: auth, three metrics, aggregated_metrics.
const VSTATS_FRAMES: &str = include_str!("../../tests/vstats-real/agent-frames.jsonl");

fn vstats_frame(line: usize) -> &'static str {
    VSTATS_FRAMES.lines().nth(line).unwrap()
}

fn vstats_auth(server_id: &str, token: &str) -> String {
    json!({"type": "auth", "server_id": server_id, "token": token, "version": "v-src-9b1f52b"})
        .to_string()
}

/// Texts the engine asked to send on `id`.
fn sent(effects: &[Effect], to: ConnId) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { id, text } if *id == to => Some(serde_json::from_str(text).unwrap()),
            _ => None,
        })
        .collect()
}

impl Bench {
    /// A vStats agent through its `101`, not yet authenticated.
    fn vstats_upgrade(&mut self, ms: u64) -> ConnId {
        let id = self.request(upgrade("/compat/ws/agent", None), ms);
        let effects = self.effects();
        assert_eq!(
            response(&effects, id),
            (101, After::CompatAgent),
            "{effects:?}"
        );
        self.engine.handle_responded(id, self.at(ms));
        let effects = self.effects();
        assert!(
            effects.contains(&Effect::Upgrade {
                id,
                max_message: compat::MAX_AUTH_MESSAGE
            }),
            "{effects:?}"
        );
        id
    }

    fn text(&mut self, id: ConnId, text: &str, ms: u64) {
        self.engine
            .handle_frame(id, Inbound::Text(text), self.at(ms));
    }

    /// A vStats agent of `server`, authenticated.
    fn vstats_agent(&mut self, server: usize, ms: u64) -> ConnId {
        let id = self.vstats_upgrade(ms);
        let auth = vstats_auth(&self.ids[server].clone(), &self.tokens[server].clone());
        self.text(id, &auth, ms);
        let effects = self.effects();
        assert_eq!(
            sent(&effects, id),
            [json!({"type": "auth", "status": "ok"})],
            "{effects:?}"
        );
        id
    }
}

#[test]
fn a_vstats_agents_auth_admits_it_like_ours_and_its_samples_reach_dashboards() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    bench.received(dashboard, 0);
    let agent = bench.vstats_upgrade(10);
    // Upgraded, but not the server's until it authenticates.
    assert!(!bench.online(0));
    bench.text(
        agent,
        &vstats_auth(&bench.ids[0].clone(), &bench.tokens[0].clone()),
        20,
    );
    let effects = bench.effects();
    assert_eq!(
        sent(&effects, agent),
        [json!({"type": "auth", "status": "ok"})]
    );
    assert!(
        logs(&effects)
            .iter()
            .any(|l| l.starts_with("vStats agent for a (")),
        "{effects:?}"
    );
    assert!(bench.online(0));
    assert_eq!(
        bench.received(dashboard, 20),
        [status_message(&bench.ids[0], true)]
    );
    bench.text(agent, vstats_frame(1), 2000);
    let seen = bench.received(dashboard, 2000);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let sample = &seen[0].1["metrics"];
    assert_eq!(seen[0].1["server_id"], *bench.ids[0]);
    assert_eq!(sample["cpu"]["usage"], 100);
    assert_eq!(sample["memory"]["total"], 25276059648u64);
    assert_eq!(sample["disks"][0]["mount"], "/");
    assert_eq!(sample["network"]["rx_total"], 581235905);
    // History and /api/servers see it too.
    let server = bench.engine.hub.get(&bench.ids[0]).unwrap();
    assert!(server.history.is_some());
    bench.effects();
    let (_, servers) = response_json(&mut bench, "/api/servers", 2100);
    assert_eq!(servers[0]["metrics"]["hostname"], "vm");
    assert_eq!(bench.engine.counters.malformed, 0);
}

#[test]
fn a_wrong_token_and_an_unknown_id_get_vstats_errors_and_a_1008_close() {
    let mut bench = Bench::new(&["a", "b"]);
    let (a, b_token) = (bench.ids[0].clone(), bench.tokens[1].clone());
    for (server_id, message) in [
        (a.as_str(), "Invalid token"),
        ("0123456789ab", "Server not found"),
    ] {
        let agent = bench.vstats_upgrade(0);
        bench.text(agent, &vstats_auth(server_id, &b_token), 10);
        // The state file is checked first, for a server added a moment ago.
        assert_eq!(bench.effects(), [Effect::ReadRegistry { force: false }]);
        bench
            .engine
            .handle_registry_read(RegistryRead::Unchanged, bench.at(20));
        let effects = bench.effects();
        assert_eq!(
            sent(&effects, agent),
            [json!({"type": "auth", "status": "error", "message": message})]
        );
        assert_eq!(closes(&effects), [(agent, 1008)]);
        // Frames after the refusal change nothing.
        bench.text(agent, vstats_frame(1), 30);
        assert!(bench.effects().is_empty());
        bench
            .engine
            .handle_ended(agent, SocketEnd::Closed, bench.at(40));
        bench.effects();
    }
    assert!(!bench.online(0) && !bench.online(1));
}

#[test]
fn refused_vstats_agents_are_logged_like_other_refusals() {
    let mut bench = Bench::new(&["a"]);
    let mut logged = Vec::new();
    for ms in 0..5 {
        let agent = bench.vstats_upgrade(ms);
        bench.text(agent, &vstats_auth("0123456789ab", "nope"), ms);
        bench
            .engine
            .handle_registry_read(RegistryRead::Unchanged, bench.at(ms));
        logged.extend(logs(&bench.effects()));
    }
    // Neither the id nor the token offered.
    assert_eq!(
        logged,
        ["refused 192.0.2.7:40000: vStats agent of an unknown server id"]
    );
    let summary = logs(&bench.tick(10_000));
    assert!(
        summary.contains(&"4 more connections refused in the last 10s".to_owned()),
        "{summary:?}"
    );
}

#[test]
fn a_vstats_agent_of_a_server_added_a_moment_ago_is_admitted() {
    let mut bench = Bench::new(&["a"]);
    let (new, token) = bench.registry.add("new", "").unwrap();
    let agent = bench.vstats_upgrade(0);
    bench.text(agent, &vstats_auth(&new.id, &token), 10);
    assert_eq!(bench.effects(), [Effect::ReadRegistry { force: false }]);
    let registry = bench.registry.clone();
    bench
        .engine
        .handle_registry_read(RegistryRead::Loaded(registry), bench.at(20));
    let effects = bench.effects();
    assert_eq!(
        sent(&effects, agent),
        [json!({"type": "auth", "status": "ok"})]
    );
    assert!(bench.engine.hub.get(&new.id).unwrap().presence.online());
}

#[test]
fn a_vstats_agent_silent_for_ten_seconds_after_the_upgrade_is_closed_1008() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.vstats_upgrade(0);
    // A ping is not an auth.
    bench
        .engine
        .handle_frame(agent, Inbound::Control, bench.at(5_000));
    assert!(closes(&bench.tick(9_999)).is_empty());
    let effects = bench.tick(10_000);
    assert_eq!(closes(&effects), [(agent, 1008)]);
    assert_eq!(
        logs(&effects),
        ["refused 192.0.2.7:40000: vStats agent sent no auth frame in time"]
    );
    assert!(closes(&bench.tick(11_000)).is_empty(), "one close frame");
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(11_500));
    assert!(!bench.online(0));
}

#[test]
fn a_vstats_agent_whose_first_frame_is_not_auth_is_closed_1008() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.vstats_upgrade(0);
    bench.text(agent, vstats_frame(1), 10);
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(agent, 1008)]);
    assert!(sent(&effects, agent).is_empty());
    let binary = bench.vstats_upgrade(20);
    bench
        .engine
        .handle_frame(binary, Inbound::Binary, bench.at(30));
    assert_eq!(closes(&bench.effects()), [(binary, 1008)]);
    assert!(!bench.online(0));
}

#[test]
fn aggregated_and_batch_metrics_are_counted_and_ignored() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.vstats_agent(0, 0);
    bench.received(dashboard, 0);
    bench.text(agent, vstats_frame(4), 100);
    bench.text(
        agent,
        r#"{"type":"batch_metrics","batch_id":"b","metrics":[]}"#,
        200,
    );
    assert!(bench.received(dashboard, 300).is_empty());
    let ignored = bench.engine.counters.compat_ignored;
    assert_eq!((ignored.aggregated_metrics, ignored.batch_metrics), (1, 1));
    assert_eq!(bench.engine.counters.malformed, 0);
    bench.request(get("/metrics"), 400);
    let body = match bench.effects().into_iter().next() {
        Some(Effect::Respond { bytes, .. }) => String::from_utf8_lossy(&bytes).into_owned(),
        other => panic!("{other:?}"),
    };
    assert!(
        body.contains("vstats_relay_compat_ignored_frames_total{type=\"aggregated_metrics\"} 1\n"),
        "{body}"
    );
    // Garbage is malformed, as from our agents.
    bench.text(agent, "not json", 500);
    assert_eq!(bench.engine.counters.malformed, 1);
}

#[test]
fn a_second_vstats_connection_replaces_the_first() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let old = bench.vstats_agent(0, 0);
    let new = bench.vstats_agent(0, 1000);
    // (vstats_agent took the effects: the close came with the new auth.)
    bench.received(dashboard, 1000);
    bench.text(old, vstats_frame(1), 1100);
    assert!(bench.received(dashboard, 1100).is_empty());
    bench
        .engine
        .handle_ended(old, SocketEnd::Closed, bench.at(1200));
    assert!(bench.online(0));
    bench.text(new, vstats_frame(2), 1300);
    assert_eq!(bench.kinds(dashboard, 1300), ["metrics"]);
    assert_eq!(
        bench
            .engine
            .hub
            .get(&bench.ids[0])
            .unwrap()
            .presence
            .agent(),
        Some(new)
    );
}

#[test]
fn the_old_vstats_connection_is_closed_1000_when_replaced() {
    let mut bench = Bench::new(&["a"]);
    let old = bench.vstats_agent(0, 0);
    let new = bench.vstats_upgrade(1000);
    bench.text(
        new,
        &vstats_auth(&bench.ids[0].clone(), &bench.tokens[0].clone()),
        1000,
    );
    assert_eq!(closes(&bench.effects()), [(old, 1000)]);
}

#[test]
fn a_vstats_agents_pings_keep_it_online() {
    let mut bench = Bench::with(&["a"], &["--agent-timeout", "20"], 100);
    let agent = bench.vstats_agent(0, 0);
    for ms in [15_000, 30_000, 45_000] {
        bench
            .engine
            .handle_frame(agent, Inbound::Control, bench.at(ms));
        bench.tick(ms + 1);
    }
    assert!(bench.online(0));
    bench.tick(66_000);
    assert!(!bench.online(0));
}

#[test]
fn a_vstats_message_over_1_mib_closes_1009_naming_the_agent_option() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.vstats_agent(0, 0);
    bench
        .engine
        .handle_fault(agent, Fault::TooLarge, bench.at(10));
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(agent, 1009)]);
    let warned = effects.iter().any(|effect| {
        matches!(effect, Effect::Log { level: Level::Warn, text }
            if text.contains("over 1 MiB") && text.contains("\"enable_offline_storage\": false"))
    });
    assert!(warned, "{effects:?}");
}

// ----- hostile input -----------------------------------------------------------

/// A patch whose `network.interfaces` is `entries` of `entry` each.
fn interfaces_patch(entries: usize, entry: &Value) -> Value {
    json!({"type": "patch", "data": {"elapsed_ms": 1000,
        "network": {"interfaces": vec![entry.clone(); entries]}}})
}

fn hub_sample(bench: &Bench, server: usize) -> String {
    let server = bench.engine.hub.get(&bench.ids[server]).unwrap();
    server.latest_data.as_ref().unwrap().get().to_owned()
}

#[test]
fn a_patch_that_rebuilds_a_sample_past_64_kib_is_malformed_and_the_last_good_stays() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    bench.received(dashboard, 10);
    let good = hub_sample(&bench, 0);
    // 12 KB of `{}` that would rebuild 4096 empty interfaces: 214 KB.
    let patch = interfaces_patch(4096, &json!({}));
    assert!(patch.to_string().len() < 16 * 1024);
    bench.send(agent, patch, 1010);
    assert_eq!(bench.engine.counters.malformed, 1);
    assert_eq!(bench.received(dashboard, 1010), [], "nothing forwarded");
    assert_eq!(hub_sample(&bench, 0), good, "the last good sample stays");
    // The relay no longer holds what the agent holds: patches wait for a
    // full sample, and an agent that goes on patching is closed (1007).
    for ms in 2..11 {
        bench.send(
            agent,
            json!({"type": "patch", "data": {"elapsed_ms": 1000}}),
            ms * 1000,
        );
    }
    assert_eq!(closes(&bench.effects()), [(agent, 1007)]);
    // A new dashboard still gets its snapshot, with the good sample.
    let late = bench.dashboard(20_000);
    let seen = bench.received(late, 20_000);
    let metrics: Vec<_> = seen.iter().filter(|(kind, _)| kind == "metrics").collect();
    assert_eq!(metrics[0].1["metrics"]["hostname"], "pi", "{seen:?}");
}

#[test]
fn a_full_sample_after_a_refused_patch_is_a_base_again() {
    let mut bench = Bench::new(&["a"]);
    let dashboard = bench.dashboard(0);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    bench.send(agent, interfaces_patch(4096, &json!({})), 1010);
    bench.send(agent, full_sample(), 2010);
    bench.received(dashboard, 2010);
    bench.send(
        agent,
        json!({"type": "patch", "data": {"elapsed_ms": 1000, "cpu": {"usage": 9}}}),
        3010,
    );
    let seen = bench.received(dashboard, 3010);
    assert_eq!(seen[0].1["metrics"]["cpu"]["usage"], 9, "{seen:?}");
    assert_eq!(bench.engine.counters.malformed, 1);
}

#[test]
fn patches_cannot_grow_a_sample_past_64_kib() {
    // The probe's attack: the same 4096 interfaces, each patch naming 12
    // of them with 4,000 bytes. Unbounded, 341 patches made 16 MB.
    let mut bench = Bench::with(&["a"], &["--agent-max-rate", "100000"], 100);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    let base = interfaces_patch(12, &json!({"name": "eth"}));
    bench.send(agent, base, 20);
    let mut largest = 0;
    for k in 0..40u64 {
        let name = "x".repeat(4000);
        let entries: Vec<Value> = (0..12).map(|_| json!({"name": name})).collect();
        let mut patch = json!({"type": "patch", "data": {"elapsed_ms": 1000,
            "network": {"interfaces": entries}}});
        // Each patch names a different interface: same length, so merged
        // by position; the first is renamed over and over.
        patch["data"]["network"]["interfaces"][(k % 12) as usize]["name"] =
            json!(format!("{k}{name}"));
        bench.send(agent, patch, 100 + k);
        largest = largest.max(hub_sample(&bench, 0).len());
        if bench.engine.counters.malformed > 0 {
            break;
        }
    }
    assert!(largest <= MAX_SAMPLE_BYTES, "{largest} bytes");
    assert_eq!(bench.engine.counters.malformed, 0, "12 x 4 KB fit");
    // Past the limit: 20 interfaces of 4,000 bytes are 80 KB.
    let long = json!({"name": "y".repeat(4000)});
    bench.send(agent, interfaces_patch(20, &long), 1000);
    assert_eq!(bench.engine.counters.malformed, 1);
    assert!(hub_sample(&bench, 0).len() <= MAX_SAMPLE_BYTES);
}

#[test]
fn a_patch_costs_its_turn_the_sample_it_rebuilds() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    let text = json!({"type": "patch", "data": {"elapsed_ms": 1000}}).to_string();
    let work = bench
        .engine
        .handle_frame(agent, Inbound::Text(&text), bench.at(1010));
    assert_eq!(work, hub_sample(&bench, 0).len());
    assert!(work > text.len());
}

#[test]
fn data_that_is_not_an_object_is_malformed() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    bench.send(agent, full_sample(), 10);
    bench.send(agent, json!({"type": "patch", "data": []}), 1010);
    bench.send(agent, json!({"type": "metrics", "data": []}), 2010);
    bench.send(agent, json!({"type": "patch", "data": "x"}), 3010);
    assert_eq!(bench.engine.counters.malformed, 3);
    // The base is still there for a patch that is an object.
    bench.send(
        agent,
        json!({"type": "patch", "data": {"elapsed_ms": 1000}}),
        4010,
    );
    assert_eq!(bench.engine.counters.malformed, 3);
}

#[test]
fn frames_after_our_close_are_neither_parsed_nor_counted() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.agent(0, 0);
    for i in 0..MALFORMED_LIMIT {
        bench
            .engine
            .handle_frame(agent, Inbound::Text("{not json"), bench.at(u64::from(i)));
    }
    assert_eq!(closes(&bench.effects()), [(agent, 1007)]);
    let (frames_in, malformed) = (
        bench.engine.counters.frames_in,
        bench.engine.counters.malformed,
    );
    for i in 0..1000 {
        bench
            .engine
            .handle_frame(agent, Inbound::Text("{not json"), bench.at(100 + i));
        bench.sample(agent, 1.0, 100 + i);
    }
    assert_eq!(bench.engine.counters.frames_in, frames_in);
    assert_eq!(bench.engine.counters.malformed, malformed);
    assert_eq!(bench.effects(), []);
    // Its close answer still ends it.
    bench
        .engine
        .handle_frame(agent, Inbound::Close(Some(1007)), bench.at(2000));
    bench
        .engine
        .handle_ended(agent, SocketEnd::Closed, bench.at(2000));
    assert!(!bench.online(0));
}

#[test]
fn a_vstats_socket_takes_4_kib_until_admitted_then_1_mib() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.vstats_upgrade(0); // asserts the 4 KiB limit
    let auth = vstats_auth(&bench.ids[0].clone(), &bench.tokens[0].clone());
    bench.text(id, &auth, 10);
    let effects = bench.effects();
    assert!(
        effects.contains(&Effect::SetMessageLimit {
            id,
            max_message: compat::MAX_MESSAGE
        }),
        "{effects:?}"
    );
    // Past 4 KiB before auth: 1009, and no word of local storage.
    let other = bench.vstats_upgrade(20);
    bench
        .engine
        .handle_fault(other, Fault::TooLarge, bench.at(30));
    let effects = bench.effects();
    assert_eq!(closes(&effects), [(other, 1009)]);
    assert!(
        !logs(&effects).iter().any(|l| l.contains("1 MiB")),
        "{effects:?}"
    );
}

#[test]
fn a_second_frame_before_the_auth_answer_closes_1008() {
    let mut bench = Bench::new(&["a"]);
    let id = bench.vstats_upgrade(0);
    // An auth the registry does not know yet: the state file is checked
    // before the answer, and meanwhile nothing more may come.
    bench.text(id, &vstats_auth("not-yet", "token"), 10);
    assert!(
        bench
            .effects()
            .contains(&Effect::ReadRegistry { force: false })
    );
    bench.text(id, r#"{"type":"metrics","metrics":{}}"#, 11);
    assert_eq!(closes(&bench.effects()), [(id, 1008)]);
}

#[test]
fn unauthenticated_vstats_sockets_have_a_budget_per_address_and_in_all() {
    let mut bench = Bench::new(&["a"]);
    let mut waiting: Vec<ConnId> = (0..budget::UNAUTHENTICATED_PER_ADDRESS)
        .map(|_| bench.vstats_upgrade(0))
        .collect();
    // One more from the same address: 503, counted, no upgrade.
    let id = bench.request(upgrade("/compat/ws/agent", None), 0);
    let effects = bench.effects();
    assert_eq!(response(&effects, id), (503, After::Close));
    assert_eq!(bench.engine.counters.refused_connections, 1);
    // One admitted gives its place back, and so does one that ends.
    let auth = vstats_auth(&bench.ids[0].clone(), &bench.tokens[0].clone());
    bench.text(waiting[0], &auth, 10);
    waiting.push(bench.vstats_upgrade(20));
    let gone = waiting.pop().unwrap();
    bench
        .engine
        .handle_ended(gone, SocketEnd::Closed, bench.at(30));
    waiting.push(bench.vstats_upgrade(40));
    assert_eq!(
        bench.engine.unauthenticated.held(),
        budget::UNAUTHENTICATED_PER_ADDRESS as usize
    );
    // The 10 s auth deadline and the close timeout end the rest.
    bench.tick(10_100);
    bench.tick(15_200);
    assert_eq!(bench.engine.unauthenticated.held(), 0);
    // Our agents are not counted: they show their token in the head.
    for _ in 0..50 {
        bench.agent(0, 16_000);
    }
    assert_eq!(bench.engine.unauthenticated.held(), 0);
}

#[test]
fn a_vstats_sample_past_the_limits_is_malformed_before_mapping() {
    let mut bench = Bench::new(&["a"]);
    let agent = bench.vstats_agent(0, 0);
    let interfaces: Vec<Value> = (0..3600)
        .map(|i| json!({"name": format!("{i:0>230}"), "rx_bytes": i, "tx_bytes": i}))
        .collect();
    let frame = json!({"type": "metrics", "metrics": {"hostname": "h",
        "network": {"interfaces": interfaces}}})
    .to_string();
    assert!(frame.len() > compat::MAX_METRICS_TEXT);
    let work = bench
        .engine
        .handle_frame(agent, Inbound::Text(&frame), bench.at(10));
    assert_eq!((work, bench.engine.counters.malformed), (0, 1));
    // Within the text limit but mapped past 64 KiB: malformed too.
    let interfaces: Vec<Value> = (0..1200)
        .map(|i| json!({"name": format!("{i:0>40}"), "rx_bytes": i}))
        .collect();
    let frame =
        json!({"type": "metrics", "metrics": {"network": {"interfaces": interfaces}}}).to_string();
    assert!(frame.len() < compat::MAX_METRICS_TEXT);
    bench
        .engine
        .handle_frame(agent, Inbound::Text(&frame), bench.at(20));
    assert_eq!(bench.engine.counters.malformed, 2);
}

#[test]
fn metrics_needs_the_viewer_token_when_one_is_set() {
    let mut bench = Bench::with(&["a"], &["--viewer-token", "secret"], 100);
    assert_eq!(bench.get("/metrics", 0).1, 401);
    let mut bearer = get("/metrics");
    bearer.authorization = Some("Bearer secret".into());
    let id = bench.request(bearer, 0);
    assert_eq!(response(&bench.effects(), id), (200, After::Close));
    // Without a viewer token it stays open, as before.
    let mut open = Bench::new(&["a"]);
    assert_eq!(open.get("/metrics", 0).1, 200);
}

#[test]
fn without_a_viewer_token_only_ip_localhost_and_allowed_hosts_read_the_fleet() {
    let mut bench = Bench::new(&["a"]);
    let token = bench.tokens[0].clone();
    let at = |host: &str, head: Head| Head {
        host: Some(host.into()),
        ..head
    };
    for host in [
        "evil.example",
        "evil.example:3001",
        "relay.example.evil.example",
    ] {
        for head in [
            get("/"),
            get("/api/servers"),
            get("/metrics"),
            get(&format!("/api/servers/{}/history", bench.ids[0])),
            upgrade("/ws", None),
        ] {
            let path = head.path.clone();
            let id = bench.request(at(host, head), 0);
            let effects = bench.effects();
            assert_eq!(response(&effects, id), (403, After::Close), "{host} {path}");
        }
    }
    // The page says how to allow the name.
    let id = bench.request(at("evil.example:3001", get("/")), 0);
    let effects = bench.effects();
    let Some(Effect::Respond { bytes, .. }) =
        effects.iter().find(|e| matches!(e, Effect::Respond { .. }))
    else {
        panic!("{effects:?}");
    };
    assert!(
        String::from_utf8_lossy(bytes).contains("--allowed-host evil.example"),
        "{id}"
    );
    for host in [
        "127.0.0.1:3001",
        "[::1]:3001",
        "localhost:3001",
        "relay.example",
    ] {
        let id = bench.request(at(host, upgrade("/ws", None)), 0);
        assert_eq!(
            response(&bench.effects(), id),
            (101, After::Dashboard),
            "{host}"
        );
        let id = bench.request(at(host, get("/api/servers")), 0);
        assert_eq!(
            response(&bench.effects(), id),
            (200, After::Close),
            "{host}"
        );
    }
    // Agents, /healthz and release files need no such name.
    let id = bench.request(at("evil.example", upgrade("/ws/agent", Some(&token))), 0);
    assert_eq!(response(&bench.effects(), id), (101, After::Agent));
    let id = bench.request(at("evil.example", get("/healthz")), 0);
    assert_eq!(response(&bench.effects(), id), (200, After::Close));
    let id = bench.request(at("evil.example", upgrade("/compat/ws/agent", None)), 0);
    assert_eq!(response(&bench.effects(), id), (101, After::CompatAgent));
    // With a viewer token, the token guards the fleet, whatever the name.
    let mut guarded = Bench::with(&["a"], &["--viewer-token", "secret"], 100);
    let id = guarded.request(at("evil.example", upgrade("/ws?token=secret", None)), 0);
    assert_eq!(response(&guarded.effects(), id), (101, After::Dashboard));
}

// ----- the fake clock -------------------------------------------------------

#[test]
fn a_sample_after_a_history_step_boundary_fills_the_next_step() {
    // The fake wall clock starts one second into a 10 s step of the hour
    // tier: the next step begins 9 s later.
    let mut bench = Bench::new(&["pi"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 10.0, 1_000);
    bench.sample(agent, 30.0, 9_500);
    bench.effects();
    let path = format!("/api/servers/{}/history", bench.ids[0]);
    let (status, hour) = response_json(&mut bench, &path, 9_600);
    assert_eq!(status, 200);
    let cpu = hour["series"]["cpu"].as_array().unwrap();
    assert_eq!((&cpu[358], &cpu[359]), (&json!(10), &json!(30)));
    // Stamped with the fake wall clock: 2027-01-15 08:00:10.5 UTC, in
    // whole seconds.
    assert_eq!(hour["last_seen"], "2027-01-15T08:00:10Z");
}

#[test]
fn a_threshold_held_for_five_minutes_of_the_fake_clock_fires_once() {
    let mut bench = Bench::with(&["pi"], &["--alert", "cpu>=95 for 5m"], 100);
    let agent = bench.agent(0, 0);
    let mut fired = Vec::new();
    for second in (0..=330).step_by(10) {
        bench.sample(agent, 97.0, second * 1_000);
        fired.extend(notices(&bench.effects()).into_iter().map(|n| (second, n.0)));
    }
    assert_eq!(fired, [(300, "threshold")]);
}

// ----- timers ---------------------------------------------------------------

#[test]
fn an_idle_relay_sleeps_until_its_next_chore_not_a_fixed_tick() {
    let mut bench = Bench::new(&["pi"]);
    let agent = bench.agent(0, 0);
    bench.sample(agent, 5.0, 0);
    bench.effects();
    // The registry check, every 2 s, is the soonest; the agent's ping is
    // 30 s away. (A fixed tick woke the loop every 500 ms.)
    assert_eq!(
        bench.engine.poll_timeout(bench.at(0)),
        Duration::from_secs(2)
    );
    bench.tick(2_000);
    assert_eq!(
        bench.engine.poll_timeout(bench.at(2_000)),
        Duration::from_secs(2)
    );
}

#[test]
fn timers_spread_over_a_second_are_served_by_one_wake_up() {
    let mut bench = Bench::new(&["a", "b"]);
    let (a, b) = (bench.agent(0, 100), bench.agent(1, 900));
    bench.effects();
    bench.tick(30_000);
    // Pings due at 30.1 s and 30.9 s: one wake-up, on the grid, for both.
    assert_eq!(
        bench.engine.poll_timeout(bench.at(30_000)),
        Duration::from_secs(1)
    );
    let pings: Vec<ConnId> = bench
        .tick(31_000)
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Ping { id } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(pings, [a, b]);
}

#[test]
fn a_close_queued_brings_the_connections_deadline_forward() {
    let mut bench = Bench::new(&["pi"]);
    let dashboard = bench.dashboard(0);
    bench.received(dashboard, 0);
    bench
        .engine
        .handle_fault(dashboard, Fault::NotUtf8, bench.at(1_000));
    bench.effects();
    // Its reminder was for its ping at 30 s; the close answer is due at
    // 6 s, and the socket is dropped then, not at the silence limit.
    let dropped = |effects: &[Effect]| {
        effects
            .iter()
            .any(|e| matches!(e, Effect::Drop { id, .. } if *id == dashboard))
    };
    assert!(!dropped(&bench.tick(5_999)));
    assert!(dropped(&bench.tick(6_000)));
}

#[test]
fn a_chore_done_late_keeps_its_schedule() {
    let mut bench = Bench::new(&["pi"]);
    let reads = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::ReadRegistry { .. }))
            .count()
    };
    // The check due at 2 s runs at 2.3 s; the next is still due at 4 s,
    // not at 4.3 s (which the grid would make 5 s: every 3 s).
    assert_eq!(reads(&bench.tick(2_300)), 1);
    assert_eq!(
        bench.engine.poll_timeout(bench.at(2_300)),
        Duration::from_millis(1_700)
    );
    assert_eq!(reads(&bench.tick(3_999)), 0);
    assert_eq!(reads(&bench.tick(4_000)), 1);
}

#[test]
fn connections_opened_and_closed_fast_leave_no_pile_of_reminders() {
    let mut bench = Bench::new(&["pi"]);
    // Each accepted connection gets a reminder for its head deadline, 10 s
    // away; one that closes at once leaves it stale.
    for ms in 0..20_000 {
        let id = bench.request(get("/healthz"), ms / 10);
        bench.engine.handle_responded(id, bench.at(ms / 10));
        bench.effects();
    }
    assert!(
        bench.engine.timers.len() <= STALE_REMINDERS_SLACK + 2,
        "{} reminders for no connection and 1 server",
        bench.engine.timers.len()
    );
}
