//! The real relay process with real agents, scripted agents and dashboard
//! clients over loopback, plain and TLS.

use crate::common;

use common::relay::{Relay, Seen, is};
use common::{Agent, TestCa};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);

fn real_agent(relay: &Relay, token: &str, extra: &[&str]) -> common::Process {
    let url = relay.url();
    let mut args = vec!["--server", url.as_str(), "--token", token];
    args.extend_from_slice(extra);
    Agent::spawn(&args)
}

fn sample(hostname: &str) -> Value {
    json!({"hostname": hostname, "cpu": {"usage": 12.5, "cores": 4}, "memory": {"total": 1024, "used": 512}})
}

#[test]
fn snapshot_then_live_metrics_to_several_dashboards() {
    let relay = Relay::start(&[]);
    let (pi, pi_token) = relay.add_server("pi", "上海");
    let (router, _) = relay.add_server("router", "");
    let _agent = real_agent(&relay, &pi_token, &[]);
    let mut first = relay.dashboard();
    first.wait_for(SOON, "pi online", |f| {
        is(f, "status", &pi) && f["data"]["online"] == true
    });
    first.wait_for(SOON, "pi metrics", |f| is(f, "metrics", &pi));

    // A dashboard arriving now gets the whole state first, in order.
    let mut second = relay.dashboard();
    let mut snapshot = Vec::new();
    while snapshot.len() < 7 {
        match second.next(SOON) {
            Some(Seen::Frame(frame)) => snapshot.push(frame),
            other => panic!("snapshot cut short: {other:?}"),
        }
    }
    assert_eq!(snapshot[0]["type"], "hello");
    assert_eq!(snapshot[0]["data"]["servers"], 2);
    assert_eq!(
        snapshot[1]["data"],
        json!({"id": pi, "name": "pi", "location": "上海"})
    );
    assert!(is(&snapshot[2], "status", &pi) && snapshot[2]["data"]["online"] == true);
    // The sparklines of the pi's last hour: its samples so far.
    assert_eq!(snapshot[3]["type"], "history");
    assert_eq!(snapshot[3]["data"]["server_id"], *pi);
    let cpu = snapshot[3]["data"]["series"]["cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), 120);
    assert!(cpu.iter().any(Value::is_number), "{cpu:?}");
    assert!(is(&snapshot[4], "metrics", &pi));
    assert!(is(&snapshot[5], "server_added", &router));
    assert!(is(&snapshot[6], "status", &router) && snapshot[6]["data"]["online"] == false);

    // Live samples reach both, with the agent's fields and the relay's
    // clock: whole samples, though the agent sends patches after its first.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for dashboard in [&mut first, &mut second] {
        for _ in 0..2 {
            let frame = dashboard.wait_for(SOON, "live metrics", |f| is(f, "metrics", &pi));
            let sample = &frame["data"]["metrics"];
            assert_eq!(sample["hostname"], hostname.trim());
            assert!(!sample["os"]["kernel"].as_str().unwrap().is_empty());
            assert!(sample["cpu"]["cores"].as_u64().unwrap() > 0);
            let memory = &sample["memory"];
            let total = memory["total"].as_u64().unwrap();
            assert!(total > 0);
            assert_eq!(
                memory["used"].as_u64().unwrap(),
                total - memory["available"].as_u64().unwrap()
            );
            let counted_rx: u64 = sample["network"]["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["counted"] == true)
                .map(|i| i["rx_total"].as_u64().unwrap())
                .sum();
            assert_eq!(sample["network"]["rx_total"], counted_rx, "{sample}");
            assert!(frame["timestamp"].as_str().unwrap().ends_with('Z'));
        }
    }

    let (status, body) = relay.get("/api/servers");
    assert_eq!(status, 200);
    let servers: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(servers[0]["id"], pi.as_str());
    assert_eq!(servers[0]["online"], true);
    assert!(servers[0]["metrics"]["cpu"]["cores"].as_u64().unwrap() > 0);
    assert_eq!(servers[1]["metrics"], Value::Null);
    assert!(!body.contains(&pi_token));
}

#[test]
fn status_goes_offline_on_disconnect_and_on_silence() {
    let relay = Relay::start(&["--agent-timeout", "3"]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    let agent = real_agent(&relay, &token, &[]);
    let online = |f: &Value| is(f, "status", &id) && f["data"]["online"] == true;
    let offline = |f: &Value| is(f, "status", &id) && f["data"]["online"] == false;
    dashboard.wait_for(SOON, "online", online);

    // Frozen: the socket stays open, the server goes offline after 3 s.
    agent.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    dashboard.wait_for(SOON, "offline after the agent timeout", offline);
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "offline after only {waited:?}"
    );
    agent.signal(Signal::SIGCONT);
    dashboard.wait_for(SOON, "online again", online);

    // Gone: offline at once.
    drop(agent);
    let killed = Instant::now();
    dashboard.wait_for(SOON, "offline on disconnect", offline);
    assert!(killed.elapsed() < Duration::from_secs(2));
}

#[test]
fn servers_added_removed_and_rotated_while_running() {
    let relay = Relay::start(&[]);
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "hello", |f| f["type"] == "hello");

    let (id, token) = relay.add_server("new-server", "上海");
    let added = dashboard.wait_for(SOON, "server_added", |f| is(f, "server_added", &id));
    assert_eq!(added["data"]["location"], "上海");

    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(sample("h"));
    dashboard.wait_for(SOON, "metrics", |f| is(f, "metrics", &id));

    // A rotated token closes the agent with 1008; the old token is refused.
    let output = relay.cli(&["rotate-token", &id, "--json"]);
    assert!(output.status.success());
    let rotated: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(agent.wait_for_close(SOON), Some(1008));
    assert_eq!(
        relay
            .connect(
                "/ws/agent",
                &[("authorization", &format!("Bearer {token}"))]
            )
            .err(),
        Some("401".to_owned())
    );
    let mut agent = relay.fake_agent(rotated["token"].as_str().unwrap());

    // Removal: server_removed to dashboards, 1008 to its agent.
    assert!(relay.cli(&["remove", &id]).status.success());
    dashboard.wait_for(SOON, "server_removed", |f| is(f, "server_removed", &id));
    assert_eq!(agent.wait_for_close(SOON), Some(1008));
}

