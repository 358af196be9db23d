//! The dashboard page in a real browser: headless Chromium, driven over the
//! DevTools protocol, loads `/` from a real relay fed by a real agent (or
//! scripted ones), and the test reads what the page shows.
//!
//! Self-contained on purpose (its own process helpers rather than
//! `tests/common`), so it only depends on the binaries' command lines.
//! Screenshots land in `target/browser-artifacts/`; the pictures in `docs/`
//! are copies of `dashboard*.png` and `detail*.png` from there.

use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A child process killed (with its whole process group) when dropped; its
/// stderr is kept for failure messages.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        // Its own group, so that dropping it also ends what it spawned
        // (Chromium's zygote and renderers).
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        Proc::collect(child.stdout.take().unwrap(), &log);
        Proc::collect(child.stderr.take().unwrap(), &log);
        Proc { child, log }
    }

    /// Appends `output`'s lines to `log` as they come.
    fn collect(output: impl Read + Send + 'static, log: &Arc<Mutex<String>>) {
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    }

    /// The process group this process leads (it and what it spawned).
    fn group(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(-(self.child.id() as i32))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = nix::sys::signal::kill(self.group(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `what()` until it returns `Some`, at most `timeout`; then panics with
/// `context()` (logs, the page's state) to say why.
fn poll<T>(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}\n{}", context());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `probe` on the page until `check` accepts what it saw; on a
/// timeout, panics with the last thing seen and `context()`.
fn poll_page<T>(
    browser: &mut Browser,
    what: &str,
    context: impl Fn() -> String,
    probe: impl Fn(&mut Browser) -> Value,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = probe(browser);
        if let Some(found) = check(&seen) {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within 15 s; last seen {seen}\n{}", context());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn relay_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vstats-relay"));
    // A developer's VSTATS_* settings must not leak into the processes.
    for (name, _) in std::env::vars() {
        if name.starts_with("VSTATS_") {
            command.env_remove(name);
        }
    }
    command
}

struct Relay {
    proc: Proc,
    port: u16,
    state: PathBuf,
}

impl Relay {
    fn start(dir: &Path, extra: &[&str]) -> Relay {
        let state = dir.join("state.json");
        let mut command = relay_command();
        command.args(["--listen", "127.0.0.1:0", "--state"]);
        command.arg(&state).args(extra);
        let proc = Proc::spawn(command);
        let port = poll(
            Duration::from_secs(10),
            "relay listening",
            || proc.log(),
            || {
                let log = proc.log();
                let addr = log
                    .split("listening on ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                addr.rsplit(':').next()?.parse().ok()
            },
        );
        Relay { proc, port, state }
    }

    /// `vstats-relay server ARGS --state FILE`, which must succeed.
    fn cli(&self, args: &[&str]) -> Vec<u8> {
        let output = relay_command()
            .arg("server")
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .output()
            .unwrap();
        assert!(output.status.success(), "server {args:?}: {output:?}");
        output.stdout
    }

    /// Registers a server; returns its id and token.
    fn add_server(&self, name: &str, location: &str) -> (String, String) {
        let out = self.cli(&["add", "--name", name, "--location", location, "--json"]);
        let added: Value = serde_json::from_slice(&out).unwrap();
        let field = |k: &str| added[k].as_str().unwrap().to_owned();
        (field("id"), field("token"))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// A plain HTTP GET on loopback; returns the body of a `200`. Reads by
/// `Content-Length`: Chromium's DevTools server keeps the connection open.
fn http_get(port: u16, path: &str) -> Option<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        &tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(tcp);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    status
        .starts_with("HTTP/1.1 200")
        .then(|| String::from_utf8_lossy(&body).into_owned())
}

/// Headless Chromium and a DevTools session on its one tab.
struct Browser {
    cdp: WebSocket<TcpStream>,
    next_id: u64,
    // Dropped after `cdp`: the profile directory outlives the browser.
    proc: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let binary = std::env::var("VSTATS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
        assert!(
            Path::new(&binary).exists(),
            "{binary} not found: the browser test needs Chromium; \
             run ./scripts/setup-dev.sh (it installs the `chromium` package)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank");
        let proc = Proc::spawn(command);
        // Chromium picks a free port and writes it to this file.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = poll(
            Duration::from_secs(30),
            "Chromium's DevToolsActivePort",
            || proc.log(),
            || {
                std::fs::read_to_string(&port_file)
                    .ok()?
                    .lines()
                    .next()?
                    .parse()
                    .ok()
            },
        );
        let target = poll(
            Duration::from_secs(10),
            "a page target in /json/list",
            || proc.log(),
            || {
                let list: Value = serde_json::from_str(&http_get(port, "/json/list")?).ok()?;
                list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(str::to_owned)
            },
        );
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (cdp, _) = tungstenite::client(target.as_str(), tcp).unwrap();
        let mut browser = Browser {
            cdp,
            next_id: 0,
            proc,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser
    }

    /// One DevTools command; returns its `result`, skipping events.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// One DevTools command; its `result`, or its `error`.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.cdp.send(Message::text(request.to_string())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {method}\n{}",
                self.proc.log()
            );
            let text = match self.cdp.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("DevTools connection failed during {method}: {e}"),
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                return match answer.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// Evaluates a JS expression in the page; returns its value as JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Like `eval`, but `None` where it fails, as while a page loads.
    fn try_eval(&mut self, expression: &str) -> Option<Value> {
        let params = json!({"expression": expression, "returnByValue": true});
        let result = self.try_call("Runtime.evaluate", params).ok()?;
        match result.get("exceptionDetails") {
            Some(_) => None,
            None => Some(result["result"]["value"].clone()),
        }
    }

    /// A real click (press and release) in the middle of what `selector`
    /// matches.
    fn click(&mut self, selector: &str) {
        let selector = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{ const r = document.querySelector({selector}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at[0], "y": at[1], "button": "left", "clickCount": 1}),
            );
        }
    }

    /// A key pressed and released, to whatever has the focus.
    fn key(&mut self, key: &str, code: u32) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            );
        }
    }

    /// Emulates `prefers-color-scheme`.
    fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// The page's background, as `[r, g, b]`.
    fn background(&mut self) -> Vec<u64> {
        let color = self.eval("getComputedStyle(document.body).backgroundColor");
        let color = color.as_str().unwrap();
        let rgb: Vec<u64> = color
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .take(3)
            .map(|part| part.parse().unwrap())
            .collect();
        assert_eq!(rgb.len(), 3, "{color}");
        rgb
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        poll(
            Duration::from_secs(10),
            "the page loaded",
            String::new,
            || (self.eval("document.readyState") == "complete").then_some(()),
        );
    }

    /// A PNG of the viewport, written to `target/browser-artifacts/NAME`.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        self.capture(
            name,
            json!({"format": "png", "captureBeyondViewport": false}),
        )
    }

    /// A PNG of the whole page, however long, as `screenshot` does.
    fn screenshot_page(&mut self, name: &str) -> PathBuf {
        let height = self.eval("document.documentElement.scrollHeight");
        let clip = json!({"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1});
        let params = json!({"format": "png", "captureBeyondViewport": true, "clip": clip});
        self.capture(name, params)
    }

    fn capture(&mut self, name: &str, params: Value) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", params);
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(&png).unwrap();
        path
    }

    /// What server `id`'s card shows: each `data-field`'s text, the card's
    /// classes, and how many points its CPU sparkline has; `null` when there
    /// is no such card.
    fn card(&mut self, id: &str) -> Value {
        let id = serde_json::to_string(id).unwrap();
        self.eval(&format!(
            r#"(() => {{
                const card = document.querySelector('[data-server-id="' + CSS.escape({id}) + '"]');
                if (!card) return null;
                const out = {{ class: card.className }};
                for (const e of card.querySelectorAll('[data-field]')) out[e.dataset.field] = e.textContent;
                const line = card.querySelector('.cpu polyline');
                const points = line && line.getAttribute('points');
                out.points = points ? points.split(' ').length : 0;
                return out;
            }})()"#
        ))
    }

    /// What the detail view shows: whether it (and the grid) is shown, the
    /// hash, the name, how many points each shown chart's longest series
    /// has (by title), how many bands up to the maxima the charts draw,
    /// the per-core bars, the disk and interface tables' cells, and the
    /// facts (by label).
    fn detail(&mut self) -> Value {
        self.eval(
            r#"(() => {
                const d = document.querySelector('#detail');
                const shown = e => getComputedStyle(e).display !== 'none';
                const cells = id => [...document.querySelectorAll(id + ' tr')]
                    .map(r => [...r.cells].map(c => c.textContent));
                const charts = {};
                let bands = 0;
                for (const c of d.querySelectorAll('.chart')) {
                    if (c.hidden) continue;
                    const n = [...c.querySelectorAll('path[data-points]')].map(p => +p.dataset.points);
                    charts[c.querySelector('h3').textContent] = Math.max(0, ...n);
                    bands += c.querySelectorAll('path.band[d*="Z"]').length;
                }
                const facts = {};
                for (const e of d.querySelectorAll('#d-facts > div')) facts[e.firstChild.textContent] = e.lastChild.textContent;
                return {
                    shown: shown(d), grid: shown(document.querySelector('#grid')),
                    hash: location.hash, name: d.querySelector('#d-name').textContent, charts, bands,
                    cores: d.querySelectorAll('#d-cores .core').length,
                    disks: cells('#d-disks'), interfaces: cells('#d-ifs'), facts,
                };
            })()"#,
        )
    }

    /// The names on the grid's cards that are shown, in order.
    fn shown_cards(&mut self) -> Value {
        self.eval(
            "[...document.querySelectorAll('#grid .card')].filter(c => !c.hidden)\
             .map(c => c.querySelector('h2').textContent)",
        )
    }

    fn conn(&mut self) -> Value {
        self.eval(
            "(() => { const c = document.querySelector('#conn'); \
             return { state: c.dataset.state, text: c.textContent }; })()",
        )
    }
}

