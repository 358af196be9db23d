//! Fuzz targets, one function each, over any bytes: `fuzz/` (cargo-fuzz,
//! nightly) drives them with libFuzzer, and `tests/fuzz_corpora.rs` replays
//! the committed corpora and regressions through them on stable. Not API.
//!
//! Each must never panic, whatever the input: a panic is a bug, found.
//! Where a property holds for every input (a state file written back reads
//! back the same), it is asserted, so breaking it is a crash too.
//!
//! Nothing here touches the file system or the network, and the relay's
//! clocks, monotonic and wall, are moved by the harness (through the
//! in-memory shell, `relay::sim`), not by the time an input takes, so an
//! input takes the same path every time it is run.
//!
//! Built only for cargo-fuzz (`cfg(fuzzing)`) and for the integration
//! tests, which turn on the `fuzzing` feature: not in a release binary.

use crate::agent::collect::{cpu, diskio, disks, load, memory, network, os, processes};
use crate::agent::collect::{sockets, thermal, uptime};
use crate::relay::conn::{Socket, Stop};
use crate::relay::engine::{After, Effect, Engine, RegistryRead};
use crate::relay::http::{self, Parsed};
use crate::relay::registry::Registry;
use crate::relay::rollup::{self, Retention, Source};
use crate::relay::shared::Inbound;
use crate::relay::sim;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{Duration, Instant};

/// The two readings of a collector that keeps state (rates, usage): the
/// text before the first `0xFF` byte and the text after it, or the whole
/// text twice. (`0xFF` is never in UTF-8 text, so seeds made of real files
/// split where they were joined.)
pub const SPLIT: u8 = 0xFF;

fn two(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == SPLIT) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    }
}

/// What a file of `/proc`, `/sys` or `/etc` is fed to, by its first byte
/// (`proc_files`), in this order, which `scripts/fuzz.sh` follows when it
/// turns fixture files into seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProcFile {
    /// `proc/stat`, two readings: usage.
    Stat,
    /// `proc/cpuinfo`, after a device-tree `model` and `0xFF` if there is
    /// one.
    Cpuinfo,
    Meminfo,
    /// `proc/diskstats`, two readings: rates.
    Diskstats,
    /// `proc/net/dev`, two readings: rates.
    NetDev,
    /// `proc/net/sockstat`, then `0xFF` and `sockstat6`.
    Sockstat,
    Loadavg,
    Uptime,
    /// `proc/sys/kernel/hostname` (or `osrelease`).
    Hostname,
    /// `etc/os-release` or `etc/openwrt_release`.
    OsRelease,
    Mounts,
    /// A `thermal_zone*/temp` or `hwmon*/temp*_input` value.
    Temperature,
    /// Names in `class/thermal`, `class/hwmon` and `proc` (one a line).
    DirNames,
}

impl ProcFile {
    pub const ALL: [ProcFile; 13] = [
        ProcFile::Stat,
        ProcFile::Cpuinfo,
        ProcFile::Meminfo,
        ProcFile::Diskstats,
        ProcFile::NetDev,
        ProcFile::Sockstat,
        ProcFile::Loadavg,
        ProcFile::Uptime,
        ProcFile::Hostname,
        ProcFile::OsRelease,
        ProcFile::Mounts,
        ProcFile::Temperature,
        ProcFile::DirNames,
    ];
}