#[test]
fn a_rotated_token_takes_the_server_offline_at_once() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(sample("pi"));
    dashboard.wait_for(SOON, "online", |f| {
        is(f, "status", &id) && f["data"]["online"] == true
    });
    assert!(relay.cli(&["rotate-token", &id]).status.success());
    // Within the relay's 2 s look at the state file, not the 90 s agent
    // timeout.
    dashboard.wait_for(SOON, "offline", |f| {
        is(f, "status", &id) && f["data"]["online"] == false
    });
    assert_eq!(agent.wait_for_close(SOON), Some(1008));
    let (_, servers) = relay.get("/api/servers");
    let servers: Value = serde_json::from_str(&servers).unwrap();
    let server = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(server["online"], false, "{server}");
}

#[test]
fn refusals_401_403_and_bad_requests() {
    let relay = Relay::start(&["--allow-origin", "https://grafana.lan"]);
    let (_, token) = relay.add_server("pi", "");
    let err = relay.connect("/ws/agent?token=wrong", &[]).err();
    assert_eq!(err.as_deref(), Some("401"));
    assert_eq!(
        relay.connect("/ws/agent", &[]).err().as_deref(),
        Some("401")
    );
    assert!(
        relay
            .connect(&format!("/ws/agent?token={token}"), &[])
            .is_ok()
    );

    let foreign = [("origin", "https://evil.example")];
    assert_eq!(relay.connect("/ws", &foreign).err().as_deref(), Some("403"));
    let own = format!("http://127.0.0.1:{}", relay.addr.port());
    assert!(relay.connect("/ws", &[("origin", own.as_str())]).is_ok());
    assert!(
        relay
            .connect("/ws", &[("origin", "https://grafana.lan")])
            .is_ok()
    );

    assert_eq!(relay.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(relay.get("/nope").0, 404);
    assert_eq!(
        relay
            .http("POST /api/servers HTTP/1.1\r\nHost: x\r\n\r\n")
            .0,
        405
    );
    assert_eq!(relay.http("\x16\x03\x01garbage\r\n\r\n").0, 400);
    let huge = format!("GET / HTTP/1.1\r\nX-Fill: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(relay.http(&huge).0, 431);
}

#[test]
fn viewer_token_guards_dashboards() {
    let relay = Relay::start(&["--viewer-token", "look"]);
    assert_eq!(relay.connect("/ws", &[]).err().as_deref(), Some("401"));
    assert_eq!(relay.get("/api/servers").0, 401);
    assert!(relay.connect("/ws?token=look", &[]).is_ok());
    assert_eq!(relay.get("/api/servers?token=look").0, 200);
}

#[test]
fn oversized_and_malformed_frames_close_the_agent() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();

    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(json!({"hostname": "x".repeat(70 * 1024)}));
    assert_eq!(agent.wait_for_close(SOON), Some(1009));

    let mut agent = relay.fake_agent(&token);
    // Dropped and counted, but the connection lives: a good frame follows.
    agent.send("not json".into());
    agent.send(json!({"type": "metrics", "data": {"cpu": {"usage": "high"}}}).to_string());
    agent.send(json!({"type": "from_the_future", "data": {}}).to_string());
    agent.send_metrics(sample("after-garbage"));
    let frame = dashboard.wait_for(SOON, "the good sample", |f| is(f, "metrics", &id));
    assert_eq!(frame["data"]["metrics"]["hostname"], "after-garbage");
    for _ in 0..10 {
        agent.send("{garbage".into());
    }
    assert_eq!(agent.wait_for_close(SOON), Some(1007));
}

#[test]
fn a_newer_connection_replaces_the_older_and_the_server_stays_online() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    let mut old = relay.fake_agent(&token);
    old.send_metrics(sample("old"));
    dashboard.wait_for(SOON, "online", |f| {
        is(f, "status", &id) && f["data"]["online"] == true
    });

    let mut new = relay.fake_agent(&token);
    assert_eq!(old.wait_for_close(SOON), Some(1000));
    new.send_metrics(sample("new"));
    let frame = dashboard.wait_for(SOON, "the new agent's sample", |f| {
        is(f, "metrics", &id) && f["data"]["metrics"]["hostname"] == "new"
    });
    assert_eq!(frame["data"]["server_id"], id.as_str());
    // No offline in between.
    let (_, body) = relay.get("/api/servers");
    assert!(body.contains(r#""online":true"#), "{body}");
}

#[test]
fn a_dashboard_that_never_reads_stalls_no_one_and_stays_bounded() {
    // Rounds as fast as the relay forwards them: past the default
    // 20 samples a second per agent.
    let relay = Relay::start(&["--agent-max-rate", "100000"]);
    let agents: Vec<_> = (0..5)
        .map(|i| relay.add_server(&format!("s{i}"), ""))
        .collect();
    let mut clients: Vec<_> = agents
        .iter()
        .map(|(_, token)| relay.fake_agent(token))
        .collect();
    // Connected, then never read from again.
    let _stuck = relay.dashboard();
    let mut live = relay.dashboard();
    let baseline = relay.rss_kib();

    // 8 KiB, in strings within the sample limit (4096 bytes each).
    let padding = vec!["p".repeat(4000); 2];
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send_metrics(json!({"hostname": format!("s{i}"), "seq": sent, "pad": padding}));
        }
        // The live dashboard gets this round's samples promptly.
        live.wait_for(Duration::from_secs(2), "this round's sample", |f| {
            f["type"] == "metrics"
                && f["data"]["metrics"]["hostname"] == "s4"
                && f["data"]["metrics"]["seq"] == sent
        });
        sent += 1;
    }
    let grown = relay.rss_kib().saturating_sub(baseline);
    // 5 servers x 8 KiB samples sent hundreds of times: without
    // conflation the stuck dashboard would hold tens of megabytes.
    assert!(sent > 100, "only {sent} rounds");
    assert!(grown < 8 * 1024, "relay grew by {grown} KiB");
}

