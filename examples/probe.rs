//! Hostile peers against a real `vstats-relay` process, driven by
//! `scripts/bench-hostile.sh`: each `--attack` reproduces one way a peer
//! can hurt the relay and measures what it costs.
//!
//! The probe starts the relay itself (`taskset -c 1`, the probe on CPU 0,
//! when the machine has both), on a free loopback port with a fresh state
//! file in a temporary folder, registers the servers the attack needs with
//! `vstats-relay server add` (before the relay starts, so it loads them at
//! once), runs the attack, and stops the relay with SIGTERM. Throughout the
//! attack's window it asks `GET /healthz` every 20 ms (a fresh connection
//! each time, timed from connect to EOF, 30 s at most) and samples the
//! relay's RSS (`/proc/PID/status`) and the kernel's TCP memory
//! (`/proc/net/sockstat`) every 100 ms; the relay's CPU time
//! (`/proc/PID/stat`) is read at the window's ends.
//!
//! Attacks (docs/PROTOCOL.md has the wire; every step has a timeout, and a
//! relay that refuses, closes or dies ends a step, reported, not the run):
//!
//! - `patch-oversize`: three reading dashboards; one agent sends a small
//!   full sample, then one `patch` whose `network.interfaces` is 4096 `{}`
//!   (a list of another length replaces the stored one, so the rebuilt
//!   sample is far past the 64 KiB sample limit). Then: the largest
//!   message a dashboard got, how many are still open, and whether a new
//!   dashboard still gets its snapshot (`hello` and the server's metrics).
//! - `patch-growth`: after the same 4096-entry patch, `--count` (1657)
//!   patches of the same length, each naming 12 entries (advancing by 12,
//!   wrapping) with a 4000-byte name, every frame under 64 KiB. Then one
//!   `GET /api/servers` (timed, sized) and the relay's CPU per patch.
//! - `compat-preauth`: `--count` (2000) connections upgraded on
//!   `/compat/ws/agent`, each announcing a 1 MiB text frame and writing
//!   900 KiB of it, none authenticated; held 3 s.
//! - `compat-interfaces`: one vStats agent, authenticated, sends 5 samples a
//!   second apart with 3600 interfaces of 230-byte names that differ only
//!   in their last 5 bytes; the relay's CPU per sample.
//! - `metrics-slow`: relay with a viewer token; `--count` (2000) agents
//!   connect and send one realistic sample each; then `--clients` (600)
//!   connections ask for `/metrics` and never read, for 10 s; then one
//!   client reads `/metrics` with the token, and one asks without it.
//!
//! The run prints a summary and, as its last line, every figure as one JSON
//! object (with `--json`, the summary goes to stderr and stdout holds only
//! the JSON line).
//!
//! Usage: cargo run --release --example probe -- --relay-bin PATH
//!        --attack NAME [--count N] [--sources N] [--clients N] [--extra-relay-arg ARG]...
//!        [--json] [--show-log]

use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, Message, WebSocket};

const USAGE: &str = "\
probe: hostile peers against a real vstats-relay, measured

Usage: probe --relay-bin PATH --attack NAME [options]

  --relay-bin PATH        the vstats-relay binary to start and attack
  --attack NAME           patch-oversize, patch-growth, compat-preauth,
                          compat-interfaces or metrics-slow
  --count N               patch-growth: patches (default 1657);
                          compat-preauth: sockets (default 2000);
                          compat-interfaces: interfaces (default 3600);
                          metrics-slow: servers and agents (default 2000)
  --sources N             compat-preauth: spread the sockets over N loopback
                          addresses (127.0.1.1 on), so that a budget per
                          address does not hide the one in all (default 1)
  --clients N             metrics-slow: /metrics readers that never read
                          (default 600)
  --extra-relay-arg ARG   one more argument for the relay (repeatable)
  --json                  stdout holds only the JSON line (summary: stderr)
  --show-log              print the relay's last 20 log lines (stderr)
";

const ATTACKS: [&str; 5] = [
    "patch-oversize",
    "patch-growth",
    "compat-preauth",
    "compat-interfaces",
    "metrics-slow",
];

/// The viewer token metrics-slow starts the relay with.
const VIEWER_TOKEN: &str = "probe-viewer-token";
/// Between two /healthz requests (start to start).
const HEALTHZ_EVERY: Duration = Duration::from_millis(20);
/// A /healthz that takes longer counts as this.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two RSS and sockstat samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Clock ticks of /proc/PID/stat (USER_HZ, 100 on Linux).
const TICK_MS: u64 = 10;
/// The entries of a list a patch may carry (the sample limit).
const LIST: usize = 4096;
/// The relay's frame limit off /compat/ws/agent.
const FRAME_LIMIT: usize = 64 << 10;
/// The relay's frame limit on /compat/ws/agent.
const COMPAT_FRAME_LIMIT: usize = 1 << 20;
/// A full sample as an agent sends it first on a connection.
const SMALL_SAMPLE: &str = r#"{"hostname":"h","network":{"interfaces":[{"name":"eth0","counted":true,"rx":0,"tx":0,"rx_total":1,"tx_total":1}]}}"#;

struct Args {
    relay_bin: PathBuf,
    attack: String,
    json: bool,
    count: Option<usize>,
    clients: usize,
    /// compat-preauth: loopback source addresses to spread the sockets over.
    sources: usize,
    extra: Vec<String>,
    show_log: bool,
}