/// `proc_files`: the first byte picks a parser of a `/proc`, `/sys` or
/// `/etc` file ([`ProcFile`], modulo their number), the rest is the file.
pub fn proc_files(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let file = ProcFile::ALL[usize::from(selector) % ProcFile::ALL.len()];
    // What the agent reads as text it first checks is UTF-8.
    let utf8 = |bytes| std::str::from_utf8(bytes).ok();
    match file {
        ProcFile::Stat => {
            let mut collector = cpu::CpuCollector::detached();
            let (first, second) = two(text);
            for reading in [first, second] {
                if let Some(ticks) = cpu::parse_stat(reading) {
                    let cpu = collector.account(ticks);
                    for usage in std::iter::once(cpu.usage).chain(cpu.per_core) {
                        assert!((0.0..=100.0).contains(&usage), "usage {usage}");
                    }
                }
            }
        }
        ProcFile::Cpuinfo => {
            if let Some(whole) = utf8(text) {
                cpu::parse_brand(whole, None);
            }
            if let (Some(model), Some(cpuinfo)) = (utf8(two(text).0), utf8(two(text).1)) {
                cpu::parse_brand(cpuinfo, Some(model));
            }
        }
        ProcFile::Meminfo => {
            if let Some(memory) = memory::parse(text) {
                assert_eq!(memory.used + memory.available, memory.total);
                assert!(memory.swap_used <= memory.swap_total);
            }
        }
        ProcFile::Diskstats => {
            let mut collector = diskio::DiskIoCollector::detached();
            let (first, second) = two(text);
            collector.account(first, 1000);
            let io = collector.account(second, 1000);
            assert!(io.read_rate >= 0.0 && io.write_rate >= 0.0);
        }
        ProcFile::NetDev => {
            let mut collector = network::NetworkCollector::detached();
            let (first, second) = two(text);
            collector.account(first, 1000);
            let net = collector.account(second, 1000);
            assert!(net.rx >= 0.0 && net.tx >= 0.0);
        }
        ProcFile::Sockstat => {
            let (v4, v6) = two(text);
            if let Some(v4) = sockets::parse(v4) {
                sockets::both(v4, sockets::parse(v6));
            }
        }
        ProcFile::Loadavg => {
            load::parse(text);
        }
        ProcFile::Uptime => {
            uptime::parse(text);
        }
        ProcFile::Hostname => {
            utf8(text).and_then(os::parse_hostname);
        }
        ProcFile::OsRelease => {
            if let Some(text) = utf8(text) {
                os::parse_os_release(text);
                os::parse_openwrt_release(text);
            }
        }
        ProcFile::Mounts => {
            if let Some(text) = utf8(text) {
                disks::parse_mounts(text);
            }
        }
        ProcFile::Temperature => {
            if let Some(celsius) = utf8(text).and_then(thermal::parse_millidegrees) {
                assert!((-50.0..=150.0).contains(&celsius), "{celsius} °C");
            }
        }
        ProcFile::DirNames => {
            let Some(text) = utf8(text) else { return };
            for name in text.lines() {
                processes::is_pid(name.as_bytes());
                thermal::numbered_index(name, "thermal_zone", "");
                thermal::numbered_index(name, "temp", "_input");
            }
        }
    }
}

/// `http_head`: a request head as it arrives, and all the relay derives
/// from one: its route, credentials, origin check, upgrade response, and
/// a history request's span, plan and (empty) answer.
pub fn http_head(data: &[u8]) {
    let Parsed::Complete(head, len) = http::parse_head(data) else {
        return;
    };
    assert!(len <= data.len());
    http::route(&head);
    http::dist_file(&head.path);
    head.token();
    head.query_param("viewer");
    head.origin_allowed(&[]);
    head.origin_allowed(&["https://dash.example".to_owned()]);
    head.host_allowed(&[]);
    head.host_allowed(&["relay.lan".to_owned()]);
    history_request(&head);
    if let Ok(response) = http::upgrade_response(&head) {
        // A 101 head that the client can parse, ending where it should.
        let status = status_of(&response);
        assert_eq!(
            status,
            Some(101),
            "{:?}",
            String::from_utf8_lossy(&response)
        );
    }
}

