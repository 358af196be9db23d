//! Alerts end to end: a real relay and real agents over loopback, and a
//! real HTTP receiver (plain or TLS with a test CA) taking the webhooks.

use crate::common;

use common::relay::{Relay, is};
use common::{Agent, TestCa, relay_command, unanswered_listener};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A webhook receiver on a loopback port: records each POST and answers
/// with the next scripted status (204 once the script runs out).
struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Webhook {
    fn start() -> Webhook {
        Webhook::serve(None)
    }

    fn start_tls(ca: &TestCa) -> Webhook {
        Webhook::serve(Some(Arc::new(ca.server_config())))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let (sink, script) = (received.clone(), statuses.clone());
        thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let (sink, script, tls) = (sink.clone(), script.clone(), tls.clone());
                thread::spawn(move || {
                    tcp.set_read_timeout(Some(SOON)).unwrap();
                    let mut stream: Box<dyn ReadWrite> = match tls {
                        None => Box::new(tcp),
                        Some(config) => Box::new(rustls::StreamOwned::new(
                            rustls::ServerConnection::new(config).unwrap(),
                            tcp,
                        )),
                    };
                    let Some(request) = read_request(&mut stream) else {
                        return;
                    };
                    let status = script.lock().unwrap().pop_front().unwrap_or(204);
                    sink.lock().unwrap().push(request);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.flush();
                });
            }
        });
        Webhook {
            addr,
            received,
            statuses,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived; returns them all.
    fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} notifications within {timeout:?}: {received:?}",
                received.len()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A request head and its `Content-Length` body.
fn read_request(stream: &mut dyn ReadWrite) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while bytes.len() < end + 4 + length {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        let mut words = request_line.split(' ');
        assert_eq!(words.next(), Some("POST"), "{request_line}");
        return Some(Received {
            at: Instant::now(),
            path: words.next()?.to_owned(),
            headers,
            body: bytes[end + 4..end + 4 + length].to_vec(),
        });
    }
}

fn real_agent(relay: &Relay, token: &str) -> common::Process {
    Agent::spawn(&["--server", &relay.url(), "--token", token])
}

/// The value of one `/metrics` line, by its name and labels.
fn metric(relay: &Relay, series: &str) -> f64 {
    let (_, body) = relay.get("/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .parse()
        .unwrap()
}

#[test]
fn a_server_gone_past_notify_after_is_posted_offline_then_online() {
    let webhook = Webhook::start();
    // The first POST is refused once: it is retried, not lost.
    webhook.statuses.lock().unwrap().push_back(503);
    let url = webhook.url("http", "/hook?key=secret");
    let relay = Relay::start(&["--notify-after", "2", "--notify-url", &url]);
    let (id, token) = relay.add_server("pi", "上海");
    let mut dashboard = relay.dashboard();
    let online = |f: &Value| is(f, "status", &id) && f["data"]["online"] == true;
    let agent = real_agent(&relay, &token);
    dashboard.wait_for(SOON, "online", online);

    drop(agent); // SIGKILL: the relay sees its socket close at once
    let killed = Instant::now();
    let received = webhook.wait_for(2, SOON);
    let (refused, offline) = (&received[0], &received[1]);
    let waited = refused.at - killed;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "offline posted {waited:?} after the kill (--notify-after 2)"
    );
    assert_eq!(refused.body, offline.body, "the retry is the same notice");
    assert_eq!(offline.path, "/hook?key=secret");
    assert_eq!(offline.header("content-type"), "application/json");
    assert!(offline.header("user-agent").starts_with("vstats-relay/"));
    let body = offline.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["at", "event", "message", "server"]);
    assert_eq!(body["event"], "offline");
    assert_eq!(
        body["server"],
        json!({"id": id, "name": "pi", "location": "上海"})
    );
    let at = body["at"].as_str().unwrap();
    assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("pi (上海) is offline"), "{message}");

    let _agent = real_agent(&relay, &token);
    let received = webhook.wait_for(3, SOON);
    let back = received[2].json();
    assert_eq!(back["event"], "online");
    assert!(
        back["message"]
            .as_str()
            .unwrap()
            .starts_with("pi (上海) is back online after"),
        "{back}"
    );
    assert_eq!(
        metric(&relay, "vstats_relay_notifications_total{result=\"sent\"}"),
        2.0
    );
    let log = relay.process.log();
    assert!(log.contains("alert: pi (上海) is offline"), "{log}");
    assert!(
        !log.contains("secret"),
        "the URL's secret reached the log:\n{log}"
    );
}