#[test]
fn restart_keeps_servers_and_tokens_and_sigterm_says_goodbye() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "hello", |f| f["type"] == "hello");
    let relay = relay.restart(&[]);
    assert_eq!(dashboard.wait_for_close(SOON), Some(1001));

    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(sample("back"));
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "metrics after restart", |f| is(f, "metrics", &id));
}

#[test]
fn a_corrupt_state_file_on_reload_keeps_the_registry() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    std::fs::write(&relay.state, "{ this is not json").unwrap();
    relay.process.signal(Signal::SIGHUP);
    relay.process.wait_for_log(SOON, "keeping the registry");
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(sample("still-here"));
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "metrics", |f| is(f, "metrics", &id));
}

#[test]
fn a_corrupt_state_file_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, "[1, 2").unwrap();
    let output = common::relay_command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("state.json"), "{stderr}");
    let wrong = common::relay_command().arg("--listen").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}

#[test]
fn tls_end_to_end_with_a_private_ca() {
    let ca = TestCa::new();
    let relay = Relay::start_tls(&ca);
    let (id, token) = relay.add_server("pi", "");
    let _agent = real_agent(&relay, &token, &["--ca-file", ca.ca_pem.to_str().unwrap()]);
    let mut dashboard = relay.dashboard();
    let frame = dashboard.wait_for(SOON, "metrics over TLS", |f| is(f, "metrics", &id));
    assert!(frame["data"]["metrics"]["cpu"]["cores"].as_u64().unwrap() > 0);
}