/// What a history request's parameters lead to, at a fixed time: a plan
/// of at most [`rollup::MAX_POINTS`] points, answered (with no steps) in
/// bounded work.
fn history_request(head: &http::Head) {
    const NOW: u64 = 1_800_000_000;
    let asked = rollup::Asked::from_query(|name| head.query_param(name));
    let retention = Retention::default();
    let Ok(query) = rollup::parse_query(asked.params(), NOW, retention.longest()) else {
        return;
    };
    assert!(query.from <= query.to && query.to <= NOW, "{query:?}");
    let plan = rollup::plan(&query, NOW, &retention);
    assert!(plan.step > 0 && plan.first <= plan.last, "{plan:?}");
    assert!(
        plan.points() as u64 <= rollup::MAX_POINTS,
        "{query:?} {plan:?}"
    );
    let points = match plan.source {
        Source::Memory => rollup::memory_points(None, &plan),
        Source::Database(_) => rollup::group(&plan, []),
    };
    assert_eq!(points.means.len(), plan.points());
    if query.csv {
        rollup::to_csv(&points);
    } else {
        rollup::to_json("0123456789ab", None, query.range, &points);
    }
}

/// A token whose SHA-256 is in [`STATE`].
const TOKEN: &str = "fuzz-token";
/// A state file with one server, whose agent authenticates with [`TOKEN`].
const STATE: &str = r#"{"version": 1, "servers": [{"id": "0123456789ab", "name": "fuzz",
  "location": "", "created": "2024-01-01T00:00:00Z",
  "token_sha256": "33cc09ba35314d19e32ed9a5a30fca56eebbfab5faec7247fd0403cd26e155b5"}]}"#;

/// Connection ids of the [`Core`] harness.
const AGENT: u64 = 1;
const DASHBOARD: u64 = 2;
const PEEK: u64 = 3;

/// A relay core with one registered server, its agent and a dashboard
/// connected through real upgrade heads, on a clock of its own.
struct Core {
    engine: Engine,
    now: Instant,
    agent_open: bool,
    next_id: u64,
    /// Messages the dashboard took.
    delivered: u64,
}

impl Core {
    fn new() -> Core {
        let registry = Registry::from_json(STATE.as_bytes()).expect("the harness's state file");
        let args = [
            "--state",
            "/nonexistent/vstats-fuzz.json",
            "--log-level",
            "off",
            "--allowed-host",
            "relay",
        ];
        let config = sim::config(&args);
        let now = Instant::now();
        let mut relay = Core {
            engine: sim::engine(config, registry, 16, now),
            now,
            agent_open: true,
            next_id: PEEK,
            delivered: 0,
        };
        let agent = format!(
            "GET /ws/agent HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\n{UPGRADE}"
        );
        relay.upgrade(AGENT, &agent, After::Agent);
        relay.upgrade(
            DASHBOARD,
            &format!("GET /ws HTTP/1.1\r\nHost: relay\r\n{UPGRADE}"),
            After::Dashboard,
        );
        relay
    }

    /// Admits connection `id` with this request head, which must be
    /// answered `101` and become `after`.
    fn upgrade(&mut self, id: u64, head: &str, after: After) {
        let Parsed::Complete(head, _) = http::parse_head(head.as_bytes()) else {
            panic!("the harness's head {head:?}");
        };
        let peer = "192.0.2.1:4000".parse().unwrap();
        sim::open(&mut self.engine, id, peer, head, self.now);
        let effects = self.engine.poll_effects();
        let answered = effects.iter().any(
            |effect| matches!(effect, Effect::Respond { id: to, after: was, .. } if *to == id && *was == after),
        );
        assert!(answered, "{effects:?}");
        self.engine.handle_responded(id, self.now);
        self.settle::<Feed>(None);
    }