#[test]
fn a_one_second_flap_posts_nothing() {
    let webhook = Webhook::start();
    let url = webhook.url("http", "/");
    let relay = Relay::start(&["--notify-after", "3", "--notify-url", &url]);
    let (id, token) = relay.add_server("router", "");
    let mut dashboard = relay.dashboard();
    let id = id.as_str();
    let status =
        |online: bool| move |f: &Value| is(f, "status", id) && f["data"]["online"] == online;
    let agent = real_agent(&relay, &token);
    dashboard.wait_for(SOON, "online", status(true));
    drop(agent);
    let _agent = real_agent(&relay, &token);
    dashboard.wait_for(SOON, "offline", status(false));
    let gone = Instant::now();
    dashboard.wait_for(SOON, "online again", status(true));
    assert!(
        gone.elapsed() < Duration::from_secs(1),
        "{:?}",
        gone.elapsed()
    );
    // --notify-after, plus 2 s.
    thread::sleep(Duration::from_secs(5));
    assert_eq!(webhook.received().len(), 0, "{:?}", webhook.received());
}

#[test]
fn a_threshold_held_for_its_time_is_posted_and_so_is_its_end() {
    let webhook = Webhook::start();
    let url = webhook.url("http", "/");
    let relay = Relay::start(&["--alert", "cpu>=90 for 2s", "--notify-url", &url]);
    let (_, token) = relay.add_server("nas", "");
    let mut agent = relay.fake_agent(&token);
    let first_high = Instant::now();
    let mut sent_low = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while webhook.received().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", webhook.received());
        let high = webhook.received().is_empty();
        if !high && sent_low.is_none() {
            sent_low = Some(Instant::now());
        }
        agent.send_metrics(
            json!({"hostname": "nas", "cpu": {"usage": if high { 99.5 } else { 12.0 }}}),
        );
        thread::sleep(Duration::from_millis(200));
    }
    let received = webhook.received();
    let (fired, resolved) = (received[0].json(), received[1].json());
    assert!(received[0].at - first_high >= Duration::from_secs(2));
    assert!(received[1].at - sent_low.unwrap() >= Duration::from_secs(2));
    assert_eq!(
        (
            &fired["event"],
            &fired["rule"],
            &fired["value"],
            &fired["resolved"]
        ),
        (
            &json!("threshold"),
            &json!("cpu>=90 for 2s"),
            &json!(99.5),
            &json!(false)
        )
    );
    assert_eq!(
        fired["message"],
        "nas: CPU usage is 99.5 %, at or above 90 % for 2s."
    );
    assert_eq!(
        (resolved["value"].as_f64(), &resolved["resolved"]),
        (Some(12.0), &json!(true))
    );
}