fn parse_args() -> Result<Args, String> {
    use lexopt::prelude::*;
    let fail = |e: lexopt::Error| e.to_string();
    let mut parser = lexopt::Parser::from_env();
    let (mut relay_bin, mut attack) = (None, None);
    let mut args = Args {
        relay_bin: PathBuf::new(),
        attack: String::new(),
        json: false,
        count: None,
        clients: 600,
        sources: 1,
        extra: Vec::new(),
        show_log: false,
    };
    while let Some(arg) = parser.next().map_err(fail)? {
        match arg {
            Long("relay-bin") => relay_bin = Some(PathBuf::from(parser.value().map_err(fail)?)),
            Long("attack") => attack = Some(parser.value().map_err(fail)?.string().map_err(fail)?),
            Long("count") => {
                args.count = Some(parser.value().map_err(fail)?.parse().map_err(fail)?)
            }
            Long("sources") => {
                args.sources = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("clients") => {
                args.clients = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("extra-relay-arg") => args
                .extra
                .push(parser.value().map_err(fail)?.string().map_err(fail)?),
            Long("json") => args.json = true,
            Long("show-log") => args.show_log = true,
            Long("help") | Short('h') => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    args.relay_bin = relay_bin.ok_or("--relay-bin is required")?;
    args.attack = attack.ok_or("--attack is required")?;
    if !ATTACKS.contains(&args.attack.as_str()) {
        return Err(format!(
            "unknown attack {:?}; one of: {}",
            args.attack,
            ATTACKS.join(", ")
        ));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("probe: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_nofile();
    // Before any thread starts, so that every thread of the probe (and the
    // registry CLI it runs) inherits CPU 0.
    let pinned = pin_to_cpu0();
    match run(&args, pinned) {
        Ok(report) => {
            report.print(args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: {}: {e}", args.attack);
            ExitCode::FAILURE
        }
    }
}

/// Thousands of sockets need descriptors: the soft limit goes to the hard.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            eprintln!("probe: could not raise the open-files limit from {soft} to {hard}");
        }
    }
}

/// The probe on CPU 0 and the relay on CPU 1, when this process may use
/// both; otherwise neither is pinned (and the summary says so).
fn pin_to_cpu0() -> bool {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let me = Pid::from_raw(0);
    let Ok(allowed) = sched_getaffinity(me) else {
        return false;
    };
    if !(allowed.is_set(0).unwrap_or(false) && allowed.is_set(1).unwrap_or(false)) {
        eprintln!("probe: CPUs 0 and 1 are not both available: nothing pinned");
        return false;
    }
    let mut cpu0 = CpuSet::new();
    if cpu0.set(0).is_err() || sched_setaffinity(me, &cpu0).is_err() {
        eprintln!("probe: could not pin the probe to CPU 0: nothing pinned");
        return false;
    }
    true
}

fn run(args: &Args, pinned: bool) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let state = dir.path().join("state.json");
    let servers = match args.attack.as_str() {
        "compat-preauth" => 0,
        "metrics-slow" => args.count.unwrap_or(2000),
        _ => 1,
    };
    let started = Instant::now();
    let servers = register(&args.relay_bin, &state, servers)?;
    if servers.len() > 1 {
        progress(format_args!(
            "registered {} servers in {:.1} s",
            servers.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    let mut extra = args.extra.clone();
    let viewer = if args.attack == "metrics-slow" {
        extra.extend(["--viewer-token".to_owned(), VIEWER_TOKEN.to_owned()]);
        Some(VIEWER_TOKEN.to_owned())
    } else {
        None
    };
    let mut relay = Relay::start(&args.relay_bin, &state, &extra, pinned, viewer)?;
    progress(format_args!(
        "relay pid {} on {} ({})",
        relay.pid,
        relay.addr,
        if pinned {
            "relay on CPU 1, probe on CPU 0"
        } else {
            "not pinned"
        }
    ));
    let mut report = Report::new(&args.attack, &args.relay_bin);
    let outcome = match args.attack.as_str() {
        "patch-oversize" => patch_oversize(&relay, &servers[0], &mut report),
        "patch-growth" => {
            patch_growth(&relay, &servers[0], args.count.unwrap_or(1657), &mut report)
        }
        "compat-preauth" => compat_preauth(
            &relay,
            args.count.unwrap_or(2000),
            args.sources.max(1),
            &mut report,
        ),
        "compat-interfaces" => {
            compat_interfaces(&relay, &servers[0], args.count.unwrap_or(3600), &mut report)
        }
        _ => metrics_slow(&relay, &servers, args.clients, &mut report),
    };
    let alive = relay.alive();
    let exit = relay.stop();
    report.tail("relay_alive_at_end", json!(alive));
    report.tail("relay_exit", json!(exit));
    report.tail("relay_log_lines", json!(relay.log_lines()));
    report.tail("pinned", json!(pinned));
    if !alive || args.show_log {
        let died = if alive {
            ""
        } else {
            "the relay died during the attack; "
        };
        progress(format_args!(
            "{died}the relay's last log lines ({exit}):\n{}",
            relay.log_tail()
        ));
    }
    outcome?;
    Ok(report)
}

fn progress(what: std::fmt::Arguments) {
    eprintln!("probe: {what}");
}

// ---------------------------------------------------------------------------
// The relay process

/// A server in the registry: its id and agent token.
struct Server {
    id: String,
    token: String,
}

/// `RELAY server add --name probe-N --json --state STATE`, `n` times, on 4
/// threads (the CLI takes the registry's lock, so they queue).
fn register(bin: &Path, state: &Path, n: usize) -> Result<Vec<Server>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let found: Arc<Mutex<BTreeMap<usize, Server>>> = Arc::default();
    let workers: Vec<JoinHandle<Result<(), String>>> = (0..4.min(n))
        .map(|_| {
            let (bin, state) = (bin.to_owned(), state.to_owned());
            let (next, found) = (next.clone(), found.clone());
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let server = add_server(&bin, &state, &format!("probe-{i}"))?;
                    lock(&found).insert(i, server);
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a registering thread failed".to_owned())??;
    }
    let found = std::mem::take(&mut *lock(&found));
    Ok(found.into_values().collect())
}

fn add_server(bin: &Path, state: &Path, name: &str) -> Result<Server, String> {
    let output = Command::new(bin)
        .args(["server", "add", "--name", name, "--json", "--state"])
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "server add failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let added: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("server add printed no JSON: {e}"))?;
    match (added["id"].as_str(), added["token"].as_str()) {
        (Some(id), Some(token)) => Ok(Server {
            id: id.to_owned(),
            token: token.to_owned(),
        }),
        _ => Err(format!("server add printed no id and token: {added}")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Relay {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    /// The relay's viewer token, sent with every request that may need it.
    viewer: Option<String>,
    log_lines: Arc<AtomicU64>,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    exit: Option<String>,
}

impl Relay {
    /// Starts `bin` (under `taskset -c 1` if `pin`) on a free loopback port
    /// and waits for its `listening on` line. Its stderr is read to the end
    /// by a thread of its own, so the pipe never fills.
    fn start(
        bin: &Path,
        state: &Path,
        extra: &[String],
        pin: bool,
        viewer: Option<String>,
    ) -> Result<Relay, String> {
        let mut command = if pin {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", "1"]).arg(bin);
            taskset
        } else {
            Command::new(bin)
        };
        command
            .args(["--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let log_lines = Arc::new(AtomicU64::new(0));
        let log_tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        {
            let (log_lines, log_tail) = (log_lines.clone(), log_tail.clone());
            thread::spawn(move || drain_log(stderr, &log_lines, &log_tail, tx));
        }
        // taskset execs the relay: the child's pid is the relay's.
        let pid = i32::try_from(child.id()).map_err(|_| "pid out of range")?;
        let mut relay = Relay {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            viewer,
            log_lines,
            log_tail,
            exit: None,
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => {
                relay.addr = addr;
                Ok(relay)
            }
            Err(_) => {
                let exit = relay.stop();
                Err(format!(
                    "the relay did not start ({exit}):\n{}",
                    relay.log_tail()
                ))
            }
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, and SIGKILL if it has not exited 10 s later; how it ended.
    fn stop(&mut self) -> String {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = match self.child.try_wait() {
            Ok(Some(status)) => format!("died before SIGTERM: {}", describe(status)),
            _ => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) => break describe(status),
                        Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                        _ => {
                            let _ = self.child.kill();
                            let _ = self.child.wait();
                            break "killed: SIGTERM not obeyed within 10 s".to_owned();
                        }
                    }
                }
            }
        };
        self.exit = Some(exit.clone());
        exit
    }

    fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }

    fn log_tail(&self) -> String {
        lock(&self.log_tail)
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect()
    }

    /// VmRSS in KiB; `None` once the relay is gone.
    fn rss_kib(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    /// utime + stime, in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(self.pid)
    }

    /// `GET path` with the viewer token if the relay has one.
    fn get(&self, path: &str, timeout: Duration) -> Result<HttpAnswer, String> {
        let auth = match &self.viewer {
            Some(token) => format!("Authorization: Bearer {token}\r\n"),
            None => String::new(),
        };
        http_get(self.addr, path, &auth, timeout)
    }

    /// `vstats_relay_malformed_frames_total` from `GET /metrics`.
    fn malformed_total(&self) -> Option<u64> {
        let answer = self.get("/metrics", Duration::from_secs(10)).ok()?;
        if answer.status != 200 {
            return None;
        }
        String::from_utf8_lossy(&answer.body).lines().find_map(|l| {
            l.strip_prefix("vstats_relay_malformed_frames_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
        })
    }

    /// Waits until the relay's CPU time stops growing (less than 20 ms in
    /// 500 ms), at most `limit`: the work a burst queued is done.
    fn settle_cpu(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = self.cpu_ticks();
        while Instant::now() < deadline {
            sleep(Duration::from_millis(500));
            let now = self.cpu_ticks();
            match (last, now) {
                (Some(a), Some(b)) if b.saturating_sub(a) * TICK_MS >= 20 => last = now,
                _ => return,
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// Reads the relay's stderr to the end: counts lines, keeps the last 20,
/// and sends the address of the `listening on ADDR` line.
fn drain_log(
    stderr: impl Read,
    lines: &AtomicU64,
    tail: &Mutex<VecDeque<String>>,
    tx: mpsc::Sender<SocketAddr>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut tx = Some(tx);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        lines.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                let _ = tx.send(addr);
            }
        }
        let mut tail = lock(tail);
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(text);
    }
}

fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields count from
    // its end. After it come field 3 (state) onwards, so 14 and 15 (utime,
    // stime) are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's TCP memory (`/proc/net/sockstat`, `TCP: ... mem N`, pages
/// of 4096 B), in KiB.
fn kernel_tcp_mem_kib() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem")?;
    words.next()?.parse::<u64>().ok().map(|pages| pages * 4)
}

// ---------------------------------------------------------------------------
// Measuring a window: /healthz, RSS, CPU, kernel TCP memory

struct Monitor {
    stop: Arc<AtomicBool>,
    healthz: JoinHandle<Vec<Probe>>,
    sampler: JoinHandle<(Option<u64>, Option<u64>)>,
    started: Instant,
    rss_before: Option<u64>,
    cpu_before: Option<u64>,
    tcp_before: Option<u64>,
}

/// One /healthz request.
struct Probe {
    ms: f64,
    outcome: ProbeOutcome,
}

#[derive(PartialEq)]
enum ProbeOutcome {
    Ok,
    /// No answer within [`HEALTHZ_TIMEOUT`]: recorded as that long.
    TimedOut,
    /// Refused, reset, or an answer other than 200.
    Failed,
}

/// What a window measured.
struct Window {
    seconds: f64,
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
    cpu_ms: Option<u64>,
    tcp_before: Option<u64>,
    tcp_peak: Option<u64>,
    probes: Vec<Probe>,
}

impl Monitor {
    fn start(relay: &Relay) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_before = relay.rss_kib();
        let tcp_before = kernel_tcp_mem_kib();
        let healthz = {
            let (stop, addr) = (stop.clone(), relay.addr);
            thread::spawn(move || {
                let mut probes = Vec::new();
                let trace = std::env::var_os("VSTATS_PROBE_TRACE").is_some();
                let window = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let probe = healthz_once(addr);
                    if trace && probe.ms > 50.0 {
                        eprintln!(
                            "probe: /healthz took {:.1} ms at {:.2} s",
                            probe.ms,
                            start.duration_since(window).as_secs_f64()
                        );
                    }
                    probes.push(probe);
                    if let Some(left) = HEALTHZ_EVERY.checked_sub(start.elapsed()) {
                        sleep(left);
                    }
                }
                probes
            })
        };
        let sampler = {
            let (stop, pid) = (stop.clone(), relay.pid);
            thread::spawn(move || {
                let (mut rss_peak, mut tcp_peak) = (None::<u64>, None::<u64>);
                loop {
                    if let Some(rss) = rss_of(pid) {
                        rss_peak = Some(rss_peak.map_or(rss, |p| p.max(rss)));
                    }
                    if let Some(tcp) = kernel_tcp_mem_kib() {
                        tcp_peak = Some(tcp_peak.map_or(tcp, |p| p.max(tcp)));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return (rss_peak, tcp_peak);
                    }
                    sleep(SAMPLE_EVERY);
                }
            })
        };
        Monitor {
            stop,
            healthz,
            sampler,
            started: Instant::now(),
            rss_before,
            cpu_before: relay.cpu_ticks(),
            tcp_before,
        }
    }

    /// Ends the window (waiting for a /healthz request in flight).
    fn finish(self, relay: &Relay) -> Window {
        let cpu_after = relay.cpu_ticks();
        let seconds = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        let (rss_peak, tcp_peak) = self.sampler.join().unwrap_or((None, None));
        let probes = self.healthz.join().unwrap_or_default();
        let max = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Window {
            seconds,
            rss_before: self.rss_before,
            rss_peak: max(rss_peak, self.rss_before),
            cpu_ms: match (self.cpu_before, cpu_after) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) * TICK_MS),
                _ => None,
            },
            tcp_before: self.tcp_before,
            tcp_peak: max(tcp_peak, self.tcp_before),
            probes,
        }
    }
}

fn rss_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn healthz_once(addr: SocketAddr) -> Probe {
    let start = Instant::now();
    let answer = http_get(addr, "/healthz", "", HEALTHZ_TIMEOUT);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok(answer) if answer.status == 200 => Probe {
            ms,
            outcome: ProbeOutcome::Ok,
        },
        Err(e) if e.contains("timed out") => Probe {
            ms: HEALTHZ_TIMEOUT.as_secs_f64() * 1000.0,
            outcome: ProbeOutcome::TimedOut,
        },
        _ => Probe {
            ms,
            outcome: ProbeOutcome::Failed,
        },
    }
}

// ---------------------------------------------------------------------------
// HTTP and WebSocket clients

struct HttpAnswer {
    status: u16,
    status_line: String,
    body: Vec<u8>,
    elapsed: Duration,
}

/// One `GET path` on a fresh connection, read to EOF, all within `timeout`
/// (an error saying "timed out" past it). `headers`: extra header lines,
/// each ending in CRLF.
fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| io_text(&e))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| io_text(&e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_text(&e))?;
    let mut response = Vec::new();
    read_to_eof(&mut stream, deadline, &mut response).map_err(|e| io_text(&e))?;
    let elapsed = start.elapsed();
    let (head, body) = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (&response[..end], response[end + 4..].to_vec()),
        None => (&response[..], Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let status_line = head.lines().next().unwrap_or("").to_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {:?}", truncate(&head, 80)))?;
    Ok(HttpAnswer {
        status,
        status_line,
        body,
        elapsed,
    })
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads until EOF, or a `TimedOut` error at `deadline`.
fn read_to_eof(stream: &mut TcpStream, deadline: Instant, into: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = vec![0; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

type Ws = WebSocket<TcpStream>;

/// A WebSocket client: `bearer` goes in an `Authorization` header.
/// `Err`: the HTTP status of a refused upgrade, or what else failed.
fn ws_connect(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    read_buffer: usize,
) -> Result<Ws, String> {
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let timeouts = stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))));
    timeouts.map_err(|e| e.to_string())?;
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    // Dashboards must take whatever the relay sends, however large.
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(None)
        .max_frame_size(None);
    match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(format!("refused {}", response.status().as_u16()))
        }
        Err(HandshakeError::Failure(e)) => Err(ws_error(&e)),
        Err(HandshakeError::Interrupted(_)) => Err("upgrade timed out".to_owned()),
    }
}