#[test]
fn a_request_head_must_arrive_within_10_seconds() {
    use std::io::{Read, Write};
    let relay = Relay::start(&[]);
    let mut tcp = std::net::TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow")
        .unwrap();
    let opened = Instant::now();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    let held = opened.elapsed();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{rest}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&held),
        "{held:?}"
    );
}

#[test]
fn sighup_reloads_the_certificate() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let relay = Relay::start_tls(&old_ca);
    assert!(relay.connect("/ws", &[]).is_ok());
    // Same file names, new contents: the operator renewed the certificate.
    std::fs::copy(&new_ca.cert_pem, &old_ca.cert_pem).unwrap();
    std::fs::copy(&new_ca.key_pem, &old_ca.key_pem).unwrap();
    relay.process.signal(Signal::SIGHUP);
    relay.process.wait_for_log(SOON, "certificate reloaded");
    let err = relay.connect("/ws", &[]).err().unwrap_or_default();
    // The old CA no longer vouches for what the relay presents.
    assert!(err.contains("invalid peer certificate"), "{err}");
    let renewed = relay.with_ca(&new_ca.ca_pem);
    assert!(renewed.connect("/ws", &[]).is_ok());
}

#[test]
fn a_dashboard_that_cannot_take_the_events_is_closed_with_1013() {
    // 150 samples at once: past the default 20 a second per agent.
    let relay = Relay::start(&["--agent-max-rate", "100000"]);
    let (_, token) = relay.add_server("flood", "");
    let mut stuck = relay.dashboard();
    stuck.wait_for(SOON, "hello", |f| f["type"] == "hello");
    let mut live = relay.dashboard();
    // The reader that keeps up gets every event and stays.
    let keeping_up = std::thread::spawn(move || {
        live.wait_for(Duration::from_secs(60), "the last server_added", |f| {
            f["type"] == "server_added" && f["data"]["name"] == "bulk-9999"
        });
    });
    // Fill the stuck reader's socket buffers with large samples (conflated
    // in the relay, so they cost it nothing)...
    let mut agent = relay.fake_agent(&token);
    // 60 KiB, in strings within the sample limit (4096 bytes each).
    let padding = vec!["p".repeat(4000); 15];
    for seq in 0..150 {
        agent.send_metrics(json!({"hostname": "flood", "seq": seq, "pad": padding}));
    }
    // ...then bring thousands of events at once: a registry of 10,000 more
    // servers means 10,000 server_added, over 1 MiB.
    vstats::relay::update_registry(&relay.state, |registry| {
        for i in 0..10_000 {
            registry.add(&format!("bulk-{i}"), "somewhere far away")?;
        }
        Ok(())
    })
    .unwrap();
    relay
        .process
        .wait_for_log(Duration::from_secs(20), "(1013)");
    assert_eq!(stuck.wait_for_close(Duration::from_secs(30)), Some(1013));
    keeping_up.join().unwrap();
}