/// Latencies from a steady agent's `send` to a dashboard, while 20 agents
/// flap (each flap an offline and an online notice with
/// `--notify-after 0`): `(p50, p99, max)` in ms.
fn latencies_while_flapping(extra: &[&str]) -> (Relay, [f64; 3]) {
    let mut args = vec!["--notify-after", "0", "--alert", "off"];
    args.extend_from_slice(extra);
    let relay = Relay::start(&args);
    // Added at once and noticed in one registry read, not one each.
    let flappers: Vec<String> = (0..20)
        .map(|i| {
            let output = relay.cli(&["add", "--name", &format!("flap{i}"), "--json"]);
            let added: Value = serde_json::from_slice(&output.stdout).unwrap();
            added["token"].as_str().unwrap().to_owned()
        })
        .collect();
    let (steady_id, steady_token) = relay.add_server("steady", "");
    let mut dashboard = relay.dashboard();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flapping = {
        let (client, stop) = (relay.client.clone(), stop.clone());
        thread::spawn(move || {
            let mut flaps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for token in &flappers {
                    let mut agent = client.fake_agent(token);
                    agent.send_metrics(json!({"hostname": "flap", "cpu": {"usage": 1.0}}));
                    thread::sleep(Duration::from_millis(30));
                    drop(agent);
                    flaps += 1;
                }
            }
            flaps
        })
    };
    let mut steady = relay.fake_agent(&steady_token);
    let mut latencies = Vec::new();
    let started = Instant::now();
    for n in 0..100u64 {
        let sent = Instant::now();
        steady.send_metrics(json!({"hostname": "steady", "processes": n}));
        dashboard.wait_for(SOON, "the steady sample", |f| {
            is(f, "metrics", &steady_id) && f["data"]["metrics"]["processes"] == n
        });
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flaps = flapping.join().unwrap();
    assert!(flaps >= 40, "only {flaps} flaps in {:?}", started.elapsed());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (relay, [at(0.5), at(0.99), at(1.0)])
}

#[test]
fn webhooks_that_never_answer_or_refuse_do_not_delay_dashboards() {
    let (baseline_relay, baseline) = latencies_while_flapping(&[]);
    drop(baseline_relay);
    // SYNs dropped (connect hangs), accepted but never answered (the
    // response never comes), and refused.
    let (unanswered, _queued) = unanswered_listener();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
    let holder = held.clone();
    thread::spawn(move || {
        for tcp in silent.incoming().map_while(Result::ok) {
            holder.lock().unwrap().push(tcp);
        }
    });
    let refused = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let urls = [
        format!(
            "http://127.0.0.1:{}/",
            unanswered.local_addr().unwrap().port()
        ),
        format!("http://127.0.0.1:{silent_port}/"),
        format!("http://127.0.0.1:{refused_port}/"),
    ];
    let mut flags = Vec::new();
    for url in &urls {
        flags.extend(["--notify-url", url.as_str()]);
    }
    let (relay, dead) = latencies_while_flapping(&flags);
    eprintln!(
        "dashboard latency p50/p99/max, no webhooks: {:.2}/{:.2}/{:.2} ms; three dead webhooks: {:.2}/{:.2}/{:.2} ms",
        baseline[0], baseline[1], baseline[2], dead[0], dead[1], dead[2]
    );
    // A delivery on the loop would hold it for the 10 s of an attempt.
    assert!(dead[2] < 1000.0, "{dead:?}");
    assert!(
        dead[1] < baseline[1].max(20.0) * 5.0,
        "{dead:?} vs {baseline:?}"
    );
    // The notices were made and are stuck: the queues overflowed.
    assert!(
        !held.lock().unwrap().is_empty(),
        "the silent webhook was never reached"
    );
    let dropped = metric(
        &relay,
        "vstats_relay_notifications_total{result=\"dropped\"}",
    );
    assert!(dropped > 0.0, "no notice dropped from a full queue");
    assert_eq!(
        metric(&relay, "vstats_relay_notifications_total{result=\"sent\"}"),
        0.0
    );
}

#[test]
fn an_offline_notified_before_a_restart_is_closed_after_it() {
    let webhook = Webhook::start();
    let url = webhook.url("http", "/");
    let flags = ["--notify-after", "1", "--notify-url", url.as_str()];
    let relay = Relay::start(&flags);
    let (_, token) = relay.add_server("pi", "");
    let agent = real_agent(&relay, &token);
    relay.process.wait_for_log(SOON, "agent for pi");
    drop(agent);
    webhook.wait_for(1, SOON);
    let relay = relay.restart(&flags);
    assert!(relay.state.with_extension("alerts").exists());
    let _agent = real_agent(&relay, &token);
    let received = webhook.wait_for(2, SOON);
    assert_eq!(received[1].json()["event"], "online");
    thread::sleep(Duration::from_secs(2));
    assert_eq!(webhook.received().len(), 2, "{:?}", webhook.received());
}