/// A read or write error, shortly.
fn ws_error(e: &tungstenite::Error) -> String {
    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
    match e {
        tungstenite::Error::Protocol(ResetWithoutClosingHandshake) => {
            "reset, no close frame".into()
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed".into(),
        tungstenite::Error::Io(e) => io_text(e),
        e => e.to_string(),
    }
}

fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// How an agent's connection ended, as far as the probe saw.
enum End {
    /// The relay sent a close frame, with this code.
    Close(Option<u16>),
    /// The upgrade was refused, or failed.
    Refused(String),
    /// The connection failed otherwise (reset, EOF, a write error).
    Gone(String),
}

impl End {
    fn code(end: &Option<End>) -> Value {
        match end {
            Some(End::Close(Some(code))) => json!(code),
            _ => Value::Null,
        }
    }

    fn text(end: &Option<End>) -> String {
        match end {
            None => "open".to_owned(),
            Some(End::Close(Some(code))) => format!("close {code}"),
            Some(End::Close(None)) => "close without a code".to_owned(),
            Some(End::Refused(why)) => format!("upgrade failed: {why}"),
            Some(End::Gone(why)) => format!("connection lost: {why}"),
        }
    }
}

/// A scripted agent: sends, and notices when the relay ends the
/// connection, without ever blocking on a read.
struct Agent {
    ws: Option<Ws>,
    end: Option<End>,
}

impl Agent {
    fn connect(relay: &Relay, path: &str, token: Option<&str>) -> Agent {
        match ws_connect(relay.addr, path, token, 4096) {
            Ok(ws) => Agent {
                ws: Some(ws),
                end: None,
            },
            Err(why) => Agent {
                ws: None,
                end: Some(End::Refused(why)),
            },
        }
    }

    /// Sends one text frame; `false` (and the end recorded) if the
    /// connection is over.
    fn send(&mut self, text: String) -> bool {
        let Some(ws) = self.ws.as_mut().filter(|_| self.end.is_none()) else {
            return false;
        };
        match ws.send(Message::text(text)) {
            Ok(()) => true,
            Err(e) => {
                // A close frame may be waiting behind the failed write.
                let why = ws_error(&e);
                self.end = Some(poll_end(ws, Duration::from_millis(500)).unwrap_or(End::Gone(why)));
                false
            }
        }
    }

    /// Looks for a close (or EOF) for up to `wait`; `true` if the
    /// connection is over.
    fn check(&mut self, wait: Duration) -> bool {
        if self.end.is_none() {
            if let Some(ws) = self.ws.as_mut() {
                self.end = poll_end(ws, wait);
            }
        }
        self.end.is_some()
    }
}

/// Reads what the relay sent within `wait` (pings are answered by
/// tungstenite on the way): `Some` once the connection is over.
fn poll_end(ws: &mut Ws, wait: Duration) -> Option<End> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if ws.get_mut().set_read_timeout(Some(left)).is_err() {
            return Some(End::Gone("socket gone".to_owned()));
        }
        match ws.read() {
            Ok(Message::Close(frame)) => return Some(End::Close(frame.map(|f| f.code.into()))),
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Some(End::Gone("closed".to_owned()));
            }
            Err(e) => return Some(End::Gone(ws_error(&e))),
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// What one reading dashboard saw, shared with its thread.
#[derive(Default)]
struct Watch {
    open: AtomicBool,
    messages: AtomicU64,
    largest: AtomicUsize,
    end: Mutex<Option<End>>,
}

/// A dashboard that reads continuously on a thread of its own until
/// `stop`.
struct Dashboard {
    watch: Arc<Watch>,
    thread: Option<JoinHandle<()>>,
}

impl Dashboard {
    fn spawn(relay: &Relay, stop: &Arc<AtomicBool>) -> Dashboard {
        let watch = Arc::new(Watch::default());
        let mut ws = match ws_connect(relay.addr, "/ws", relay.viewer.as_deref(), 128 << 10) {
            Ok(ws) => ws,
            Err(why) => {
                *lock(&watch.end) = Some(End::Refused(why));
                return Dashboard {
                    watch,
                    thread: None,
                };
            }
        };
        watch.open.store(true, Ordering::Relaxed);
        let (stop, seen) = (stop.clone(), watch.clone());
        let thread = thread::spawn(move || {
            if ws
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(200)))
                .is_err()
            {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                let end = match ws.read() {
                    Ok(Message::Text(text)) => {
                        seen.messages.fetch_add(1, Ordering::Relaxed);
                        seen.largest.fetch_max(text.len(), Ordering::Relaxed);
                        continue;
                    }
                    Ok(Message::Close(frame)) => End::Close(frame.map(|f| f.code.into())),
                    Ok(_) => continue,
                    Err(e) if timed_out(&e) => continue,
                    Err(e) => End::Gone(ws_error(&e)),
                };
                seen.open.store(false, Ordering::Relaxed);
                *lock(&seen.end) = Some(end);
                return;
            }
        });
        Dashboard {
            watch,
            thread: Some(thread),
        }
    }

    fn open(&self) -> bool {
        self.watch.open.load(Ordering::Relaxed)
    }

    fn largest(&self) -> usize {
        self.watch.largest.load(Ordering::Relaxed)
    }

    fn messages(&self) -> u64 {
        self.watch.messages.load(Ordering::Relaxed)
    }

    fn end(&self) -> String {
        End::text(&lock(&self.watch.end))
    }

    /// Waits for the thread (after `stop` was set).
    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A new dashboard's snapshot, within `wait`: `hello`, then the metrics of
