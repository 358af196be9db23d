//! `/metrics` as a real Prometheus sees it: `promtool check metrics` on the
//! exposition, and a Prometheus server on loopback scraping a relay fed by
//! a real agent.

mod common;

use common::relay::Relay;
use common::{Agent, Process};
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(10);

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run scripts/setup-dev.sh (Debian package prometheus)"
    );
    path
}

/// A relay with one registered server whose real agent is reporting.
fn relay_with_agent() -> (Relay, Process, String) {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi \"lab\"", "上海");
    let url = relay.url();
    let agent = Agent::spawn(&["--server", &url, "--token", &token]);
    let deadline = Instant::now() + SOON;
    while !relay.get("/metrics").1.contains("vstats_cpu_cores{") {
        assert!(Instant::now() < deadline, "no sample reached /metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    (relay, agent, id)
}

#[test]
fn promtool_accepts_the_exposition() {
    let (relay, _agent, id) = relay_with_agent();
    let (status, body) = relay.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            "vstats_up{{server_id=\"{id}\",name=\"pi \\\"lab\\\"\"}} 1"
        )),
        "{body}"
    );
    promtool_check(&body);
}

/// `promtool check metrics` accepts `body`.
fn promtool_check(body: &str) {
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One agent listing 200 filesystems (a sample the relay takes) gets 64
/// per family in `/metrics`, and the rest is counted where an operator
/// sees it.
#[test]
fn a_server_with_too_many_disks_is_capped_and_the_cut_counted() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("nas", "");
    let mut agent = relay.fake_agent(&token);
    let disks: Vec<Value> = (0..200)
        .map(|i| {
            json!({"name": format!("/dev/sd{i}"), "mount": format!("/srv/{i}"),
                   "fs_type": "xfs", "total": 1000, "used": 10})
        })
        .collect();
    agent.send_metrics(json!({"hostname": "nas", "disks": disks}));
    let dropped =
        format!("vstats_server_series_dropped{{server_id=\"{id}\",name=\"nas\",list=\"disks\"}}");
    let deadline = Instant::now() + SOON;
    let body = loop {
        let (status, body) = relay.get("/metrics");
        assert_eq!(status, 200);
        if body.contains(&dropped) {
            break body;
        }
        assert!(Instant::now() < deadline, "no dropped series:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let ours = format!("{{server_id=\"{id}\",");
    for family in [
        "vstats_filesystem_size_bytes",
        "vstats_filesystem_used_bytes",
    ] {
        let shown = body
            .lines()
            .filter(|l| l.starts_with(&format!("{family}{ours}")))
            .count();
        assert_eq!(shown, 64, "{family}");
    }
    // 136 filesystems left out, two series each.
    assert!(
        body.lines().any(|l| l == format!("{dropped} 272")),
        "{body}"
    );
    promtool_check(&body);
}

#[test]
fn prometheus_scrapes_vstats_up() {
    let (relay, _agent, id) = relay_with_agent();
    let dir = tempfile::tempdir().unwrap();
    let web = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: vstats\n    static_configs:\n      - targets: ['{}']\n",
            relay.addr
        ),
    )
    .unwrap();
    let mut command = Command::new(tool("prometheus"));
    command.args([
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        &format!("--web.listen-address={web}"),
    ]);
    let prometheus = Process::spawn(command);

    let query = format!(
        "GET /api/v1/query?query=vstats_up HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = http_body(web, &query).and_then(|body| up_value(&body, &id)) {
            assert_eq!(value, "1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never reported vstats_up; its log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn http_body(addr: std::net::SocketAddr, request: &str) -> Option<String> {
    use std::io::Read;
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(SOON)).ok()?;
    tcp.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The value of `vstats_up` for `id` in a query API answer.
fn up_value(body: &str, id: &str) -> Option<String> {
    // The body may be chunked; the JSON object is the part between braces.
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    let answer: Value = serde_json::from_str(&body[start..=end]).ok()?;
    answer["data"]["result"]
        .as_array()?
        .iter()
        .find(|r| r["metric"]["server_id"] == id)
        .and_then(|r| r["value"][1].as_str().map(str::to_owned))
}