/// Standard base64 (with padding), as DevTools sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | (u32::from(d) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((bits >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The page's size format (binary units, one decimal below 100): the
/// number and the unit.
fn human_bytes(mut n: f64) -> (f64, &'static str) {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut i = 0;
    while n >= 1024.0 && i < units.len() - 1 {
        n /= 1024.0;
        i += 1;
    }
    (n, units[i])
}

fn host_mem_total() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

fn text<'a>(card: &'a Value, field: &str) -> &'a str {
    card[field].as_str().unwrap_or_default()
}

#[test]
fn dashboard_shows_live_servers() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(dir.path(), &[]);
    let (id, token) = relay.add_server("alpha", "上海");

    let mut agent_command = Command::new(env!("CARGO_BIN_EXE_vstats-agent"));
    agent_command
        .args(["--server", &format!("ws://127.0.0.1:{}", relay.port)])
        .args(["--interval", "0.5"])
        .env_clear()
        .env("VSTATS_TOKEN", &token);
    // The relay notices the new registry entry within 2 s; until then the
    // agent is refused and retries, so waiting on the page covers both.
    let mut agent = Proc::spawn(agent_command);

    let mut browser = Browser::launch();
    browser.navigate(&relay.url());
    let logs = |relay: &Relay, agent: &Proc| {
        format!(
            "relay log:\n{}\nagent log:\n{}",
            relay.proc.log(),
            agent.log()
        )
    };

    // Live, with the server online and a real sample in its card.
    let first = poll(
        Duration::from_secs(30),
        "alpha's card online with a CPU figure",
        || logs(&relay, &agent),
        || {
            let card = browser.card(&id);
            (text(&card, "status") == "online" && text(&card, "cpu").ends_with('%')).then_some(card)
        },
    );
    assert_eq!(browser.conn()["state"], "live");
    assert_eq!(text(&first, "name"), "alpha");
    assert_eq!(text(&first, "location"), "上海");
    assert!(has_class(&first, "on"), "{first}");

    // Memory: "used / total", total the host's MemTotal in binary units.
    let memory = text(&first, "memory");
    let (_, total) = memory
        .split_once(" / ")
        .unwrap_or_else(|| panic!("memory shows {memory:?}"));
    let (shown, unit) = total.split_once(' ').unwrap();
    let (expected, expected_unit) = human_bytes(host_mem_total());
    assert_eq!(unit, expected_unit, "memory total {total:?}");
    let shown: f64 = shown.parse().unwrap();
    let tolerance = if expected < 100.0 { 0.051 } else { 0.51 };
    assert!(
        (shown - expected).abs() <= tolerance,
        "memory total {total:?}, host has {expected:.2} {expected_unit}"
    );
    for field in ["disk", "net", "load", "uptime"] {
        let value = text(&first, field);
        assert!(
            !value.is_empty() && value != "–",
            "{field} shows {value:?}: {first}"
        );
    }
    assert!(text(&first, "net").contains("/s"), "{first}");

    // Live updates: the sparkline grows, and a figure changes.
    let figures = |card: &Value| {
        ["cpu", "net", "uptime", "load"]
            .map(|field| text(card, field).to_owned())
            .join(" | ")
    };
    let before = figures(&first);
    // A sparkline point is 30 s of the relay's clock.
    poll(
        Duration::from_secs(35),
        "alpha's figures changing",
        || logs(&relay, &agent),
        || {
            let card = browser.card(&id);
            (figures(&card) != before && card["points"].as_u64()? > first["points"].as_u64()?)
                .then_some(())
        },
    );

    // A server registered while the page is open appears without a reload;
    // it has no agent, so it is offline.
    let (beta, _) = relay.add_server("beta", "Frankfurt");
    let card = poll(
        Duration::from_secs(10),
        "beta's card",
        || logs(&relay, &agent),
        || Some(browser.card(&beta)).filter(|c| !c.is_null()),
    );
    assert_eq!(text(&card, "name"), "beta");
    assert_eq!(text(&card, "status"), "offline");
    assert!(has_class(&card, "off"), "{card}");
    let order = browser
        .eval("[...document.querySelectorAll('[data-server-id]')].map(c => c.dataset.serverId)");
    assert_eq!(order, json!([id, beta]), "cards in registration order");

    // Let the sparklines fill a little for the picture.
    thread::sleep(Duration::from_secs(3));
    let shot = browser.screenshot("dashboard-live.png");
    eprintln!("screenshot: {}", shot.display());

    // Phone width: one column, nothing wider than the screen.
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": true}),
    );
    let layout = poll(
        Duration::from_secs(5),
        "the layout at 360 px",
        String::new,
        || {
            let layout = browser.eval(
                "({ width: innerWidth, scroll: document.documentElement.scrollWidth, \
                   columns: getComputedStyle(document.querySelector('#grid')).gridTemplateColumns.split(' ').length })",
            );
            (layout["width"] == 360).then_some(layout)
        },
    );
    assert_eq!(layout["columns"], 1, "{layout}");
    assert!(layout["scroll"].as_u64().unwrap() <= 360, "{layout}");
    browser.screenshot("dashboard-phone.png");
    browser.call("Emulation.clearDeviceMetricsOverride", json!({}));

    // Removed from the registry: the card goes, without a reload.
    relay.cli(&["remove", &beta]);
    poll(
        Duration::from_secs(10),
        "beta's card gone",
        || logs(&relay, &agent),
        || browser.card(&beta).is_null().then_some(()),
    );

    // The agent dies: its card turns offline and grey.
    agent.kill();
    let card = poll(
        Duration::from_secs(10),
        "alpha offline",
        || logs(&relay, &agent),
        || {
            let card = browser.card(&id);
            (text(&card, "status") == "offline").then_some(card)
        },
    );
    assert!(has_class(&card, "off"), "{card}");
    assert_eq!(text(&card, "name"), "alpha", "the card stays, greyed");

    // The relay goes away: the page says it is reconnecting.
    relay.proc.kill();
    let conn = poll(
        Duration::from_secs(10),
        "the page reconnecting",
        String::new,
        || {
            let conn = browser.conn();
            (conn["state"] == "down").then_some(conn)
        },
    );
    assert!(
        conn["text"]
            .as_str()
            .unwrap()
            .starts_with("reconnecting in "),
        "{conn}"
    );
}

