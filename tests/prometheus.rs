//! `/metrics` as a real Prometheus sees it: `promtool check metrics` on the
//! exposition, a Prometheus server on loopback scraping a relay fed by a
//! real agent, and the alerting rules in `packaging/prometheus/` (promtool's
//! checks and unit tests, and only metrics a relay exports).

use crate::common;

use common::relay::Relay;
use common::{Agent, Process};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
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

/// `packaging/prometheus/`: the alerting rules and their unit tests.
fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus")
}

/// `promtool ARGS...` in `packaging/prometheus/` succeeds.
fn promtool_in_rules_dir(args: &[&str]) {
    let output = Command::new(tool("promtool"))
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    promtool_in_rules_dir(&["check", "rules", "vstats-alerts.yml"]);
    promtool_in_rules_dir(&["test", "rules", "vstats-alerts.test.yml"]);
}

/// The `vstats_*` names in the rules' expressions: each `expr:` line, and
/// the lines indented under it (a block scalar).
fn metrics_in_rules(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut expr_indent = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if trimmed.starts_with("expr:") {
            expr_indent = Some(indent);
        } else if expr_indent.is_some_and(|at| trimmed.is_empty() || indent <= at) {
            expr_indent = None;
        }
        if expr_indent.is_none() || trimmed.starts_with('#') {
            continue;
        }
        let mut rest = trimmed;
        while let Some(at) = rest.find("vstats_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The rules can never read a metric the relay does not export: every
/// `vstats_*` name in their expressions is a `# TYPE` family of a real
/// relay's `/metrics`, with a series in it once a server has reported.
#[test]
fn the_alerting_rules_read_only_metrics_the_relay_exports() {
    let rules = std::fs::read_to_string(rules_dir().join("vstats-alerts.yml")).unwrap();
    let used = metrics_in_rules(&rules);
    assert!(
        used.contains("vstats_up") && used.len() >= 7,
        "the scan missed the rules' metrics: {used:?}"
    );

    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(json!({
        "hostname": "pi",
        "cpu": {"usage": 12.5, "cores": 4},
        "memory": {"total": 1000, "used": 400, "available": 600, "swap_total": 10, "swap_used": 1},
        "disks": [{"name": "/dev/root", "mount": "/", "fs_type": "ext4", "total": 100, "used": 50}],
    }));
    let disk = format!("vstats_filesystem_size_bytes{{server_id=\"{id}\",");
    let deadline = Instant::now() + SOON;
    let body = loop {
        let (status, body) = relay.get("/metrics");
        assert_eq!(status, 200);
        if body.contains(&disk) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no sample reached /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let families: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &used {
        assert!(
            families.contains(name.as_str()),
            "the rules read {name}, which the relay does not export:\n{body}"
        );
        assert!(
            body.lines().any(|l| l
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with(['{', ' ']))),
            "no {name} series once a server has reported:\n{body}"
        );
    }
}