    /// Carries out the engine's effects: on the agent's socket when there
    /// is one, and by emptying the dashboard's queue, every message of
    /// which must be JSON.
    fn settle<S: Read + Write>(&mut self, mut socket: Option<&mut Socket<S>>) {
        loop {
            let effects = self.engine.poll_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Close {
                        id: AGENT,
                        code,
                        reason,
                    } => {
                        if let Some(socket) = socket.as_deref_mut() {
                            let _ = socket.close(code, reason);
                        }
                    }
                    Effect::Ping { id: AGENT } => {
                        if let Some(socket) = socket.as_deref_mut() {
                            let _ = socket.ping();
                        }
                    }
                    Effect::Drop { id: AGENT, .. } => self.agent_open = false,
                    Effect::Wake { id } => self.drain(id),
                    Effect::ReadRegistry { .. } => {
                        self.engine
                            .handle_registry_read(RegistryRead::Unchanged, self.now);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Empties a dashboard's queue as a reader that keeps up would.
    fn drain(&mut self, id: u64) {
        let messages = sim::drain(&mut self.engine, id, self.now);
        for message in &messages {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(message) {
                panic!("dashboard message is not JSON ({e}): {message}");
            }
            // A sample (rebuilt from patches too) within the sample limit,
            // in its envelope: never larger than what an agent may send.
            assert!(
                message.len() <= crate::protocol::MAX_SAMPLE_BYTES + 256,
                "a dashboard message of {} bytes",
                message.len()
            );
        }
        self.delivered += messages.len() as u64;
    }

    /// The clock moves on by `ms` and the engine's timers run.
    fn tick<S: Read + Write>(&mut self, ms: u64, socket: Option<&mut Socket<S>>) {
        self.now += Duration::from_millis(ms);
        self.engine.handle_timeout(self.now);
        self.settle(socket);
    }

    /// `/metrics` and `/api/servers` render what the agent sent.
    fn peek(&mut self) {
        for path in ["/metrics", "/api/servers", "/healthz"] {
            let id = self.next_id;
            self.next_id += 1;
            let head = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
            let Parsed::Complete(head, _) = http::parse_head(head.as_bytes()) else {
                panic!("the harness's head");
            };
            let peer = "192.0.2.1:4001".parse().unwrap();
            sim::open(&mut self.engine, id, peer, head, self.now);
            for effect in self.engine.poll_effects() {
                if let Effect::Respond { bytes, .. } = effect {
                    assert_eq!(status_of(&bytes), Some(200), "{path}");
                }
            }
            self.engine.handle_responded(id, self.now);
            self.settle::<Feed>(None);
        }
    }
}

/// The status of a whole response head, as a client would read it.
fn status_of(response: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(response) {
        Ok(httparse::Status::Complete(_)) => parsed.code,
        _ => None,
    }
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A client's side of a socket in memory: gives `input` a chunk at a time,
/// each followed by `WouldBlock`, then the end of the stream; takes and
/// drops whatever is written.
pub struct Feed<'a> {
    input: &'a [u8],
    chunk: usize,
    blocked: bool,
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocked {
            self.blocked = false;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.chunk.min(buf.len()).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        self.blocked = n > 0;
        Ok(n)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunk sizes the raw mode of `relay_frames` reads in.
const CHUNKS: [usize; 6] = [1, 7, 64, 509, 4096, 1 << 20];

/// `relay_frames`: an agent's side of a WebSocket, through the relay core
/// with a dashboard watching. The first byte picks the mode:
///
/// - even: the rest is the raw client-to-server byte stream, read by the
///   relay's [`Socket`] (tungstenite) in chunks of `CHUNKS[(byte >> 1) % 6]`
///   bytes and handed to the engine frame by frame;
/// - odd: the rest is text frames, split at `0xFF` (never in UTF-8), each
///   handed to the engine as read (a piece that is not UTF-8 counts as a
///   binary frame): the agent protocol, sample checks and patches without
///   WebSocket framing in the way. `(byte >> 1)` milliseconds pass between
///   two frames, so the rate limit passes or holds back samples.
///
/// Every message the dashboard gets must be JSON, and `/metrics` and
/// `/api/servers` must answer `200` afterwards.
pub fn relay_frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut relay = Core::new();
    if mode & 1 == 0 {
        relay.raw(rest, CHUNKS[usize::from(mode >> 1) % CHUNKS.len()]);
    } else {
        relay.text(rest, u64::from(mode >> 1));
    }
    relay.peek();
}

impl Core {
    /// The agent's bytes through the relay's socket, `chunk` bytes a read.
    fn raw(&mut self, input: &[u8], chunk: usize) {
        let feed = Feed {
            input,
            chunk,
            blocked: false,
        };
        let mut socket = Socket::new(feed, Vec::new());
        // Each turn takes at least a chunk or a frame, so this ends.
        while self.agent_open {
            let (engine, now) = (&mut self.engine, self.now);
            let read = socket.read(|frame| engine.handle_frame(AGENT, frame, now));
            match read {
                Ok(_) => {}
                Err(Stop::Fault(fault)) => self.engine.handle_fault(AGENT, fault, now),
                Err(Stop::Ended(end)) => {
                    self.engine.handle_ended(AGENT, end, now);
                    self.agent_open = false;
                }
            }
            self.settle(Some(&mut socket));
            let _ = socket.flush();
            self.tick(50, Some(&mut socket));
        }
    }

    /// The agent's frames, split at `0xFF`, `step` milliseconds apart.
    fn text(&mut self, input: &[u8], step: u64) {
        for piece in input.split(|&b| b == SPLIT) {
            let frame = match std::str::from_utf8(piece) {
                Ok(text) => Inbound::Text(text),
                Err(_) => Inbound::Binary,
            };
            if !self.agent_open {
                break;
            }
            self.engine.handle_frame(AGENT, frame, self.now);
            self.settle::<Feed>(None);
            self.tick(step, None::<&mut Socket<Feed>>);
        }
    }
}

/// `registry`: a state file's text. One that loads is written back and must
/// load as the same registry; the relay core takes it in as a reload, with a
/// dashboard watching, and renders it on `/metrics` and `/api/servers`.
pub fn registry(data: &[u8]) {
    let Ok(loaded) = Registry::from_json(data) else {
        return;
    };
    let written = loaded.to_json().expect("a registry serializes");
    let again = Registry::from_json(&written).expect("a written registry loads");
    assert!(
        again.servers() == loaded.servers(),
        "changed in a round trip"
    );
    loaded.authenticate(TOKEN);
    let mut relay = Core::new();
    relay
        .engine
        .handle_registry_read(RegistryRead::Loaded(loaded), relay.now);
    relay.settle::<Feed>(None);
    relay.peek();
}

/// `agent_config`: the agent's command line and environment. Up to the
/// first `\0\0`, arguments split at `\0`; after it, `NAME=value` variables
/// split at `\0`. `--token-file` and `VSTATS_TOKEN_FILE` are left out: they
/// would read a file. A configuration that is accepted must give a URL the
/// agent can make its upgrade request of, and that parses back to the same
/// endpoint.
pub fn agent_config(data: &[u8]) {
    let (args, env) = command_line(data);
    let args: Vec<OsString> = args
        .into_iter()
        .filter(|arg| !arg.as_bytes().starts_with(b"--token-file"))
        .collect();
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name != "VSTATS_TOKEN_FILE")
        .collect();
    let env = environment(&env);
    let Ok(crate::agent::config::Command::Run(_, relay)) = crate::agent::config::parse(args, env)
    else {
        return;
    };
    let url = relay.endpoint.to_string();
    match crate::agent::config::Endpoint::parse(&url) {
        Ok(again) if again == relay.endpoint => {}
        other => panic!("{url} parses back as {other:?}"),
    }
    if let Err(e) = crate::agent::session::upgrade_request(&relay) {
        panic!("accepted, but no request can be made of {url}: {e}");
    }
}

/// Arguments up to the first `\0\0`, split at `\0`; after it,
/// `NAME=value` variables split at `\0`.
fn command_line(data: &[u8]) -> (Vec<OsString>, Vec<(String, String)>) {
    let (args, env) = match data.windows(2).position(|w| w == b"\0\0") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let args = args
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    let env = env
        .split(|&b| b == 0)
        .filter_map(|pair| {
            let pair = String::from_utf8_lossy(pair);
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    (args, env)
}

/// The variables as a lookup: the last of a name wins.
fn environment(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    |name: &str| {
        env.iter()
            .rev()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.clone())
    }
}

/// `relay_config`: the relay's command line and environment, as
/// `agent_config` reads them, and its alerts file (the whole input). An
/// accepted rule prints back to text that parses to the same rule. A
/// template that is valid JSON with each placeholder as an `x` (valid
/// only inside a string) renders valid JSON whatever the values (here: the other arguments, so the
/// fuzzer controls them), and the default body is always valid JSON.
pub fn relay_config(data: &[u8]) {
    use crate::relay::alerts::{self, Rule};
    use crate::relay::config::{self, Command};
    use crate::relay::notice::{Event, Notice, Target};
    let _ = alerts::from_file(data);
    let (args, env) = command_line(data);
    let texts: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let config = match config::parse(args, environment(&env)) {
        Ok(Command::Serve(config) | Command::NotifyTest(config)) => config,
        _ => return,
    };
    for rule in &config.alert_rules {
        match Rule::parse(rule.text()) {
            Ok(again) if again == *rule => {}
            other => panic!("{} parses back as {other:?}", rule.text()),
        }
    }
    let value = |i: usize| texts.get(i).cloned().unwrap_or_default();
    let notice = Notice {
        event: Event::Threshold,
        server_id: value(0),
        server_name: value(1),
        server_location: value(2),
        at: std::time::SystemTime::UNIX_EPOCH,
        message: value(3),
        rule: Some(value(4)),
        value: Some(f64::from(data.len() as u32) / 7.0),
        resolved: true,
    };
    for target in &config.notify {
        let _ = target.redacted();
        let (content_type, body) = target.body(&notice);
        if content_type == "application/json" {
            let _ = serde_json::from_slice::<serde_json::Value>(&body);
        }
    }
    let default = Target::parse("http://relay.example/", None).expect("a plain URL parses");
    let (_, body) = default.body(&notice);
    serde_json::from_slice::<serde_json::Value>(&body).expect("the default body is JSON");
    for pair in texts.windows(2) {
        let [flag, template] = pair else { continue };
        if flag != "--notify-template" {
            continue;
        }
        let Ok(target) = Target::parse("http://relay.example/", Some(template)) else {
            continue;
        };
        let blank = placeholders_as_x(template);
        let (content_type, body) = target.body(&notice);
        if content_type == "application/json"
            && serde_json::from_str::<serde_json::Value>(&blank).is_ok()
        {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                panic!(
                    "{template:?} is JSON, but not once rendered: {e}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}

/// A template with every `{{...}}` as `x`.
fn placeholders_as_x(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        out.push('x');
        match rest[at..].find("}}") {
            Some(end) => rest = &rest[at + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"type":"metrics","data":{"hostname":"h","cpu":{"usage":1}}}"#;
    const PATCH: &str = r#"{"type":"patch","data":{"elapsed_ms":1000,"cpu":{"usage":2}}}"#;

    /// A client's text frame, masked with a zero key (so it reads as is).
    fn masked(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    // The harness must reach the dashboard, or the fuzzer would only ever
    // see the frames refused.
    #[test]
    fn text_frames_reach_the_dashboard() {
        let mut relay = Core::new();
        let before = relay.delivered;
        relay.text(
            &[SAMPLE.as_bytes(), &[SPLIT], PATCH.as_bytes()].concat(),
            1000,
        );
        assert_eq!(relay.delivered - before, 2);
    }

    #[test]
    fn raw_frames_reach_the_dashboard_in_any_chunks() {
        for chunk in CHUNKS {
            let mut relay = Core::new();
            let before = relay.delivered;
            relay.raw(&[masked(SAMPLE), masked(PATCH)].concat(), chunk);
            assert!(relay.delivered - before >= 2, "{chunk}");
            assert!(!relay.agent_open);
        }
    }
}