/// A relay that starts with 70 s of saved history (as after a restart): a
/// fresh page draws the sparklines at once, before any live sample.
#[test]
fn a_fresh_page_draws_sparklines_from_the_history_the_relay_loaded() {
    use vstats::protocol::{Cpu, Metrics, Network};
    use vstats::relay::{
        History, Reading, history_file_beside as file_beside, history_to_file as to_file,
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let added = relay_command()
        .args(["server", "add", "--name", "saved", "--json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let id = added["id"].as_str().unwrap().to_owned();
    // What the previous run saved: a sample a second for the last 70 s.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut history = History::default();
    for ago in (0..70u64).rev() {
        let sample = Metrics {
            cpu: Some(Cpu {
                usage: (ago % 50) as f64,
                ..Cpu::default()
            }),
            network: Some(Network {
                rx: 1000.0 * ago as f64,
                tx: 500.0,
                ..Network::default()
            }),
            ..Metrics::default()
        };
        history.record(now - ago, &Reading::of(&sample));
    }
    std::fs::write(file_beside(&state), to_file([(id.as_str(), &history)])).unwrap();

    let relay = Relay::start(dir.path(), &[]);
    poll(
        Duration::from_secs(5),
        "the relay loading the history",
        || relay.proc.log(),
        || {
            relay
                .proc
                .log()
                .contains("history of 1 server(s) loaded")
                .then_some(())
        },
    );
    let mut browser = Browser::launch();
    browser.navigate(&relay.url());
    let card = poll(
        Duration::from_secs(10),
        "saved's sparkline drawn from history",
        || relay.proc.log(),
        || {
            let card = browser.card(&id);
            // 70 s fall in 3 or 4 of the sparkline's 30 s steps.
            (card["points"].as_u64()? >= 3).then_some(card)
        },
    );
    assert_eq!(text(&card, "status"), "offline", "no agent: only history");
    let rx_points = browser
        .eval("document.querySelector('.spark .rx').getAttribute('points').split(' ').length");
    assert!(rx_points.as_u64().unwrap() >= 3, "{rx_points}");
}

fn has_class(card: &Value, class: &str) -> bool {
    text(card, "class").split_whitespace().any(|c| c == class)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `scripts/demo.sh --no-build` on the debug binaries, a free port and a
/// fresh demo directory: it registers this machine once, runs a relay and
/// an agent that shows up online, keeps the token private, and a SIGTERM
/// stops everything it started.
#[test]
fn demo_script_runs_relay_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo-state");
    let port = free_port();
    let hostname = nix::unistd::gethostname().unwrap();
    let hostname = hostname.to_str().unwrap();
    let start = || {
        let mut command = Command::new("sh");
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .arg("--no-build")
            .env("VSTATS_DEMO_PORT", port.to_string())
            .env("VSTATS_DEMO_DIR", &demo_dir)
            .env("VSTATS_RELAY_BIN", env!("CARGO_BIN_EXE_vstats-relay"))
            .env("VSTATS_AGENT_BIN", env!("CARGO_BIN_EXE_vstats-agent"));
        let demo = Proc::spawn(command);
        let url = format!("dashboard at http://127.0.0.1:{port}/");
        poll(
            Duration::from_secs(20),
            "the demo's dashboard URL",
            || demo.log(),
            || demo.log().contains(&url).then_some(()),
        );
        demo
    };
    let servers_online = |demo: &Proc| {
        poll(
            Duration::from_secs(20),
            "this machine online in /api/servers",
            || demo.log(),
            || {
                let servers: Value = serde_json::from_str(&http_get(port, "/api/servers")?).ok()?;
                let servers = servers.as_array()?.clone();
                servers
                    .iter()
                    .any(|s| {
                        s["name"] == hostname && s["location"] == "local" && s["online"] == true
                    })
                    .then_some(servers)
            },
        )
    };
    let stop = |mut demo: Proc| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(demo.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let log = demo.log.clone();
        poll(
            Duration::from_secs(15),
            "the demo exiting on SIGTERM",
            || log.lock().unwrap().clone(),
            || demo.child.try_wait().unwrap(),
        );
        // Nothing it started is left: not in its process group, not on the port.
        poll(
            Duration::from_secs(5),
            "the demo's relay and agent gone",
            || demo.log(),
            || {
                nix::sys::signal::kill(demo.group(), None)
                    .is_err()
                    .then_some(())
            },
        );
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    };

    let demo = start();
    assert_eq!(servers_online(&demo).len(), 1);
    let page = http_get(port, "/").unwrap();
    assert!(page.contains("id=conn"), "the dashboard page is served");
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&demo_dir), 0o700);
    assert_eq!(mode(&demo_dir.join("agent.token")), 0o600);
    stop(demo);

    // A second run reuses the registration rather than adding a server.
    let demo = start();
    assert_eq!(servers_online(&demo).len(), 1);
    stop(demo);
}

/// A relay that wants a viewer token: the page passes on the `token` of its
/// own URL to `/ws`, and without it stays disconnected.
#[test]
fn dashboard_passes_viewer_token() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &["--viewer-token", "s3cret&x"]);
    let (id, _) = relay.add_server("gamma", "東京");
    let mut browser = Browser::launch();

    browser.navigate(&format!("{}?token=s3cret%26x", relay.url()));
    poll(
        Duration::from_secs(15),
        "gamma's card with the viewer token",
        || relay.proc.log(),
        || {
            let card = browser.card(&id);
            (text(&card, "location") == "東京").then_some(())
        },
    );
    assert_eq!(browser.conn()["state"], "live");
    // The detail view asks for the history with it too (gamma has none
    // yet; without the token it would be a 401).
    browser.click(&format!("[data-server-id=\"{id}\"]"));
    let message = "document.querySelector('#d-msg').textContent";
    poll(
        Duration::from_secs(10),
        "gamma's history fetched with the token",
        || relay.proc.log(),
        || (browser.eval(message) == "No history yet.").then_some(()),
    );
    // So does the CSV link.
    let link = browser.eval("document.querySelector('#d-csv').href");
    let link = link.as_str().unwrap();
    let path = &link[link.find("/api/").unwrap()..];
    assert!(path.ends_with("&format=csv&token=s3cret%26x"), "{link}");
    let csv = http_get(relay.port, path).unwrap();
    assert!(csv.starts_with("time,unix,"), "{csv:.200}");

    browser.navigate(&relay.url());
    let conn = poll(
        Duration::from_secs(10),
        "the page refused without the token",
        || relay.proc.log(),
        || {
            let conn = browser.conn();
            (conn["state"] == "down").then_some(conn)
        },
    );
    assert!(browser.card(&id).is_null(), "no data without the token");
    assert!(
        text(&conn, "text").starts_with("reconnecting in "),
        "{conn}"
    );
}

