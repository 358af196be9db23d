//! The real agent binary with `--protocol vstats` against a stand-in vStats
//! server on loopback.
//!
//! The stand-in follows their server's agent handler
//! (zsai001/vstats `server-go/cmd/server/websocket.go`, 9b1f52b): it takes
//! any upgrade on `/ws/agent`; an `auth` frame with a server id and a token
//! gets `{"type":"auth","status":"ok"}` when both match a server, else
//! `Invalid token` (known id) or `Server not found`, and the connection
//! stays open either way; a `metrics` frame before a successful `auth` gets
//! `{"type":"error","message":"Not authenticated"}`. It also checks each
//! sample as Go's `encoding/json` would decode it into their
//! `SystemMetrics`: a `uint64` field holding a fraction or a sign would
//! make their server drop the whole frame.

use crate::common;

/// Either build refuses a half-given vStats configuration with exit code 2
/// and a message; a build without `vstats-compat` refuses the protocol.
#[test]
fn vstats_flags_given_wrong_exit_2() {
    for (args, expected) in [
        (
            &["--server-id", "srv-1"][..],
            "--server-id is for --protocol vstats",
        ),
        (
            &["--protocol", "vstats"],
            if cfg!(feature = "vstats-compat") {
                "needs --server-id"
            } else {
                "feature vstats-compat"
            },
        ),
    ] {
        let output = common::agent_command()
            .args(["--server", "http://127.0.0.1:9", "--token", "t"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The agent with `--protocol vstats`: in builds with `vstats-compat`,
/// as the release builds are (`cargo test --features vstats-compat`).
#[cfg(feature = "vstats-compat")]
mod stand_in {

    use super::common::{self, Agent, Process};
    use serde_json::{Value, json};
    use std::collections::VecDeque;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};
    use tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tungstenite::{Message, WebSocket};

    const SERVER_ID: &str = "srv-pi4";
    const TOKEN: &str = "agent-token-5f2c9d";
    const SOON: Duration = Duration::from_secs(5);
    /// A captured x86 server: its counters and sizes make the values exact.
    const TREE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/x86_64-bench-8c-4i-4d"
    );

    #[derive(Debug)]
    enum Event {
        /// A TCP connection arrived.
        Accepted,
        /// The upgrade request: its target and `Authorization` header.
        Request {
            uri: String,
            authorization: Option<String>,
        },
        /// A text frame, parsed; `authenticated` as the server stood when it
        /// came.
        Frame { frame: Value, authenticated: bool },
    }

    struct StandIn {
        port: u16,
        events: Receiver<(Instant, Event)>,
        /// Frames to send once an agent is authenticated.
        orders: Arc<Mutex<VecDeque<String>>>,
    }

    impl StandIn {
        /// A server that knows one server id, with this token.
        fn start(token: &'static str) -> StandIn {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (sender, events) = channel();
            let orders = Arc::new(Mutex::new(VecDeque::new()));
            let shared = orders.clone();
            thread::spawn(move || {
                for tcp in listener.incoming().flatten() {
                    let (sender, orders) = (sender.clone(), shared.clone());
                    thread::spawn(move || serve(tcp, token, &sender, &orders));
                }
            });
            StandIn {
                port,
                events,
                orders,
            }
        }

        /// What an operator puts in their agent's `dashboard_url`.
        fn dashboard_url(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        fn agent(&self, token: &str, extra: &[&str]) -> Process {
            let url = self.dashboard_url();
            let procfs = format!("{TREE}/proc");
            let sysfs = format!("{TREE}/sys");
            let mut args = vec![
                "--protocol",
                "vstats",
                "--server",
                &url,
                "--server-id",
                SERVER_ID,
                "--token",
                token,
                "--interval",
                "0.5",
                "--path-procfs",
                &procfs,
                "--path-sysfs",
                &sysfs,
                "--path-rootfs",
                TREE,
            ];
            args.extend_from_slice(extra);
            Agent::spawn(&args)
        }

        fn next(&self, what: &str, wanted: impl Fn(&Event) -> bool) -> (Instant, Event) {
            let deadline = Instant::now() + SOON;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.events.recv_timeout(left) {
                    Ok((at, event)) if wanted(&event) => return (at, event),
                    Ok(_) => {}
                    Err(_) => panic!("no {what} within {SOON:?}"),
                }
            }
        }

        /// The next frame of this `type`, when it came.
        fn frame(&self, kind: &str) -> (Instant, Value, bool) {
            match self.next(
                kind,
                |e| matches!(e, Event::Frame { frame, .. } if frame["type"] == kind),
            ) {
                (
                    at,
                    Event::Frame {
                        frame,
                        authenticated,
                    },
                ) => (at, frame, authenticated),
                _ => unreachable!(),
            }
        }

        /// Every event within `window`.
        fn collect(&self, window: Duration) -> Vec<Event> {
            let deadline = Instant::now() + window;
            let mut seen = Vec::new();
            while let Ok((_, event)) = self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                seen.push(event);
            }
            seen
        }
    }

    fn serve(
        tcp: TcpStream,
        token: &str,
        events: &Sender<(Instant, Event)>,
        orders: &Mutex<VecDeque<String>>,
    ) {
        let send = |event| {
            let _ = events.send((Instant::now(), event));
        };
        send(Event::Accepted);
        // The error type is tungstenite's, sized as it chose.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            send(Event::Request {
                uri: request.uri().to_string(),
                authorization: request
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
            });
            Ok(response)
        };
        let Ok(mut ws) = tungstenite::accept_hdr(tcp.try_clone().unwrap(), callback) else {
            return;
        };
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut authenticated = false;
        loop {
            if authenticated {
                while let Some(order) = orders.lock().unwrap().pop_front() {
                    ws.send(Message::text(order)).unwrap();
                }
            }
            let text = match ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) if common::read_timed_out(&e) => continue,
                Err(_) => return,
            };
            // Their server skips a frame that does not decode.
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            send(Event::Frame {
                frame: frame.clone(),
                authenticated,
            });
            match frame["type"].as_str() {
                Some("auth") => authenticated = answer_auth(&mut ws, &frame, token),
                Some("metrics") if !authenticated => reply(
                    &mut ws,
                    json!({"type": "error", "message": "Not authenticated"}),
                ),
                _ => {}
            }
        }
    }

    /// Their server's `auth` case; whether the agent is now authenticated.
    fn answer_auth(ws: &mut WebSocket<TcpStream>, frame: &Value, token: &str) -> bool {
        let (id, given) = (frame["server_id"].as_str(), frame["token"].as_str());
        let (Some(id), Some(given)) = (id, given) else {
            return false;
        };
        if id.is_empty() || given.is_empty() {
            return false;
        }
        let (answer, ok) = match (id == SERVER_ID, given == token) {
            (true, true) => (json!({"type": "auth", "status": "ok"}), true),
            (true, false) => (
                json!({"type": "auth", "status": "error", "message": "Invalid token"}),
                false,
            ),
            (false, _) => (
                json!({"type": "auth", "status": "error", "message": "Server not found"}),
                false,
            ),
        };
        reply(ws, answer);
        ok
    }

    fn reply(ws: &mut WebSocket<TcpStream>, frame: Value) {
        ws.send(Message::text(frame.to_string())).unwrap();
    }

    /// Whether Go's `encoding/json` puts `value` into their `SystemMetrics`:
    /// every `uint64` a whole non-negative number, every `float32`/`float64`
    /// a number, strings strings. Names the first field that would not fit.
    fn go_decodes(metrics: &Value) -> Result<(), String> {
        const UNSIGNED: &[&str] = &[
            "/cpu/frequency",
            "/memory/total",
            "/memory/used",
            "/memory/available",
            "/memory/swap_total",
            "/memory/swap_used",
            "/network/total_rx",
            "/network/total_tx",
            "/network/rx_speed",
            "/network/tx_speed",
            "/uptime",
        ];
        const FLOAT: &[&str] = &[
            "/cpu/usage",
            "/memory/usage_percent",
            "/load_average/one",
            "/load_average/five",
            "/load_average/fifteen",
        ];
        let unsigned = |value: &Value| value.is_null() || value.is_u64();
        let float = |value: &Value| value.is_null() || value.is_number();
        let check = |pointer: &str, fits: &dyn Fn(&Value) -> bool| match metrics.pointer(pointer) {
            Some(value) if !fits(value) => Err(format!("{pointer}: {value}")),
            _ => Ok(()),
        };
        for pointer in UNSIGNED {
            check(pointer, &unsigned)?;
        }
        for pointer in FLOAT {
            check(pointer, &float)?;
        }
        if !(metrics["timestamp"].is_string() && metrics["cpu"]["per_core"].is_array()) {
            return Err("timestamp or cpu.per_core".into());
        }
        for (i, disk) in metrics["disks"].as_array().unwrap().iter().enumerate() {
            for field in ["total", "used", "read_speed", "write_speed"] {
                check(&format!("/disks/{i}/{field}"), &unsigned)?;
            }
            check(&format!("/disks/{i}/usage_percent"), &float)?;
            let mounts = disk["mount_points"].as_array().ok_or("mount_points")?;
            if !mounts.iter().all(Value::is_string) {
                return Err(format!("disks[{i}].mount_points"));
            }
        }
        for (i, _) in metrics["network"]["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for field in ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"] {
                check(&format!("/network/interfaces/{i}/{field}"), &unsigned)?;
            }
        }
        Ok(())
    }

    #[test]
    fn the_agent_authenticates_then_reports_in_vstats_names_and_units() {
        let server = StandIn::start(TOKEN);
        let agent = server.agent(TOKEN, &[]);

        let (_, request) = server.next("upgrade request", |e| matches!(e, Event::Request { .. }));
        let Event::Request { uri, authorization } = request else {
            unreachable!()
        };
        assert_eq!(uri, "/ws/agent");
        assert_eq!(authorization, None, "the token goes only in the auth frame");

        let (_, auth, _) = server.frame("auth");
        assert_eq!(
            auth,
            json!({
                "type": "auth",
                "server_id": SERVER_ID,
                "token": TOKEN,
                "version": env!("CARGO_PKG_VERSION"),
            })
        );

        let mut arrivals = Vec::new();
        for _ in 0..3 {
            let (at, frame, authenticated) = server.frame("metrics");
            assert!(authenticated, "a sample before the auth reply: {frame}");
            let m = &frame["metrics"];
            go_decodes(m).unwrap_or_else(|field| panic!("Go would drop this frame ({field}): {m}"));
            // Percent, 0-100.
            let cpu = m["cpu"]["usage"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&cpu), "{cpu}");
            assert_eq!(m["memory"]["usage_percent"], 78.3);
            let disk = m["disks"][0]["usage_percent"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&disk), "{disk}");
            assert_eq!(m["disks"][0]["mount_points"], json!(["/"]));
            // Bytes since boot over the counted interfaces (wlan0 here), and
            // bytes per second: 0, since a captured tree's counters stand still.
            assert_eq!(m["network"]["total_rx"], 10_437_182_923u64);
            assert_eq!(m["network"]["total_tx"], 2_851_649_360u64);
            assert_eq!(m["network"]["rx_speed"], 0);
            assert_eq!(m["network"]["tx_speed"], 0);
            assert_eq!(m["memory"]["total"], 32_703_262_720u64);
            assert_eq!(m["hostname"], "bench-8c");
            assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
            assert!(m["timestamp"].as_str().unwrap().ends_with('Z'), "{m}");
            arrivals.push(at);
        }
        for pair in arrivals.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                (Duration::from_millis(300)..Duration::from_millis(800)).contains(&gap),
                "samples {gap:?} apart at --interval 0.5"
            );
        }
        let log = agent.log();
        assert!(
            !log.contains(TOKEN),
            "the token leaked into the log:\n{log}"
        );
    }

    #[test]
    fn a_refused_token_is_logged_once_and_retried_slowly() {
        let server = StandIn::start("the-right-token");
        // Configured the way a unit file's EnvironmentFile= would.
        let mut command = common::agent_command();
        command
            .env("VSTATS_PROTOCOL", "vstats")
            .env("VSTATS_SERVER", server.dashboard_url())
            .env("VSTATS_SERVER_ID", SERVER_ID)
            .env("VSTATS_TOKEN", TOKEN)
            .env("VSTATS_INTERVAL", "0.5");
        let mut agent = Process::spawn(command);
        let (_, refused, _) = server.frame("auth");
        assert_eq!(refused["server_id"], SERVER_ID);
        assert_eq!(refused["token"], TOKEN);
        let log = agent.wait_for_log(SOON, "refused auth");
        let later = server.collect(Duration::from_secs(3));
        let connections = 1 + later
            .iter()
            .filter(|e| matches!(e, Event::Accepted))
            .count();
        assert_eq!(connections, 1, "retried within 3 s: {later:?}");
        assert!(
            !later.iter().any(|e| matches!(e, Event::Frame { .. })),
            "frames after the refusal: {later:?}"
        );
        assert!(agent.is_running(), "{log}");
        let log = agent.log();
        assert_eq!(log.matches("refused auth").count(), 1, "{log}");
        assert!(
            log.contains("Invalid token"),
            "their message is logged: {log}"
        );
        assert!(
            !log.contains(TOKEN),
            "the token leaked into the log:\n{log}"
        );
    }

    #[test]
    fn config_and_command_frames_change_nothing() {
        let server = StandIn::start(TOKEN);
        let mut agent = server.agent(TOKEN, &["--log-level", "debug"]);
        server.frame("metrics");
        for order in [
            json!({"type": "config", "ping_targets": [{"name": "gw", "host": "192.0.2.1"}]}),
            json!({"type": "command", "command": "update", "download_url": "http://127.0.0.1:9/x", "force": true}),
            json!({"type": "command", "command": "update"}),
            json!({"type": "config", "ping_targets": []}),
        ] {
            server.orders.lock().unwrap().push_back(order.to_string());
        }
        // Samples keep coming, on the same connection, at the same pace.
        let later = server.collect(Duration::from_secs(2));
        let samples = later
            .iter()
            .filter(|e| matches!(e, Event::Frame { frame, .. } if frame["type"] == "metrics"))
            .count();
        assert!((3..=5).contains(&samples), "{samples} samples in 2 s");
        assert!(
            !later.iter().any(|e| matches!(e, Event::Accepted)),
            "the agent reconnected: {later:?}"
        );
        assert!(server.orders.lock().unwrap().is_empty(), "orders not sent");
        assert!(agent.is_running());
        let log = agent.log();
        assert_eq!(log.matches("does not update itself").count(), 1, "{log}");
    }
}