#[test]
fn a_state_file_missing_for_a_moment_keeps_servers_and_agents() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(sample("before"));
    dashboard.wait_for(SOON, "online", |f| {
        is(f, "status", &id) && f["data"]["online"] == true
    });

    // An editor's save or a restore: the file is gone for a while, longer
    // than the relay's 2 s change poll, and a SIGHUP comes meanwhile.
    let away = relay.dir.path().join("away.json");
    std::fs::rename(&relay.state, &away).unwrap();
    relay
        .process
        .wait_for_log(SOON, "missing; keeping the registry");
    std::thread::sleep(Duration::from_millis(2500));
    relay.process.signal(Signal::SIGHUP);
    relay
        .process
        .wait_for_log(SOON, "SIGHUP: reloading the registry");
    std::thread::sleep(Duration::from_millis(200));

    // The agent is still connected and its server registered and online.
    agent.send_metrics(sample("while-away"));
    let frame = dashboard.wait_for(SOON, "the sample sent while away", |f| {
        is(f, "server_removed", &id)
            || (is(f, "metrics", &id) && f["data"]["metrics"]["hostname"] == "while-away")
    });
    assert_eq!(frame["type"], "metrics", "{frame}");
    let (status, body) = relay.get("/api/servers");
    assert_eq!(status, 200);
    let servers: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(servers[0]["id"], id.as_str());
    assert_eq!(servers[0]["online"], true, "{body}");
    let log = relay.process.log();
    assert_eq!(
        log.matches("missing; keeping").count(),
        2,
        "one warning for the poll, one for the SIGHUP:\n{log}"
    );
    assert!(!log.contains("removed"), "{log}");

    // Back again: the relay follows CLI changes as before.
    std::fs::rename(&away, &relay.state).unwrap();
    let (nas, _) = relay.add_server("nas", "");
    dashboard.wait_for(SOON, "server_added", |f| is(f, "server_added", &nas));
    assert!(relay.cli(&["remove", &id]).status.success());
    dashboard.wait_for(SOON, "server_removed", |f| is(f, "server_removed", &id));
    assert_eq!(agent.wait_for_close(SOON), Some(1008));
}

#[test]
fn an_agent_connecting_right_after_server_add_is_admitted() {
    let relay = Relay::start(&[]);
    let mut dashboard = relay.dashboard();
    dashboard.wait_for(SOON, "hello", |f| f["type"] == "hello");
    // Several rounds: each could slip through by luck if the 2 s poll
    // happened to run between the add and the connect.
    for round in 0..3 {
        let name = format!("fresh-{round}");
        let output = relay.cli(&["add", "--name", &name, "--json"]);
        assert!(output.status.success(), "{output:?}");
        let added: Value = serde_json::from_slice(&output.stdout).unwrap();
        let (id, token) = (
            added["id"].as_str().unwrap(),
            added["token"].as_str().unwrap(),
        );
        let bearer = format!("Bearer {token}");
        let mut agent = relay
            .connect("/ws/agent", &[("authorization", &bearer)])
            .unwrap_or_else(|e| panic!("round {round}: the new token was refused ({e})"));
        agent.send_metrics(sample(&name));
        dashboard.wait_for(SOON, "the new server's sample", |f| is(f, "metrics", id));
    }
    // Bad tokens are still refused.
    let refused = relay.connect("/ws/agent?token=nope", &[]).err();
    assert_eq!(refused.as_deref(), Some("401"));
}