/// `vstats-relay notify test` with these flags: exit code and stdout.
fn notify_test(flags: &[&str]) -> (i32, String) {
    let output = relay_command()
        .args(["notify", "test"])
        .args(flags)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[test]
fn notify_test_posts_to_each_url_and_says_which_failed() {
    let webhook = Webhook::start();
    let refused = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!(
        "http://127.0.0.1:{}/x/TOKEN",
        refused.local_addr().unwrap().port()
    );
    drop(refused);
    let discord = webhook.url("http", "/api/webhooks/1/TOKEN");
    let ntfy = webhook.url("http", "/mytopic");
    let (code, out) = notify_test(&[
        "--notify-url",
        &webhook.url("http", "/plain"),
        "--notify-url",
        &discord,
        "--notify-url",
        &ntfy,
        "--notify-url",
        &refused_url,
        "--notify-template",
        "json",
        "--notify-template",
        r#"{"content": "{{message}}"}"#,
        "--notify-template",
        "{{event}}: {{message}}",
        "--notify-template",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[..3].iter().all(|l| l.starts_with("ok")), "{out}");
    assert!(lines[3].starts_with("FAIL"), "{out}");
    assert!(
        !out.contains("TOKEN"),
        "a URL's secret path was printed: {out}"
    );
    let mut received = webhook.wait_for(3, SOON);
    received.sort_by(|a, b| a.path.cmp(&b.path));
    let [discord, ntfy, plain] = &received[..] else {
        panic!()
    };
    assert_eq!(plain.json()["event"], "test");
    let content = discord.json();
    assert_eq!(content.as_object().unwrap().len(), 1, "{content}");
    assert!(
        content["content"]
            .as_str()
            .unwrap()
            .starts_with("Test notification")
    );
    assert!(ntfy.header("content-type").starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&ntfy.body).starts_with("test: Test notification"));

    let (code, out) = notify_test(&[]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn https_webhooks_are_verified_and_a_private_ca_can_be_trusted() {
    let ca = TestCa::new();
    let webhook = Webhook::start_tls(&ca);
    let url = webhook.url("https", "/hook");
    let ca_file = ca.ca_pem.to_str().unwrap();
    let (code, out) = notify_test(&["--notify-url", &url, "--notify-ca-file", ca_file]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(webhook.wait_for(1, SOON)[0].json()["event"], "test");
    let (code, out) = notify_test(&["--notify-url", &url]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("certificate"), "{out}");
    assert_eq!(webhook.received().len(), 1);

    // The relay's own delivery thread, not only `notify test`, speaks TLS.
    let relay = Relay::start(&[
        "--notify-after",
        "0",
        "--notify-url",
        &url,
        "--notify-ca-file",
        ca_file,
    ]);
    let (_, token) = relay.add_server("pi", "");
    let agent = relay.fake_agent(&token);
    relay.process.wait_for_log(SOON, "agent for pi");
    drop(agent);
    let received = webhook.wait_for(2, SOON);
    assert_eq!(received[1].json()["event"], "offline");
}

#[test]
fn bad_notify_flags_are_refused_at_start() {
    for (flags, expected) in [
        (&["--notify-url", "ftp://x/"][..], "--notify-url"),
        (
            &[
                "--notify-url",
                "http://a/",
                "--notify-url",
                "http://b/",
                "--notify-template",
                "x",
                "--notify-template",
                "y",
                "--notify-template",
                "z",
            ][..],
            "--notify-template",
        ),
        (&["--notify-after", "-1"][..], "--notify-after"),
        (&["--alert", "disk>90%% for 5m"][..], "--alert"),
        (&["--alert", "uptime>5"][..], "no metric named 'uptime'"),
    ] {
        let output = relay_command().args(flags).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}