/// `vstats-relay server add` on `state` before any relay runs; the new
/// server's id and token.
fn register(state: &Path, name: &str, location: &str) -> (String, String) {
    let output = relay_command()
        .args(["server", "add", "--name", name, "--location", location])
        .args(["--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let added: Value = serde_json::from_slice(&output.stdout).unwrap();
    let field = |k: &str| added[k].as_str().unwrap().to_owned();
    (field("id"), field("token"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts a relay on `dir`'s state and waits until it has loaded the
/// history saved beside it.
fn relay_with_history(dir: &Path, servers: usize) -> Relay {
    let relay = Relay::start(dir, &[]);
    let loaded = format!("history of {servers} server(s) loaded");
    poll(
        Duration::from_secs(5),
        "the relay loading the history",
        || relay.proc.log(),
        || relay.proc.log().contains(&loaded).then_some(()),
    );
    relay
}

/// A relay that starts with 70 s of saved history and a real agent: a
/// click on the card opens the server's detail view at `#/server/<id>`,
/// which charts the history at once and shows what the agent reports; it
/// survives a reload, and Back (history, Escape) returns to the grid.
#[test]
fn the_detail_view_charts_the_saved_history_and_shows_the_agent() {
    use vstats::protocol::{Cpu, DiskIo, LoadAverage, Memory, Metrics, Network};
    use vstats::relay::{
        History, Reading, history_file_beside as file_beside, history_to_file as to_file,
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (id, token) = register(&state, "saved", "Lyon");
    let now = unix_now();
    let mut history = History::default();
    for ago in (0..70u64).rev() {
        let sample = Metrics {
            cpu: Some(Cpu {
                usage: (ago % 50) as f64,
                ..Cpu::default()
            }),
            memory: Some(Memory {
                total: 1 << 30,
                usage_percent: 40.0 + (ago % 7) as f64,
                ..Memory::default()
            }),
            network: Some(Network {
                rx: 1000.0 * ago as f64,
                tx: 500.0,
                ..Network::default()
            }),
            disk_io: Some(DiskIo {
                read_rate: 4096.0,
                write_rate: 100.0 * ago as f64,
            }),
            load_average: Some(LoadAverage {
                one: 0.5,
                ..LoadAverage::default()
            }),
            ..Metrics::default()
        };
        history.record(now - ago, &Reading::of(&sample));
    }
    std::fs::write(file_beside(&state), to_file([(id.as_str(), &history)])).unwrap();
    let relay = relay_with_history(dir.path(), 1);
    let mut agent_command = Command::new(env!("CARGO_BIN_EXE_vstats-agent"));
    agent_command
        .args(["--server", &format!("ws://127.0.0.1:{}", relay.port)])
        .args(["--interval", "0.5"])
        .env_clear()
        .env("VSTATS_TOKEN", &token);
    let agent = Proc::spawn(agent_command);
    let logs = || {
        format!(
            "relay log:\n{}\nagent log:\n{}",
            relay.proc.log(),
            agent.log()
        )
    };

    let mut browser = Browser::launch();
    browser.navigate(&relay.url());
    poll(
        Duration::from_secs(30),
        "saved's card online with a CPU figure",
        logs,
        || {
            let card = browser.card(&id);
            (text(&card, "status") == "online" && text(&card, "cpu").ends_with('%')).then_some(())
        },
    );
    // What the agent reports, as the relay keeps it.
    let servers: Value =
        serde_json::from_str(&http_get(relay.port, "/api/servers").unwrap()).unwrap();
    let sample = &servers[0]["metrics"];
    let cores = sample["cpu"]["per_core"].as_array().unwrap().len();
    assert!(cores > 0, "{sample}");
    assert_eq!(cores as u64, sample["cpu"]["cores"].as_u64().unwrap());

    browser.click(&format!("[data-server-id=\"{id}\"]"));
    let ready = |d: &Value| {
        d["shown"] == true
            && d["grid"] == false
            && d["charts"]["CPU"].as_u64().unwrap_or(0) >= 7
            && d["cores"].as_u64().unwrap_or(0) > 0
            && !d["disks"].as_array().unwrap().is_empty()
    };
    let detail = poll_page(
        &mut browser,
        "the detail view with its charts",
        logs,
        Browser::detail,
        |d| ready(d).then(|| d.clone()),
    );
    assert_eq!(detail["hash"], format!("#/server/{id}"));
    assert_eq!(detail["name"], "saved");
    for chart in ["Memory and swap", "Network", "Disk I/O", "Load, 1 min"] {
        assert!(
            detail["charts"][chart].as_u64().unwrap() >= 7,
            "{chart}: {detail}"
        );
    }
    assert_eq!(detail["cores"], cores, "a bar per core: {detail}");
    // A row per disk, by mount; a row per interface, and the total.
    let mounts: Vec<&Value> = detail["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[0])
        .collect();
    let expected: Vec<&Value> = sample["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["mount"])
        .collect();
    assert_eq!(mounts, expected, "{detail}");
    let interfaces = detail["interfaces"].as_array().unwrap();
    let reported = sample["network"]["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), reported.len() + 1, "{detail}");
    for (row, reported) in interfaces.iter().zip(reported) {
        assert_eq!(row[0], reported["name"]);
    }
    assert_eq!(interfaces.last().unwrap()[0], "Total");
    let facts = &detail["facts"];
    assert_eq!(facts["Kernel"], sample["os"]["kernel"], "{facts}");
    assert_eq!(facts["Arch"], sample["os"]["arch"], "{facts}");
    assert_eq!(facts["Hostname"], sample["hostname"], "{facts}");
    for fact in [
        "OS",
        "Uptime",
        "Last seen",
        "Load 1 · 5 · 15",
        "Processes",
        "Sockets",
    ] {
        let value = facts[fact].as_str().unwrap_or_default();
        assert!(!value.is_empty() && value != "–", "{fact}: {facts}");
    }

    // Live samples continue the charts: a new 10 s step gets a point.
    let before = detail["charts"]["CPU"].as_u64().unwrap();
    poll(
        Duration::from_secs(25),
        "a live point on the CPU chart",
        logs,
        || (browser.detail()["charts"]["CPU"].as_u64()? > before).then_some(()),
    );

    // A reload at the hash opens the detail view again.
    browser.eval("window.beforeReload = true");
    browser.call("Page.reload", json!({}));
    poll(
        Duration::from_secs(15),
        "the detail view after a reload",
        logs,
        || {
            let fresh = browser.try_eval(
                "window.beforeReload === undefined && document.readyState === 'complete'",
            )?;
            (fresh == true).then_some(())?;
            ready(&browser.detail()).then_some(())
        },
    );

    // Odd data does not break the page: each message is taken apart
    // without throwing (`eval` fails on an exception).
    let odd = json!([
        {"type": "metrics", "timestamp": "not a time", "data": {"server_id": id, "metrics": {
            "os": null, "cpu": {"usage": "busy", "per_core": "x"}, "memory": [], "disks": [null, 5, {"mount": 3}],
            "network": {"interfaces": [null, {"name": 7}]}, "load_average": 5, "uptime": -1,
            "temperatures": [{"celsius": "hot"}, null], "sockets": {"tcp": "many"}, "processes": {}}}},
        {"type": "history", "data": {"server_id": id, "start": "x", "series": null}},
        {"type": "metrics", "data": {"server_id": "nobody", "metrics": {}}},
        {"type": "status", "data": null},
    ]);
    browser.eval(&format!("{odd}.forEach(onMessage)"));
    assert_eq!(browser.detail()["name"], "saved");

    // Back returns to the grid.
    browser.eval("history.back()");
    poll(
        Duration::from_secs(15),
        "the grid after history.back()",
        logs,
        || {
            let d = browser.try_eval("location.hash").and_then(|_| {
            browser.try_eval("getComputedStyle(document.querySelector('#grid')).display + ' ' + getComputedStyle(document.querySelector('#detail')).display + ' ' + location.hash")
        })?;
            (d == "grid none ").then_some(())
        },
    );

    // The keyboard: a focused card opens with Enter, Escape goes back.
    browser.eval(&format!(
        "document.querySelector('[data-server-id=\"{id}\"]').focus()"
    ));
    browser.key("Enter", 13);
    poll(
        Duration::from_secs(10),
        "the detail view by Enter",
        logs,
        || Some(browser.detail()).filter(ready),
    );
    browser.key("Escape", 27);
    poll(Duration::from_secs(10), "the grid by Escape", logs, || {
        let d = browser.detail();
        (d["grid"] == true && d["shown"] == false && d["hash"] == "").then_some(())
    });
}

/// A pseudo-random number in 0..1, the same for the same `x`.
fn noise(x: f64) -> f64 {
    ((x * 12.9898).sin() * 43758.5453).rem_euclid(1.0)
}

/// A day of made-up history for the pictures: a sample a minute, one every
/// 10 s in the last hour, of `made_up_values`, and no samples in `gaps`
/// (from, to: seconds ago).
fn made_up_history(
    seed: f64,
    cpu: f64,
    memory: f64,
    gaps: &[(u64, u64)],
) -> vstats::relay::History {
    use vstats::relay::{History, Reading};
    let now = unix_now();
    let mut history = History::default();
    let times = (60..1440u64).rev().map(|k| k * 60);
    for ago in times.chain((0..360u64).rev().map(|k| k * 10)) {
        if gaps.iter().any(|&(from, to)| ago <= from && ago >= to) {
            continue;
        }
        let values = made_up_values(now - ago, now, seed, cpu, memory);
        history.record(
            now - ago,
            &Reading {
                values: values.map(Some),
                ..Reading::default()
            },
        );
    }
    history
}

/// Days ago at which a made-up server's CPU spikes to nearly 100 % for 20
/// minutes, with a burst of traffic: on a year's chart only the steps'
/// maxima keep them.
const SPIKES: [f64; 10] = [0.4, 1.6, 3.3, 5.4, 11.2, 23.7, 64.0, 131.5, 208.2, 301.9];

/// Noise in 0..1 that wanders: a new value every `every` seconds, eased
/// into from the last.
fn wander(t: f64, every: f64, seed: f64) -> f64 {
    let (k, f) = ((t / every).floor(), (t / every).fract());
    let ease = f * f * (3.0 - 2.0 * f);
    noise(k + seed) * (1.0 - ease) + noise(k + 1.0 + seed) * ease
}

/// What a made-up server's agent would report at unix time `t` (`now`
/// being the time of the pictures), in the order of a `Reading`'s
/// series: waves of a day, a week and a season, noise that wanders over
/// minutes, now and then a minute's burst of traffic, and `SPIKES`.
fn made_up_values(t: u64, now: u64, seed: f64, cpu: f64, memory: f64) -> [f64; 10] {
    let days = (now - t) as f64 / 86_400.0;
    let t = t as f64;
    // sin(t / period): 13,751 s is a day's period, 96,257 s a week's.
    let wave = |period: f64| (t / period + seed).sin();
    let jitter = noise(t + seed);
    let swing = cpu.min(100.0 - cpu) * 0.5;
    let spike = SPIKES
        .iter()
        .any(|&at| days >= at && days < at + 20.0 / 1440.0);
    let busy = if spike {
        96.0 + 4.0 * jitter
    } else {
        let rhythm = 0.5 * wave(13_751.0) + 0.2 * wave(96_257.0) + wander(t, 300.0, seed) - 0.5;
        (cpu + swing * rhythm + 6.0 * (jitter - 0.5)).clamp(0.0, 100.0)
    };
    let burst = if spike || noise(t / 60.0 + seed) > 0.95 {
        2.5
    } else {
        1.0
    };
    let traffic = (0.3 + cpu / 40.0) * burst * (1.0 + 0.2 * wave(13_751.0));
    [
        busy,
        memory + 4.0 * wave(7200.0) + 3.0 * wave(2_000_000.0) + jitter,
        8.0 + 2.0 * wave(20_000.0),
        // The disk fills slowly: a year ago it was 30 % full.
        39.0 - days / 40.0,
        traffic * (700_000.0 + 600_000.0 * wander(t, 240.0, seed) + 300_000.0 * jitter),
        traffic * (200_000.0 + 200_000.0 * wander(t, 200.0, seed + 1.0) + 90_000.0 * jitter),
        120_000.0 * (0.5 + 0.5 * wave(13_751.0) + wander(t, 180.0, seed + 2.0)) + 60_000.0 * jitter,
        200_000.0
            + 80_000.0 * wave(2_000_000.0)
            + 150_000.0 * wander(t, 400.0, seed + 3.0)
            + 120_000.0 * jitter * jitter,
        busy / 25.0,
        48.0 + busy / 5.0 + 2.0 * jitter,
    ]
}

/// A made-up server, as `made_up_values` takes it: seed, CPU %, memory %.
type Shape = (f64, f64, f64);

/// A year of made-up history for the pictures of the long ranges, written
/// straight into the relay's database beside `state` (before the relay
/// starts): 31 days of quarter hours and 366 days of hours for each of
/// `servers` (id, shape, and a gap as (from, to) days ago), each step the
/// mean and the maximum of `made_up_values` within it.
fn made_up_year(state: &Path, servers: &[(&str, Shape, (f64, f64))]) {
    use vstats::relay::{HistoryTier, fill_history_db, history_db_beside};
    let db = history_db_beside(state);
    let now = unix_now();
    for (tier, days) in [(HistoryTier::Quarters, 31), (HistoryTier::Hours, 366)] {
        let step = tier.step_secs();
        let last = now - now % step;
        let steps = servers.iter().flat_map(|&(id, shape, gap)| {
            (0..days * 86_400 / step)
                .map(move |k| last - k * step)
                .filter(move |&time| {
                    let days = (now - time) as f64 / 86_400.0;
                    days > gap.0 || days < gap.1
                })
                .map(move |time| made_up_step(id, time, step, now, shape))
        });
        let written = fill_history_db(&db, tier, steps).unwrap();
        assert!(
            written as u64 >= days * 86_400 / step,
            "{tier:?}: {written}"
        );
    }
}

/// The step of `made_up_year` at `time`: the mean and the maximum of 30
/// samples of `made_up_values` (of those up to `now`), and the bytes moved.
fn made_up_step(
    server: &str,
    time: u64,
    step: u64,
    now: u64,
    (seed, cpu, memory): Shape,
) -> vstats::relay::MadeUpStep {
    use vstats::relay::{MadeUpStep, Reading};
    let mut sum = [0.0; 10];
    let mut max = [f64::MIN; 10];
    let mut n = 0.0;
    for t in (time..(time + step).min(now + 1)).step_by(step as usize / 30) {
        let values = made_up_values(t, now, seed, cpu, memory);
        for (i, v) in values.into_iter().enumerate() {
            sum[i] += v;
            max[i] = max[i].max(v);
        }
        n += 1.0;
    }
    let mean = sum.map(|s| s / n);
    let reading = |values: [f64; 10]| Reading {
        values: values.map(Some),
        ..Reading::default()
    };
    MadeUpStep {
        server: server.to_owned(),
        time,
        mean: reading(mean),
        max: reading(max),
        rx_bytes: (mean[4] * step as f64) as u64,
        tx_bytes: (mean[5] * step as f64) as u64,
    }
}

/// A full sample, as a busy server's agent would send it.
fn made_up_sample(host: &str, cpu: f64, memory: f64, cores: usize) -> Value {
    let total: u64 = 32 << 30;
    let traffic = 0.3 + cpu / 40.0;
    let (rx, tx) = (
        (traffic * 1_100_000.0).round(),
        (traffic * 300_000.0).round(),
    );
    let used = (total as f64 * memory / 100.0) as u64;
    let per_core: Vec<f64> = (0..cores)
        .map(|i| {
            ((cpu * (0.4 + 1.2 * noise(i as f64 + cpu))) * 10.0)
                .round()
                .min(1000.0)
                / 10.0
        })
        .collect();
    json!({
        "hostname": host,
        "os": {"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-28-amd64", "arch": "x86_64"},
        "cpu": {"brand": "Intel Xeon E-2388G", "cores": cores, "usage": cpu, "per_core": per_core},
        "memory": {"total": total, "used": used, "available": total - used, "usage_percent": memory,
                   "swap_total": 4u64 << 30, "swap_used": 350u64 << 20},
        "disks": [
            {"name": "/dev/nvme0n1p2", "mount": "/", "fs_type": "ext4", "total": 470u64 << 30,
             "used": 184u64 << 30, "usage_percent": 39.1},
            {"name": "/dev/md0", "mount": "/srv/data", "fs_type": "xfs", "total": 7u64 << 40,
             "used": 5u64 << 40, "usage_percent": 71.4},
        ],
        "disk_io": {"read_rate": 212_000, "write_rate": 318_000},
        "network": {"rx": rx, "tx": tx, "rx_total": 9_871_234_567_890u64, "tx_total": 2_345_678_901_234u64,
            "interfaces": [
                {"name": "eth0", "counted": true, "rx": rx, "tx": tx,
                 "rx_total": 9_871_234_567_890u64, "tx_total": 2_345_678_901_234u64},
                {"name": "docker0", "rx": 5_200, "tx": 48_000, "rx_total": 1_234_567_890u64, "tx_total": 23_456_789_012u64},
            ]},
        "uptime": 3_888_000 + (cpu * 1000.0) as u64,
        "load_average": {"one": cpu / 25.0, "five": cpu / 27.0, "fifteen": cpu / 30.0},
        "temperatures": [
            {"name": "coretemp Package id 0", "celsius": 48.0 + cpu / 5.0},
            {"name": "nvme Composite", "celsius": 41.9},
            {"name": "acpitz", "celsius": 27.8},
        ],
        "sockets": {"tcp": 214, "udp": 9},
        "processes": 187,
    })
}

/// A scripted agent that sends `sample` once; kept open until dropped.
fn fake_agent(port: u16, token: &str, sample: &Value) -> WebSocket<TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/ws/agent")
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut ws, _) = tungstenite::client(request, tcp).unwrap();
    let frame = json!({"type": "metrics", "data": sample, "timestamp": "2024-01-01T00:00:00Z"});
    ws.send(Message::text(frame.to_string())).unwrap();
    ws
}

/// Four servers with a day of history (and a year of it in the history
/// database), three online with different CPU and memory figures and one
/// offline: the grid counts them, filters by name or location, sorts each
/// way, and follows a dark color scheme; the detail view charts each range
/// (a band up to the maxima beyond the hour) and links its CSV; the
/// pictures in docs/ come from here.
#[test]
fn the_grid_filters_sorts_counts_and_follows_the_color_scheme() {
    use vstats::relay::{history_file_beside as file_beside, history_to_file as to_file};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    // name, location, CPU %, memory %, cores
    let fleet = [
        ("web-1", "Frankfurt", 35.0, 62.0, 8),
        ("db-1", "Frankfurt", 80.0, 20.0, 16),
        ("edge-tokyo", "Tokyo", 12.0, 45.0, 4),
        ("backup", "Helsinki", 3.0, 30.0, 2),
    ];
    let servers: Vec<(String, String)> = fleet
        .iter()
        .map(|(name, location, ..)| register(&state, name, location))
        .collect();
    let histories: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(i, &(name, _, cpu, memory, _))| {
            // web-1 was away twice: gaps in both charts.
            let gaps: &[(u64, u64)] = if name == "web-1" {
                &[(2100, 1850), (34_000, 30_000)]
            } else {
                &[]
            };
            made_up_history(i as f64 * 1.7, cpu, memory, gaps)
        })
        .collect();
    let saved = to_file(
        servers
            .iter()
            .zip(&histories)
            .map(|((id, _), h)| (id.as_str(), h)),
    );
    std::fs::write(file_beside(&state), saved).unwrap();
    // And a year in the database, where web-1 was away for half a day
    // 17 days ago.
    let year: Vec<_> = fleet
        .iter()
        .zip(&servers)
        .enumerate()
        .map(|(i, (&(name, _, cpu, memory, _), (id, _)))| {
            let gap = if name == "web-1" {
                (17.5, 17.0)
            } else {
                (0.0, 0.0)
            };
            (id.as_str(), (i as f64 * 1.7, cpu, memory), gap)
        })
        .collect();
    made_up_year(&state, &year);
    let relay = relay_with_history(dir.path(), fleet.len());
    // The relay imports the history file into its database (the day's
    // minutes), on the database's thread.
    poll(
        Duration::from_secs(10),
        "the history file imported",
        || relay.proc.log(),
        || {
            let imported = format!("of {} server(s) imported", fleet.len());
            relay.proc.log().contains(&imported).then_some(())
        },
    );

    let mut agents = Vec::new();
    for ((name, _, cpu, memory, cores), (_, token)) in fleet.iter().zip(&servers) {
        agents.push(fake_agent(
            relay.port,
            token,
            &made_up_sample(name, *cpu, *memory, *cores),
        ));
    }
    // backup reported once, then went away.
    let mut backup = agents.pop().unwrap();
    let mut browser = Browser::launch();
    browser.navigate(&relay.url());
    poll(
        Duration::from_secs(10),
        "every card with its CPU figure",
        || relay.proc.log(),
        || {
            servers
                .iter()
                .all(|(id, _)| text(&browser.card(id), "cpu").ends_with('%'))
                .then_some(())
        },
    );
    backup.close(None).unwrap();
    let _ = backup.flush();
    let summary = poll(
        Duration::from_secs(10),
        "the counts",
        || relay.proc.log(),
        || {
            let summary = browser.eval("document.querySelector('#summary').textContent");
            (summary.as_str()?.contains("1 offline")).then_some(summary)
        },
    );
    assert_eq!(summary, "4 servers · 3 online · 1 offline");

    // Sorting, each way; registry order by default.
    let order = |browser: &mut Browser, sort: &str, expected: [&str; 4]| {
        browser.eval(&format!(
            "(() => {{ const s = document.querySelector('#sort'); s.value = '{sort}'; \
             s.dispatchEvent(new Event('change')); }})()"
        ));
        poll(
            Duration::from_secs(5),
            &format!("sorted by {sort}"),
            String::new,
            || (browser.shown_cards() == json!(expected)).then_some(()),
        );
    };
    order(
        &mut browser,
        "added",
        ["web-1", "db-1", "edge-tokyo", "backup"],
    );
    order(
        &mut browser,
        "name",
        ["backup", "db-1", "edge-tokyo", "web-1"],
    );
    order(
        &mut browser,
        "cpu",
        ["db-1", "web-1", "edge-tokyo", "backup"],
    );
    order(
        &mut browser,
        "memory",
        ["web-1", "edge-tokyo", "backup", "db-1"],
    );
    order(
        &mut browser,
        "offline",
        ["backup", "web-1", "db-1", "edge-tokyo"],
    );
    order(
        &mut browser,
        "added",
        ["web-1", "db-1", "edge-tokyo", "backup"],
    );

    // Filtering by what one types: location or name, any case.
    let filter = |browser: &mut Browser, typed: &str| {
        browser.eval(
            "(() => { const f = document.querySelector('#filter'); f.value = ''; f.focus(); })()",
        );
        if !typed.is_empty() {
            browser.call("Input.insertText", json!({"text": typed}));
        } else {
            browser.eval("document.querySelector('#filter').dispatchEvent(new Event('input'))");
        }
        let shown = browser.shown_cards();
        let nomatch = browser.eval("!document.querySelector('#nomatch').hidden");
        (shown, nomatch)
    };
    assert_eq!(
        filter(&mut browser, "frankfurt"),
        (json!(["web-1", "db-1"]), json!(false))
    );
    assert_eq!(
        filter(&mut browser, "TOK"),
        (json!(["edge-tokyo"]), json!(false))
    );
    assert_eq!(filter(&mut browser, "nowhere"), (json!([]), json!(true)));
    assert_eq!(
        filter(&mut browser, ""),
        (
            json!(["web-1", "db-1", "edge-tokyo", "backup"]),
            json!(false)
        )
    );
    browser.eval("document.activeElement.blur()");

    // The color scheme: light by default, dark when the system asks.
    let light = browser.background();
    assert!(light.iter().all(|&c| c > 200), "{light:?}");
    browser.screenshot("dashboard.png");
    browser.color_scheme("dark");
    let dark = browser.background();
    assert!(dark.iter().all(|&c| c < 50), "{dark:?}");
    browser.screenshot("dashboard-dark.png");

    // web-1's detail view, in both schemes.
    browser.color_scheme("light");
    browser.click(&format!("[data-server-id=\"{}\"]", servers[0].0));
    let detail = poll_page(
        &mut browser,
        "web-1's detail view",
        || relay.proc.log(),
        Browser::detail,
        |d| (d["charts"].as_object()?.len() == 7 && d["cores"] == 8).then(|| d.clone()),
    );
    assert_eq!(detail["name"], "web-1");
    assert_eq!(detail["disks"].as_array().unwrap().len(), 2, "{detail}");
    // The hour's 10 s steps keep no maximum: no band.
    assert_eq!(detail["bands"], 0, "{detail}");
    // The pointer on a chart: the legend reads that step's time and values.
    let at = browser.eval(
        "(() => { const r = document.querySelector('.chart svg').getBoundingClientRect(); \
         return [r.x + r.width * 0.6, r.y + r.height / 2]; })()",
    );
    browser.call(
        "Input.dispatchMouseEvent",
        json!({"type": "mouseMoved", "x": at[0], "y": at[1]}),
    );
    let readout = browser.eval("document.querySelector('.chart .lg').textContent");
    let readout = readout.as_str().unwrap();
    assert!(readout.contains(':') && readout.contains('%'), "{readout}");
    browser.screenshot_page("detail.png");
    browser.color_scheme("dark");
    assert!(browser.background().iter().all(|&c| c < 50));
    browser.screenshot_page("detail-dark.png");

    // 24 hours: the day's 720 steps of 2 minutes, from the minutes the
    // relay imported, with web-1's gaps.
    browser.color_scheme("light");
    browser.click("[data-range=\"24h\"]");
    poll_page(
        &mut browser,
        "the 24 h charts",
        || relay.proc.log(),
        Browser::detail,
        |d| (d["charts"]["CPU"].as_u64()? > 650).then_some(()),
    );
    browser.screenshot("detail-24h.png");

    // The long ranges, from the database: 672 quarter hours, 960 steps of
    // 45 minutes, 973 of 9 hours; each chart with a band up to the maxima,
    // where the spikes show.
    for (range, points, shot) in [
        ("7d", 640, Some("detail-7d.png")),
        ("30d", 900, None),
        ("1y", 940, Some("detail-1y.png")),
    ] {
        browser.click(&format!("[data-range=\"{range}\"]"));
        let detail = poll_page(
            &mut browser,
            &format!("the {range} charts"),
            || relay.proc.log(),
            Browser::detail,
            |d| (d["charts"]["CPU"].as_u64()? > points).then(|| d.clone()),
        );
        assert!(detail["bands"].as_u64().unwrap() >= 7, "{range}: {detail}");
        // The CSV link downloads what the charts show.
        let link = browser.eval("document.querySelector('#d-csv').href");
        let link = link.as_str().unwrap();
        let path = &link[link.find("/api/").unwrap()..];
        assert!(
            path.ends_with(&format!("/history?range={range}&format=csv")),
            "{link}"
        );
        let csv = http_get(relay.port, path).unwrap();
        assert!(
            csv.starts_with("time,unix,cpu,cpu_max,"),
            "{path}: {csv:.200}"
        );
        assert!(csv.lines().count() > points as usize, "{path}");
        // The pointer's readout: the step's date and time, mean and max.
        let at = browser.eval(
            "(() => { const r = document.querySelector('.chart svg').getBoundingClientRect(); \
             return [r.x + r.width * 0.7, r.y + r.height / 2]; })()",
        );
        browser.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": at[0], "y": at[1]}),
        );
        let readout = browser.eval("document.querySelector('.chart .lg').textContent");
        let readout = readout.as_str().unwrap();
        assert!(
            readout.contains(" max ") && readout.contains(':'),
            "{readout}"
        );
        if let Some(shot) = shot {
            browser.screenshot_page(shot);
        }
    }
    browser.color_scheme("dark");
    browser.screenshot_page("detail-1y-dark.png");
    browser.color_scheme("light");

    // Phone width: nothing wider than the screen but the tables' own
    // scrolling.
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": true}),
    );
    let width = poll(
        Duration::from_secs(5),
        "the detail view at 360 px",
        String::new,
        || {
            let layout = browser.eval("[innerWidth, document.documentElement.scrollWidth]");
            (layout[0] == 360).then_some(layout[1].as_u64()?)
        },
    );
    assert!(width <= 360, "{width}");
    browser.screenshot("detail-phone.png");
    drop(agents);
}