#[test]
fn a_state_path_that_is_a_symlink_is_followed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let link = dir.path().join("state.json");
    std::os::unix::fs::symlink("real/state.json", &link).unwrap();
    let relay = Relay::start_with_state(dir, link.clone(), &[]);
    // add_server waits for the relay to notice each change through the link.
    let (pi, pi_token) = relay.add_server("pi", "");
    let (nas, _) = relay.add_server("nas", "");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mut agent = relay.fake_agent(&pi_token);
    assert!(relay.cli(&["remove", &pi]).status.success());
    assert_eq!(agent.wait_for_close(SOON), Some(1008));
    let (_, body) = relay.get("/api/servers");
    assert!(body.contains(&nas) && !body.contains(&pi), "{body}");
}

#[test]
fn a_lean_agent_is_seen_whole_by_dashboards_and_the_api() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("lean", "");
    let mut dashboard = relay.dashboard();
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(json!({
        "hostname": "lean-host",
        "memory": {"total": 1000, "used": 500, "available": 500, "usage_percent": 50.0},
        "network": {"rx": 0, "tx": 0, "rx_total": 10, "tx_total": 0, "interfaces": [
            {"name": "eth0", "counted": true, "rx": 0, "tx": 0, "rx_total": 10, "tx_total": 0}]}
    }));
    dashboard.wait_for(SOON, "the full sample", |f| is(f, "metrics", &id));
    agent.send(
        json!({"type": "patch", "data": {"elapsed_ms": 1000, "memory": {"available": 250},
            "network": {"interfaces": [{"rx_bytes": 4096}]}}})
        .to_string(),
    );
    let frame = dashboard.wait_for(SOON, "the patched sample", |f| {
        is(f, "metrics", &id) && f["data"]["metrics"]["memory"]["used"] == 750
    });
    let sample = &frame["data"]["metrics"];
    assert_eq!(sample["hostname"], "lean-host");
    assert_eq!(sample["network"]["rx"], 4096.0);
    assert_eq!(sample["network"]["rx_total"], 4106);
    let (_, servers) = relay.get("/api/servers");
    let servers: Value = serde_json::from_str(&servers).unwrap();
    assert_eq!(servers[0]["metrics"]["memory"]["usage_percent"], 75.0);
}

#[test]
fn the_page_is_sent_gzipped_to_a_client_that_accepts_it() {
    use std::io::Read;
    let relay = Relay::start(&[]);
    let request = |encoding: &str| {
        relay.http_raw(&format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{encoding}Connection: close\r\n\r\n"
        ))
    };
    let (plain_head, plain) = request("");
    assert!(
        !plain_head.to_lowercase().contains("content-encoding"),
        "{plain_head}"
    );
    assert!(plain.starts_with(b"<!doctype html>"), "{plain_head}");
    let (head, gzipped) = request("Accept-Encoding: gzip, deflate, br\r\n");
    assert!(head.contains("\r\nContent-Encoding: gzip"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", gzipped.len())),
        "{head}"
    );
    assert!(head.contains("\r\nVary: Accept-Encoding"), "{head}");
    assert!(
        gzipped.len() * 2 < plain.len(),
        "{} of {} bytes",
        gzipped.len(),
        plain.len()
    );
    // The page's budget: 16 KiB on the wire, so that a dashboard opens at
    // once on a slow uplink; a feature that needs more must pay for it.
    assert!(
        gzipped.len() <= 16 * 1024,
        "the page is {} bytes gzipped, over its 16 KiB budget",
        gzipped.len()
    );
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, plain);
}