/// server `id`. Returns whether both came, and what happened.
fn snapshot_check(relay: &Relay, id: &str, wait: Duration) -> (bool, String) {
    let mut ws = match ws_connect(relay.addr, "/ws", relay.viewer.as_deref(), 128 << 10) {
        Ok(ws) => ws,
        Err(why) => return (false, format!("upgrade failed: {why}")),
    };
    let deadline = Instant::now() + wait;
    let mut hello = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let got = if hello { "hello only" } else { "nothing" };
            return (false, format!("{got} within {wait:?}"));
        }
        if ws.get_mut().set_read_timeout(Some(left)).is_err() {
            return (false, "socket gone".to_owned());
        }
        let after = if hello { "after hello" } else { "before hello" };
        match ws.read() {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                match frame["type"].as_str() {
                    Some("hello") => hello = true,
                    Some("metrics") if hello && frame["data"]["server_id"] == id => {
                        return (true, format!("hello and metrics ({} bytes)", text.len()));
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map_or("no code".to_owned(), |f| u16::from(f.code).to_string());
                return (false, format!("close ({code}) {after}"));
            }
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            ) => return (false, format!("EOF {after}")),
            Err(e) => return (false, format!("error {after}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Frames

fn full_frame(data: &str) -> String {
    format!(r#"{{"type":"metrics","data":{data},"timestamp":"2026-01-01T00:00:00Z"}}"#)
}

/// A `patch` whose `network.interfaces` is `LIST` entries, `entry(i)` each.
fn interfaces_patch(entry: impl Fn(usize) -> &'static str) -> String {
    let mut frame = String::with_capacity(FRAME_LIMIT);
    frame.push_str(r#"{"type":"patch","data":{"elapsed_ms":1000,"network":{"interfaces":["#);
    for i in 0..LIST {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(entry(i));
    }
    frame.push_str("]}}}");
    frame
}

/// A realistic sample of about 1 KB for server `i`.
fn realistic_sample(i: usize) -> String {
    let f = i as f64;
    let gib = 1u64 << 30;
    json!({
        "timestamp": "2026-01-01T00:00:00Z",
        "hostname": format!("probe-host-{i}"),
        "os": {"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "x86_64"},
        "cpu": {
            "brand": "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
            "cores": 4,
            "usage": (f * 7.3) % 100.0,
            "per_core": [12.5, 3.1, 40.2, 7.7]
        },
        "memory": {
            "total": 8 * gib,
            "used": 3 * gib + i as u64 * 4096,
            "available": 5 * gib - i as u64 * 4096,
            "usage_percent": 37.5,
            "swap_total": gib,
            "swap_used": 0
        },
        "disks": [{
            "name": "/dev/sda1", "mount": "/", "fs_type": "ext4",
            "total": 100 * gib, "used": 42 * gib, "usage_percent": 42.0
        }],
        "disk_io": {"read_rate": 4096, "write_rate": 81920},
        "network": {
            "rx": 1200 + i, "tx": 800 + i, "rx_total": 123_456_789u64 + i as u64, "tx_total": 98_765_432u64,
            "interfaces": [
                {"name": "eth0", "counted": true, "rx": 1200 + i, "tx": 800 + i,
                 "rx_total": 123_456_789u64 + i as u64, "tx_total": 98_765_432u64},
                {"name": "docker0", "counted": false, "rx": 0, "tx": 0, "rx_total": 5000, "tx_total": 7000}
            ]
        },
        "uptime": 864_000 + i,
        "load_average": {"one": 0.42, "five": 0.37, "fifteen": 0.31},
        "temperatures": [{"name": "coretemp Package id 0", "celsius": 48.0}],
        "sockets": {"tcp": 23, "udp": 4},
        "processes": 151
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// The report

struct Report {
    attack: String,
    relay_bin: String,
    common: Vec<(&'static str, Value)>,
    specific: Vec<(&'static str, Value)>,
    tail: Vec<(&'static str, Value)>,
}

impl Report {
    fn new(attack: &str, relay_bin: &Path) -> Report {
        Report {
            attack: attack.to_owned(),
            relay_bin: relay_bin.display().to_string(),
            common: Vec::new(),
            specific: Vec::new(),
            tail: Vec::new(),
        }
    }

    fn add(&mut self, key: &'static str, value: Value) {
        self.specific.push((key, value));
    }

    /// How the attacking agent's connection ended, and the relay's count
    /// of malformed frames: the last figures of each agent attack.
    fn agent_ended(&mut self, agent: &Agent, malformed: Option<u64>) {
        self.add("agent_closed_with", End::code(&agent.end));
        self.add("agent_end", json!(End::text(&agent.end)));
        self.add("malformed_total", json!(malformed));
    }

    fn tail(&mut self, key: &'static str, value: Value) {
        self.tail.push((key, value));
    }

    /// The figures every attack has: its window, and the RSS after it.
    fn window(&mut self, window: Window, rss_after: Option<u64>) {
        let mut ms: Vec<f64> = window.probes.iter().map(|p| p.ms).collect();
        ms.sort_by(f64::total_cmp);
        let median = (!ms.is_empty()).then(|| ms[ms.len() / 2]);
        let count = |o: ProbeOutcome| window.probes.iter().filter(|p| p.outcome == o).count();
        let tenth = |v: f64| (v * 10.0).round() / 10.0;
        self.common = vec![
            ("rss_before_kib", json!(window.rss_before)),
            ("rss_peak_kib", json!(window.rss_peak)),
            ("rss_after_kib", json!(rss_after)),
            ("healthz_median_ms", json!(median.map(tenth))),
            ("healthz_max_ms", json!(ms.last().copied().map(tenth))),
            ("healthz_count", json!(ms.len())),
            ("healthz_timeouts", json!(count(ProbeOutcome::TimedOut))),
            ("healthz_failures", json!(count(ProbeOutcome::Failed))),
            ("cpu_ms", json!(window.cpu_ms)),
            ("window_s", json!(tenth(window.seconds))),
            ("kernel_tcp_mem_before_kib", json!(window.tcp_before)),
            ("kernel_tcp_mem_peak_kib", json!(window.tcp_peak)),
        ];
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut all = vec![
            ("attack", json!(self.attack)),
            ("relay_bin", json!(self.relay_bin)),
        ];
        all.extend(self.common.iter().cloned());
        all.extend(self.specific.iter().cloned());
        all.extend(self.tail.iter().cloned());
        all
    }

    fn print(&self, json_only: bool) {
        let fields = self.fields();
        let mut summary = format!("{} against {}\n", self.attack, self.relay_bin);
        for (key, value) in &fields[2..] {
            let shown = match value {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let _ = writeln!(summary, "  {key:<36} {shown}");
        }
        let mut line = String::from("{");
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{}:{value}", json!(key));
        }
        line.push('}');
        if json_only {
            eprint!("{summary}");
        } else {
            print!("{summary}");
        }
        println!("{line}");
    }
}

/// The relay's RSS a second after the attack's connections closed.
fn rss_after(relay: &Relay) -> Option<u64> {
    sleep(Duration::from_secs(1));
    relay.rss_kib()
}

// ---------------------------------------------------------------------------
// Attacks

/// One patch makes the stored sample 4096 interfaces, far past 64 KiB.
fn patch_oversize(relay: &Relay, server: &Server, report: &mut Report) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut dashboards: Vec<Dashboard> = (0..3).map(|_| Dashboard::spawn(relay, &stop)).collect();
    sleep(Duration::from_millis(300)); // their snapshots
    let monitor = Monitor::start(relay);
    let mut agent = Agent::connect(relay, "/ws/agent", Some(&server.token));
    agent.send(full_frame(SMALL_SAMPLE));
    sleep(Duration::from_millis(300));
    let patch = interfaces_patch(|_| "{}");
    let patch_bytes = patch.len();
    let patch_sent = agent.send(patch);
    progress(format_args!(
        "sent the patch ({patch_bytes} bytes): {}",
        End::text(&agent.end)
    ));
    sleep(Duration::from_secs(3));
    let open_after = dashboards.iter().filter(|d| d.open()).count();
    let largest = dashboards.iter().map(Dashboard::largest).max();
    let (snapshot_ok, snapshot) = snapshot_check(relay, &server.id, Duration::from_secs(5));
    agent.check(Duration::from_millis(200));
    let malformed = relay.malformed_total();
    let window = monitor.finish(relay);
    stop.store(true, Ordering::Relaxed);
    dashboards.iter_mut().for_each(Dashboard::join);
    let ends: Vec<String> = dashboards.iter().map(Dashboard::end).collect();
    let messages: Vec<u64> = dashboards.iter().map(Dashboard::messages).collect();
    drop(agent.ws.take());
    report.window(window, rss_after(relay));
    report.add("patch_bytes", json!(patch_bytes));
    report.add("patch_sent", json!(patch_sent));
    report.add("largest_dashboard_message_bytes", json!(largest));
    report.add("dashboard_messages", json!(messages));
    report.add("dashboards_open_after", json!(open_after));
    report.add("dashboard_ends", json!(ends));
    report.add("new_dashboard_snapshot_ok", json!(snapshot_ok));
    report.add("new_dashboard_saw", json!(snapshot));
    report.agent_ended(&agent, malformed);
    Ok(())
}

/// Patches of a 4096-entry list, each naming 12 entries with 4000 bytes.
fn patch_growth(
    relay: &Relay,
    server: &Server,
    count: usize,
    report: &mut Report,
) -> Result<(), String> {
    const NAMED: usize = 12;
    let named: &'static str = format!(r#"{{"name":"{}"}}"#, "x".repeat(4000)).leak();
    let stop = Arc::new(AtomicBool::new(false));
    let mut dashboard = Dashboard::spawn(relay, &stop);
    sleep(Duration::from_millis(300));
    let mut agent = Agent::connect(relay, "/ws/agent", Some(&server.token));
    agent.send(full_frame(SMALL_SAMPLE));
    sleep(Duration::from_millis(300));
    let monitor = Monitor::start(relay);
    agent.send(interfaces_patch(|_| "{}"));
    let started = Instant::now();
    // Sending stops here whatever the count: the attack ends within a minute.
    let deadline = started + Duration::from_secs(40);
    let (mut sent, mut largest_frame) = (0, 0);
    for i in 0..count {
        if Instant::now() >= deadline {
            progress(format_args!("stopped sending after 40 s"));
            break;
        }
        let start = (i * NAMED) % LIST;
        let frame = interfaces_patch(|p| {
            if (p + LIST - start) % LIST < NAMED {
                named
            } else {
                "{}"
            }
        });
        if frame.len() > FRAME_LIMIT {
            return Err(format!("patch {i} is {} bytes, past 64 KiB", frame.len()));
        }
        largest_frame = largest_frame.max(frame.len());
        if !agent.send(frame) {
            break;
        }
        sent += 1;
        if i % 25 == 24 && agent.check(Duration::ZERO) {
            break;
        }
    }
    let send_s = started.elapsed().as_secs_f64();
    progress(format_args!(
        "sent {sent} patches in {send_s:.1} s: {}",
        End::text(&agent.end)
    ));
    let api = relay.get("/api/servers", Duration::from_secs(30));
    relay.settle_cpu(Duration::from_secs(15));
    agent.check(Duration::from_millis(500));
    let malformed = relay.malformed_total();
    let window = monitor.finish(relay);
    stop.store(true, Ordering::Relaxed);
    dashboard.join();
    drop(agent.ws.take());
    let cpu_per_patch = window
        .cpu_ms
        .map(|ms| (ms as f64 / sent.max(1) as f64 * 100.0).round() / 100.0);
    report.window(window, rss_after(relay));
    report.add("patches_sent", json!(sent));
    report.add("patch_frame_bytes", json!(largest_frame));
    report.add("send_s", json!((send_s * 10.0).round() / 10.0));
    report.add("cpu_ms_per_patch", json!(cpu_per_patch));
    match api {
        Ok(answer) => {
            report.add("api_servers_status", json!(answer.status));
            report.add("api_servers_ms", json!(answer.elapsed.as_millis()));
            report.add("api_servers_bytes", json!(answer.body.len()));
        }
        Err(e) => {
            report.add("api_servers_status", json!(e));
            report.add("api_servers_ms", Value::Null);
            report.add("api_servers_bytes", Value::Null);
        }
    }
    report.add(
        "largest_dashboard_message_bytes",
        json!(dashboard.largest()),
    );
    report.add("dashboard_messages", json!(dashboard.messages()));
    report.add("dashboard_end", json!(dashboard.end()));
    report.agent_ended(&agent, malformed);
    Ok(())
}

/// What one unauthenticated /compat/ws/agent connection came to.
enum Preauth {
    /// Upgraded: the socket, and how much of the frame it took.
    Upgraded(TcpStream, usize),
    /// Answered with another status.
    Refused(u16),
    /// No connection, or no answer.
    Failed,
}

/// Connections that announce a 1 MiB frame before authenticating.
fn compat_preauth(
    relay: &Relay,
    count: usize,
    sources: usize,
    report: &mut Report,
) -> Result<(), String> {
    const PAYLOAD: usize = 900 << 10;
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(COMPAT_FRAME_LIMIT as u64).to_be_bytes());
    frame.extend_from_slice(&KEY);
    frame.extend((0..PAYLOAD).map(|i| b'x' ^ KEY[i % 4]));
    let request = "GET /compat/ws/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let monitor = Monitor::start(relay);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let mut held = Vec::with_capacity(count);
    let (mut attempted, mut failed, mut accepted) = (0, 0, 0usize);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..count {
        if Instant::now() >= deadline {
            progress(format_args!("stopped opening after 20 s"));
            break;
        }
        attempted += 1;
        // 127.0.1.1, 127.0.1.2, ...: each its own address to the relay.
        let source = (sources > 1).then(|| {
            let n = (i % sources) as u32;
            std::net::Ipv4Addr::from(u32::from_be_bytes([127, 0, 1, 0]) + 1 + n)
        });
        match preauth_one(relay.addr, source, request.as_bytes(), &frame) {
            Preauth::Upgraded(socket, bytes) => {
                accepted += bytes;
                held.push(socket);
            }
            Preauth::Refused(status) => *refused.entry(status.to_string()).or_default() += 1,
            Preauth::Failed => failed += 1,
        }
    }
    let seconds_to_open = started.elapsed().as_secs_f64();
    progress(format_args!(
        "{} upgraded, {accepted} bytes taken, in {seconds_to_open:.1} s",
        held.len()
    ));
    sleep(Duration::from_secs(3));
    // Which of the held sockets the relay has closed or written to (a close
    // frame) by now.
    let (mut closed, mut answered) = (0, 0);
    for socket in &held {
        let mut byte = [0u8; 1];
        if socket.set_nonblocking(true).is_err() {
            continue;
        }
        match socket.peek(&mut byte) {
            Ok(0) => closed += 1,
            Ok(_) => answered += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    let window = monitor.finish(relay);
    let upgraded = held.len();
    drop(held);
    report.window(window, rss_after(relay));
    report.add("attempted", json!(attempted));
    report.add("upgraded", json!(upgraded));
    report.add("refused", json!(refused.values().sum::<usize>()));
    report.add("refused_by_status", json!(refused));
    report.add("failed", json!(failed));
    report.add("bytes_accepted_total", json!(accepted));
    report.add(
        "seconds_to_open",
        json!((seconds_to_open * 100.0).round() / 100.0),
    );
    report.add("held_closed_by_relay", json!(closed));
    report.add("held_with_data_from_relay", json!(answered));
    Ok(())
}

fn preauth_one(
    addr: SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    request: &[u8],
    frame: &[u8],
) -> Preauth {
    let wait = Duration::from_secs(2);
    let connected = match source {
        None => TcpStream::connect_timeout(&addr, wait).ok(),
        Some(source) => connect_from(source, addr),
    };
    let Some(mut socket) = connected else {
        return Preauth::Failed;
    };
    if socket.set_write_timeout(Some(wait)).is_err()
        || socket.write_all(request).is_err()
        || socket.set_read_timeout(Some(wait)).is_err()
    {
        return Preauth::Failed;
    }
    // The head, byte by byte so that nothing after it is taken.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match socket.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(101) => {}
        Some(status) => return Preauth::Refused(status),
        None => return Preauth::Failed,
    }
    let mut written = 0;
    while written < frame.len() {
        match socket.write(&frame[written..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    Preauth::Upgraded(socket, written)
}

/// A blocking connection to `to` from the loopback address `source` (the
/// whole of 127.0.0.0/8 is the loopback's).
fn connect_from(source: std::net::Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let SocketAddr::V4(to) = to else {
        return None;
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .ok()?;
    let from = SockaddrIn::from(std::net::SocketAddrV4::new(source, 0));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &from).ok()?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).ok()?;
    Some(TcpStream::from(fd))
}

/// A vStats agent whose samples carry 3600 interfaces.
fn compat_interfaces(
    relay: &Relay,
    server: &Server,
    interfaces: usize,
    report: &mut Report,
) -> Result<(), String> {
    const FRAMES: usize = 5;
    let monitor = Monitor::start(relay);
    let mut agent = Agent::connect(relay, "/compat/ws/agent", None);
    let auth =
        json!({"type": "auth", "server_id": server.id, "token": server.token, "version": "probe"});
    agent.send(auth.to_string());
    let answer = match agent.ws.as_mut().filter(|_| agent.end.is_none()) {
        Some(ws) => auth_answer(ws, Duration::from_secs(5)),
        None => End::text(&agent.end),
    };
    let authed = answer.contains(r#""status":"ok""#);
    progress(format_args!("auth answer: {answer}"));
    let (mut sent, mut frame_bytes, mut cpu_ms_per_frame) = (0, 0, None);
    if authed {
        let cpu_before = relay.cpu_ticks();
        for f in 0..FRAMES {
            let start = Instant::now();
            let frame = compat_frame(f, interfaces);
            frame_bytes = frame_bytes.max(frame.len());
            if frame.len() > COMPAT_FRAME_LIMIT {
                progress(format_args!(
                    "frame {f} is {} bytes, past 1 MiB",
                    frame.len()
                ));
            }
            if !agent.send(frame) || agent.check(Duration::ZERO) {
                break;
            }
            sent += 1;
            if let Some(left) = Duration::from_secs(1).checked_sub(start.elapsed()) {
                sleep(left);
            }
        }
        // The second after the last frame has passed; the relay may still
        // be on a frame if one takes it longer.
        relay.settle_cpu(Duration::from_secs(20));
        if let (Some(a), Some(b)) = (cpu_before, relay.cpu_ticks()) {
            let ms = b.saturating_sub(a) * TICK_MS;
            cpu_ms_per_frame = Some(ms as f64 / sent.max(1) as f64);
        }
    }
    agent.check(Duration::from_millis(300));
    let malformed = relay.malformed_total();
    let window = monitor.finish(relay);
    drop(agent.ws.take());
    report.window(window, rss_after(relay));
    report.add("auth_answer", json!(answer));
    report.add("frames_sent", json!(sent));
    report.add("interfaces", json!(interfaces));
    report.add("frame_bytes", json!(frame_bytes));
    report.add("cpu_ms_per_frame", json!(cpu_ms_per_frame));
    report.agent_ended(&agent, malformed);
    Ok(())
}

/// The relay's answer to `auth`: its text, or what came instead.
fn auth_answer(ws: &mut Ws, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return "no answer".to_owned();
        }
        if ws.get_mut().set_read_timeout(Some(left)).is_err() {
            return "socket gone".to_owned();
        }
        match ws.read() {
            Ok(Message::Text(text)) => return text.to_string(),
            Ok(Message::Close(frame)) => {
                return End::text(&Some(End::Close(frame.map(|f| f.code.into()))));
            }
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return format!("error: {e}"),
        }
    }
}

/// Sample `f` of a vStats agent with `n` interfaces, counters growing.
/// Each name is 225 `x` and then `i0000`..`i3599`: told apart only at
/// their end, so comparing two names reads all 230 bytes.
fn compat_frame(f: usize, n: usize) -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let mut frame = String::with_capacity(COMPAT_FRAME_LIMIT);
    let _ = write!(
        frame,
        r#"{{"type":"metrics","metrics":{{"timestamp":"{now}","hostname":"h","network":{{"interfaces":["#
    );
    for i in 0..n as u64 {
        if i > 0 {
            frame.push(',');
        }
        let rx = (i + 1) * 100_000 + f as u64 * 1000;
        let _ = write!(
            frame,
            r#"{{"name":"{pad}i{i:04}","rx_bytes":{rx},"tx_bytes":{tx}}}"#,
            pad = "x".repeat(225),
            tx = rx / 2
        );
    }
    frame.push_str(r#"],"total_rx":1,"total_tx":1,"rx_speed":0,"tx_speed":0}}}"#);
    frame
}

/// Many agents, then /metrics readers that never read.
fn metrics_slow(
    relay: &Relay,
    servers: &[Server],
    clients: usize,
    report: &mut Report,
) -> Result<(), String> {
    let started = Instant::now();
    let mut agents = Vec::with_capacity(servers.len());
    let mut agent_failures: BTreeMap<String, usize> = BTreeMap::new();
    for (i, server) in servers.iter().enumerate() {
        let mut agent = Agent::connect(relay, "/ws/agent", Some(&server.token));
        if agent.send(full_frame(&realistic_sample(i))) {
            agents.push(agent);
        } else {
            *agent_failures.entry(End::text(&agent.end)).or_default() += 1;
        }
        if started.elapsed() > Duration::from_secs(60) {
            progress(format_args!("stopped connecting agents after 60 s"));
            break;
        }
    }
    let agents_s = started.elapsed().as_secs_f64();
    progress(format_args!(
        "{} agents connected in {agents_s:.1} s",
        agents.len()
    ));
    sleep(Duration::from_secs(1));
    let monitor = Monitor::start(relay);
    let started = Instant::now();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {VIEWER_TOKEN}\r\n\r\n"
    );
    let mut deaf = Vec::with_capacity(clients);
    let mut deaf_failures: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..clients {
        let sent = TcpStream::connect_timeout(&relay.addr, Duration::from_secs(2)).and_then(
            |mut socket| {
                socket.set_write_timeout(Some(Duration::from_secs(2)))?;
                socket.write_all(request.as_bytes())?;
                Ok(socket)
            },
        );
        match sent {
            Ok(socket) => deaf.push(socket),
            Err(e) => *deaf_failures.entry(io_text(&e)).or_default() += 1,
        }
    }
    let clients_s = started.elapsed().as_secs_f64();
    progress(format_args!(
        "{} deaf /metrics clients in {clients_s:.1} s; holding them 10 s",
        deaf.len()
    ));
    sleep(Duration::from_secs(10));
    let with_token = relay.get("/metrics", Duration::from_secs(30));
    let without = http_get(relay.addr, "/metrics", "", Duration::from_secs(30));
    let window = monitor.finish(relay);
    let held = deaf.len();
    let agents_connected = agents.len();
    drop(deaf);
    drop(agents);
    report.window(window, rss_after(relay));
    report.add("agents_connected", json!(agents_connected));
    report.add("agent_failures", json!(agent_failures));
    report.add("agents_s", json!((agents_s * 10.0).round() / 10.0));
    report.add("slow_clients", json!(held));
    report.add("slow_clients_s", json!((clients_s * 10.0).round() / 10.0));
    report.add("slow_client_failures", json!(deaf_failures));
    match with_token {
        Ok(answer) => {
            report.add("metrics_status", json!(answer.status_line));
            report.add("metrics_body_bytes", json!(answer.body.len()));
            report.add("metrics_ms", json!(answer.elapsed.as_millis()));
        }
        Err(e) => {
            report.add("metrics_status", json!(e));
            report.add("metrics_body_bytes", Value::Null);
            report.add("metrics_ms", Value::Null);
        }
    }
    let without = without.map_or_else(|e| e, |answer| answer.status_line);
    report.add("metrics_status_without_token", json!(without));
    Ok(())
}
