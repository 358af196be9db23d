//! Load generator for `vstats-relay`, driven by `scripts/bench-relay.sh`.
//!
//! One thread and one epoll loop, like the relay itself, so 10,000 agents
//! cost the generator a socket and a few KiB each rather than a thread each.
//! Modes:
//!
//! - fleet (the default): `--dashboards` dashboards connect, then `--agents`
//!   agents over `--ramp` seconds, each sending a realistic `metrics` sample
//!   (`--sample-bytes`) `--rate` times a second, phases spread evenly. Every
//!   dashboard times each sample it receives that was sent in the
//!   measurement window (`--duration` seconds, after the ramp and a settle).
//! - `--idle`: the agents connect and send nothing (memory per connection).
//! - `--handshakes SECONDS`: agents connect, finish the WebSocket upgrade
//!   (under TLS for `wss://`) and close, `--agents` of them in flight at a
//!   time, for that long.
//! - `--deaf-dashboards N`: the fleet runs as above (with `--dashboards`
//!   reading dashboards); once it has settled, N more dashboards connect to
//!   `/ws` (500 a second), finish the upgrade and never read again: no
//!   frames, no pongs, the sockets simply held open. For `--duration`
//!   seconds from their first connect, the relay's RSS (`--relay-pid`) and
//!   how many of them it still holds (its `vstats_relay_connections`
//!   gauge for dashboards, from `GET /metrics`, less the reading ones) are
//!   printed once a second.
//!
//! - `--soak SECONDS`: the fleet for that long, surviving relay restarts:
//!   see "Soak" below.
//!
//! With `--patch` (fleet, `--deaf-dashboards` and `--soak`), each agent sends the
//! lean wire of docs/PROTOCOL.md ("`patch`: lean samples"): one full
//! `metrics` sample on each connection, then `patch` frames shaped like a
//! small host's agent's: `elapsed_ms`, `cpu` (`usage`, two `per_core`),
//! `memory.available`, `disk_io`, the one interface's `rx_bytes` and
//! `tx_bytes`, and `processes`, figures varied. The relay rebuilds whole
//! samples from them and forwards those.
//!
//! Latency is a dashboard's receive time minus the stamp the agent put in
//! the sample, both on this process's clock: it includes the generator's
//! own delays, so it is an upper bound on the relay's. The stamp is
//! `loadgen_sent_us`, microseconds since the generator started. With
//! `--patch` it is `processes` instead, in the full sample and in every
//! patch, and dashboards read `metrics.processes` as the stamp: the relay
//! rebuilds samples from patches with its typed fields only, so an unknown
//! field such as `loadgen_sent_us` does not reach dashboards, while
//! `processes`, a whole number (u64), passes through unchanged.
//!
//! The run prints a human-readable report and, as its last line, the same
//! figures as one JSON object.
//!
//! # Soak
//!
//! `--soak SECONDS` (driven by `scripts/soak.sh`) runs the fleet and the
//! reading dashboards for that long while the relay is killed and
//! restarted under it. Agents and dashboards whose connection ends
//! reconnect after 0.5 to 1 s (jittered), again and again, instead of the
//! run ending; with `--relay-pid-file` they only try once the relay they
//! will reach is up (see below), so every connection belongs to one relay
//! lifetime, an *epoch*. `--slow-dashboards N` adds dashboards that read
//! `--slow-bytes-per-s` bytes a second, on threads of their own, counted
//! apart (their misses are not loss).
//!
//! Every sample carries `(agent + 1) * 10^9 + seq` in `processes`, `seq`
//! counting the agent's samples written on open connections (a sample not
//! written, because the agent is between connections, gets no number). The
//! relay forwards `processes` untouched, whole samples and patches alike, so
//! each reading dashboard sees every agent's numbers and counts the gaps.
//!
//! A sample is *expected* at a reading dashboard's connection when it was
//! sent after that connection's upgrade, on a connection to the same relay
//! lifetime, and more than [`SOAK_EXCUSE`] before that relay died; it is
//! *lost* if expected and never received while delivery kept up. When a
//! dashboard's samples arrive [`SOAK_BEHIND`] or more after they were sent
//! (on a shared machine the generator, the relay or both can stall), the
//! relay holds more than one sample of a server for it at a time, and
//! keeps only the newest of those not yet sent (its rule for slow
//! dashboards; it applies within one turn of its loop too); what a
//! dashboard misses until [`SOAK_BEHIND_FOR`] after its last late sample
//! is counted as *missed while behind*, apart. Reading dashboards ask for large receive buffers
//! ([`SOAK_DASHBOARD_RCVBUF`]) to make that rare. Samples sent in the last
//! [`SOAK_EXCUSE`] before a kill (in flight, or written into a socket the
//! kill reset) are *excused* and counted apart; samples sent before a
//! dashboard's upgrade (the snapshot may carry the latest) are not
//! expected. Gaps are found when a later number arrives and, for the tail,
//! [`SOAK_SETTLE`] after a dashboard's connection ends (once the relay's
//! death, if that was the cause, is known) and at the end of the run.
//!
//! `--relay-pid-file FILE` holds the current relay's pid (the soak script
//! rewrites it on each restart); the loop looks every
//! [`SOAK_PROBE_EVERY`]: the pid gone or a zombie ends the epoch (the
//! relay's *death*), a new live pid starts the next (the relay is *up*).
//! Agent and dashboard drops are classed as at a restart when they fall
//! within [`SOAK_EXCUSE`] of a death, and as faults otherwise.
//!
//! Once a second a CSV line goes to stdout (`soak,` then the fields of
//! [`SOAK_CSV_HEADER`]); the last line is the JSON report, with, per
//! restart, how long after the new relay was up every agent (and every
//! reading dashboard) was connected again.
//!
//! Usage: cargo run --release --example loadgen -- --relay ws://127.0.0.1:PORT
//!        --tokens FILE [--agents N] [--dashboards M] [--rate HZ] [--ramp S]
//!        [--duration S] [--sample-bytes B] [--patch] [--idle] [--handshakes S]
//!        [--deaf-dashboards N] [--ca-file PEM] [--relay-pid PID]
//!        [--soak S [--relay-pid-file FILE] [--slow-dashboards N]
//!        [--slow-bytes-per-s B]]

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{ClientHandshake, Request};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};
use vstats::tls::MaybeTls;

type Stream = MaybeTls<ClientConnection>;
/// What one step of a non-blocking client handshake returns.
type HandshakeStep = Result<
    (WebSocket<Stream>, tungstenite::handshake::client::Response),
    HandshakeError<ClientHandshake<Stream>>,
>;

/// A loopback connect completes in the kernel unless the relay's accept
/// queue is full; past this the relay is refusing and the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection not upgraded by then counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dashboards get to connect and take their snapshot.
const DASHBOARD_SETUP: Duration = Duration::from_secs(15);
/// Between the end of the ramp and the window: the last agents' first
/// samples and the dashboards' snapshots are out of the way.
const SETTLE: Duration = Duration::from_secs(1);
/// After the window: samples sent at its very end may still arrive.
const GRACE: Duration = Duration::from_secs(3);
/// The loop wakes at least this often (handshake deadlines, the ramp).
const MAX_WAIT: Duration = Duration::from_millis(5);
/// File descriptors kept for stdio, epoll and /proc reads.
const SPARE_FDS: u64 = 64;
/// With `--deaf-dashboards`: after the agents' ramp, the fleet runs this
/// long before the deaf dashboards come (the relay's RSS "before").
const DEAF_BASELINE: Duration = Duration::from_secs(5);
/// Deaf dashboards connect at this rate (the relay's accept queue is 128).
const DEAF_CONNECTS_PER_S: f64 = 500.0;
/// A `GET /metrics` that takes longer than this counts as no answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The relay's gauge of open dashboards, as `/metrics` prints it.
const DASHBOARD_GAUGE: &str = "vstats_relay_connections{kind=\"dashboard\"} ";
const STAMP: &str = "\"loadgen_sent_us\":";
/// The stamp with `--patch`: the last field of a rebuilt sample.
const PATCH_STAMP: &str = "\"processes\":";
const METRICS_PREFIX: &str = "{\"type\":\"metrics\"";
/// With `--soak`: a sample sent less than this before its relay died was in
/// flight at the kill; missing, it is excused rather than lost.
const SOAK_EXCUSE: Duration = Duration::from_secs(1);
/// A reading dashboard's ended connection has its tail counted this long
/// after it ended, when the relay's death, if that was why, is known.
const SOAK_SETTLE: Duration = Duration::from_secs(2);
/// How often the soak looks at the relay's pid and at who is back.
const SOAK_PROBE_EVERY: Duration = Duration::from_millis(100);
/// A dropped agent or dashboard tries again after this many ms (uniform).
const SOAK_RETRY_MS: std::ops::RangeInclusive<u64> = 500..=1000;
/// Soak connects a second at most, the ramp's rate: a blocking connect to
/// a full accept queue would stall the loop.
const SOAK_CONNECTS_PER_S: f64 = 2000.0;
/// A reading dashboard whose samples arrive this late is behind: the relay
/// may then replace a sample it has not yet sent with a newer one
/// ("conflated", as it does for any slow dashboard), so what it misses
/// then is counted apart from loss.
const SOAK_BEHIND: Duration = Duration::from_millis(500);
/// ... and stays behind for this long after such a late sample.
const SOAK_BEHIND_FOR: Duration = Duration::from_secs(2);
/// Reading dashboards ask for receive buffers this large (seconds of a
/// 2,000-agent fleet), so that a stall of the generator on a busy machine
/// does not make them slow dashboards.
const SOAK_DASHBOARD_RCVBUF: usize = 8 << 20;
/// `processes` = (agent + 1) x this + the agent's sample number.
const SOAK_STAMP_BASE: u64 = 1_000_000_000;
/// The fields of the soak's once-a-second CSV line, after `soak,`.
const SOAK_CSV_HEADER: &str =
    "t_s,relay_up,epoch,agents,dashboards,slow_dashboards,sent,received,lost,excused,behind";

const USAGE: &str = "\
loadgen: drive vstats-relay with agents and dashboards on loopback

Usage: loadgen --relay ws://127.0.0.1:PORT --tokens FILE [options]

  --relay URL          ws:// or wss:// on 127.0.0.0/8
  --ca-file PEM        trust this CA (wss://)
  --tokens FILE        agent tokens, one a line (one per agent)
  --agents N           agents (default 100); in --handshakes mode, in flight
  --dashboards M       dashboards (default 10)
  --rate HZ            samples per second per agent (default 1)
  --ramp SECONDS       spread agent connections over this (default N/2000)
  --duration SECONDS   measurement window after the ramp (default 10)
  --sample-bytes B     size of an agent's data object (default 1000)
  --patch              after a full sample, agents send `patch` frames
                       (dashboards read the stamp from `processes`)
  --idle               agents connect and send nothing
  --handshakes SECONDS open and close agent connections this long
  --deaf-dashboards N  also N dashboards that never read, once the fleet
                       has settled; --duration counts from them
  --relay-pid PID      report the relay's CPU and memory
  --soak SECONDS       run the fleet this long across relay restarts,
                       reconnecting, counting lost samples (see the doc)
  --relay-pid-file F   with --soak: the current relay's pid, rewritten on
                       each restart
  --slow-dashboards N  with --soak: N dashboards that read slowly
  --slow-bytes-per-s B how slowly (default 4096)
";

struct Args {
    url: String,
    addr: SocketAddr,
    tls: bool,
    ca_file: Option<PathBuf>,
    tokens: Option<PathBuf>,
    agents: usize,
    dashboards: usize,
    rate: f64,
    ramp: Option<f64>,
    duration: f64,
    sample_bytes: usize,
    idle: bool,
    patch: bool,
    handshakes: Option<f64>,
    deaf_dashboards: usize,
    relay_pid: Option<u32>,
    soak: Option<f64>,
    relay_pid_file: Option<PathBuf>,
    slow_dashboards: usize,
    slow_bytes_per_s: usize,
}

fn parse_args() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut relay = None;
    let mut args = Args {
        url: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
        ca_file: None,
        tokens: None,
        agents: 100,
        dashboards: 10,
        rate: 1.0,
        ramp: None,
        duration: 10.0,
        sample_bytes: 1000,
        idle: false,
        patch: false,
        handshakes: None,
        deaf_dashboards: 0,
        relay_pid: None,
        soak: None,
        relay_pid_file: None,
        slow_dashboards: 0,
        slow_bytes_per_s: 4096,
    };
    let fail = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(fail)? {
        match arg {
            Long("relay") => relay = Some(parser.value().map_err(fail)?.string().map_err(fail)?),
            Long("ca-file") => args.ca_file = Some(parser.value().map_err(fail)?.into()),
            Long("tokens") => args.tokens = Some(parser.value().map_err(fail)?.into()),
            Long("agents") => args.agents = parser.value().map_err(fail)?.parse().map_err(fail)?,
            Long("dashboards") => {
                args.dashboards = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("rate") => args.rate = parser.value().map_err(fail)?.parse().map_err(fail)?,
            Long("ramp") => args.ramp = Some(parser.value().map_err(fail)?.parse().map_err(fail)?),
            Long("duration") => {
                args.duration = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("sample-bytes") => {
                args.sample_bytes = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("idle") => args.idle = true,
            Long("patch") => args.patch = true,
            Long("handshakes") => {
                args.handshakes = Some(parser.value().map_err(fail)?.parse().map_err(fail)?)
            }
            Long("deaf-dashboards") => {
                args.deaf_dashboards = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("relay-pid") => {
                args.relay_pid = Some(parser.value().map_err(fail)?.parse().map_err(fail)?)
            }
            Long("soak") => args.soak = Some(parser.value().map_err(fail)?.parse().map_err(fail)?),
            Long("relay-pid-file") => {
                args.relay_pid_file = Some(parser.value().map_err(fail)?.into())
            }
            Long("slow-dashboards") => {
                args.slow_dashboards = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Long("slow-bytes-per-s") => {
                args.slow_bytes_per_s = parser.value().map_err(fail)?.parse().map_err(fail)?
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(fail(arg.unexpected())),
        }
    }
    let url = relay.ok_or("--relay is required")?;
    let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(format!("{url}: not a ws:// or wss:// URL"));
    };
    let addr: SocketAddr = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("{url}: want ws://127.0.0.1:PORT"))?;
    // A load generator must never be pointed at someone else's machine.
    if !addr.ip().is_loopback() {
        return Err(format!("{url}: only loopback addresses are allowed"));
    }
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Ok(())
        } else {
            Err(format!("--{name} must be above 0 and at most a day"))
        }
    };
    positive("rate", args.rate)?;
    positive("duration", args.duration)?;
    // A ramp of 0 connects every agent at once.
    if let Some(ramp) = args.ramp.filter(|&r| r != 0.0) {
        positive("ramp", ramp)?;
    }
    if let Some(seconds) = args.handshakes {
        positive("handshakes", seconds)?;
    }
    if args.patch && (args.handshakes.is_some() || args.idle) {
        return Err("--patch goes with the fleet, not --idle or --handshakes".into());
    }
    if args.deaf_dashboards > 0 && (args.handshakes.is_some() || args.idle) {
        return Err("--deaf-dashboards goes with the fleet, not --idle or --handshakes".into());
    }
    if let Some(seconds) = args.soak {
        positive("soak", seconds)?;
        if args.handshakes.is_some() || args.idle || args.deaf_dashboards > 0 {
            return Err("--soak goes with the fleet alone".into());
        }
        if args.slow_dashboards > 0 && tls {
            return Err("--slow-dashboards needs ws://".into());
        }
        if args.slow_bytes_per_s == 0 {
            return Err("--slow-bytes-per-s must be above 0".into());
        }
    } else if args.relay_pid_file.is_some() || args.slow_dashboards > 0 {
        return Err("--relay-pid-file and --slow-dashboards go with --soak".into());
    }
    args.url = url.trim_end_matches('/').to_owned();
    args.addr = addr;
    args.tls = tls;
    Ok(args)
}

/// Raises the open-files soft limit to the hard one; returns how many
/// connections fit.
fn connection_budget() -> usize {
    vstats::relay::raise_open_files_limit().saturating_sub(SPARE_FDS) as usize
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Some(ticks as f64 / hz as f64)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A cheap deterministic generator: the samples only need to vary.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A percentage with two decimals.
    fn percent(&mut self) -> f64 {
        (self.next() % 10_000) as f64 / 100.0
    }
}

/// Builds agent frames in the shape `vstats-agent --once` prints on a
/// small VM (about 900 bytes compact), with the varying figures varied and
/// a `loadgen_pad` string (unknown fields are allowed) to reach the size;
/// with `--patch`, also the `patch` frames that follow such a sample.
struct SampleMaker {
    pad: String,
    rng: XorShift,
    /// `--patch` or `--soak`: `processes` carries the stamp.
    stamp_processes: bool,
}

impl SampleMaker {
    fn new(target: usize, stamp_processes: bool) -> SampleMaker {
        let mut maker = SampleMaker {
            pad: String::new(),
            rng: XorShift(0x9e37_79b9_7f4a_7c15),
            stamp_processes,
        };
        let data_len = |frame: String| {
            let start = frame.find("\"data\":").unwrap_or(0) + "\"data\":".len();
            let end = frame.rfind(",\"timestamp\"").unwrap_or(frame.len());
            end - start
        };
        let base = data_len(maker.frame(0, 0, 0));
        maker.pad = "x".repeat(target.saturating_sub(base));
        maker
    }

    /// A full sample; `stamp` goes in `processes` with `--patch` or
    /// `--soak`.
    fn frame(&mut self, agent: usize, sent_us: u64, stamp: u64) -> String {
        let now = vstats::protocol::rfc3339(SystemTime::now());
        let r = &mut self.rng;
        let (a, b) = (r.percent(), r.percent());
        let used = 800_000_000 + r.next() % 400_000_000;
        let (rx, tx) = (r.next() % 2_000_000, r.next() % 500_000);
        format!(
            concat!(
                r#"{{"type":"metrics","data":{{"timestamp":"{now}","hostname":"loadgen-{agent}","#,
                r#""os":{{"name":"Debian GNU/Linux","version":"12","kernel":"6.1.0-18-amd64","arch":"x86_64"}},"#,
                r#""cpu":{{"brand":"AMD EPYC 7763 64-Core Processor","cores":2,"usage":{usage:.2},"per_core":[{a:.2},{b:.2}]}},"#,
                r#""memory":{{"total":25276514304,"used":{used},"available":{available},"usage_percent":{mem:.2},"swap_total":0,"swap_used":0}},"#,
                r#""disks":[{{"name":"/dev/vda","mount":"/","fs_type":"ext4","total":270553174016,"used":21495939072,"usage_percent":7.95}}],"#,
                r#""disk_io":{{"read_rate":{read:.2},"write_rate":{write:.2}}},"#,
                r#""network":{{"rx":{rx}.0,"tx":{tx}.0,"rx_total":558461827,"tx_total":846234,"interfaces":["#,
                r#"{{"name":"eth0","counted":true,"rx":{rx}.0,"tx":{tx}.0,"rx_total":558461827,"tx_total":846234}}]}},"#,
                r#""uptime":{uptime},"load_average":{{"one":0.52,"five":0.48,"fifteen":0.41}},"temperatures":[],"#,
                r#""sockets":{{"tcp":12,"udp":3}},"processes":{processes},"loadgen_pad":"{pad}","#,
                r#""loadgen_sent_us":{sent_us}}},"timestamp":"{now}"}}"#,
            ),
            now = now,
            agent = agent,
            usage = (a + b) / 2.0,
            a = a,
            b = b,
            used = used,
            available = 25_276_514_304u64 - used,
            mem = used as f64 / 25_276_514_304.0 * 100.0,
            read = r.percent() * 1000.0,
            write = r.percent() * 100.0,
            rx = rx,
            tx = tx,
            uptime = 3000 + sent_us / 1_000_000,
            processes = if self.stamp_processes {
                stamp
            } else {
                80 + r.next() % 40
            },
            pad = self.pad,
            sent_us = sent_us,
        )
    }

    /// A `patch` frame as an agent on a small host sends it each interval
    /// after its full sample: what moves every second (the CPU, available
    /// memory, disk I/O, the one interface's bytes) and `processes`, which
    /// carries the stamp. Numbers are printed as serde prints them (`0.0`).
    fn patch(&mut self, elapsed_ms: u64, stamp: u64) -> String {
        let r = &mut self.rng;
        let (a, b) = (r.percent(), r.percent());
        let available = 25_276_514_304u64 - (800_000_000 + r.next() % 400_000_000);
        // A small host reads from disk now and then and writes a few pages.
        let read = if r.next() % 4 == 0 {
            (r.next() % 64 * 4096) as f64
        } else {
            0.0
        };
        let write = (r.next() % 32 * 4096) as f64;
        let (rx, tx) = (1 + r.next() % 2_000_000, 1 + r.next() % 500_000);
        format!(
            concat!(
                r#"{{"type":"patch","data":{{"elapsed_ms":{elapsed_ms},"#,
                r#""cpu":{{"usage":{usage:?},"per_core":[{a:?},{b:?}]}},"#,
                r#""memory":{{"available":{available}}},"#,
                r#""disk_io":{{"read_rate":{read:?},"write_rate":{write:?}}},"#,
                r#""network":{{"interfaces":[{{"rx_bytes":{rx},"tx_bytes":{tx}}}]}},"#,
                r#""processes":{stamp}}}}}"#,
            ),
            elapsed_ms = elapsed_ms,
            usage = ((a + b) / 2.0 * 100.0).round() / 100.0,
            a = a,
            b = b,
            available = available,
            read = read,
            write = write,
            rx = rx,
            tx = tx,
            stamp = stamp,
        )
    }
}

#[derive(Clone, Copy)]
enum Role {
    /// An agent, by its index (and token).
    Agent(usize),
    /// A dashboard, by its index.
    Dashboard(usize),
    /// A dashboard that never reads after its upgrade.
    Deaf,
}

enum Ws {
    Handshake(MidHandshake<ClientHandshake<Stream>>),
    Open(WebSocket<Stream>),
}

struct Conn {
    role: Role,
    ws: Ws,
    started: Instant,
}

#[derive(Default)]
struct Stats {
    agents_connected: u64,
    agents_failed: u64,
    dashboards_connected: u64,
    dashboards_failed: u64,
    /// Reading dashboards open now (the relay's gauge counts both kinds).
    dashboards_open: u64,
    deaf_connected: u64,
    deaf_failed: u64,
    /// Deaf sockets this side saw end (a reset or an end of stream: the
    /// relay's close can sit behind the unread data for a long time).
    deaf_ended_here: u64,
    /// Why connections failed, with counts (HTTP status, timeout, ...).
    failures: std::collections::BTreeMap<String, u64>,
    /// Open connections the relay (or the network) ended during the run.
    dropped: u64,
    slowest_connect: Duration,
    samples_sent: u64,
    samples_sent_in_window: u64,
    /// Samples refused because tungstenite's write buffer was full.
    send_blocked: u64,
    /// How late the loop got behind its send schedule, at worst.
    worst_send_lag: Duration,
    /// With `--soak`: samples not sent because the loop was more than half
    /// an interval late for them (see [`LoadGen::send_due`]).
    skipped_late: u64,
    received: Vec<u64>,
    latencies_us: Vec<u32>,
    handshakes: u64,
}

struct LoadGen {
    args: Args,
    epoll: Epoll,
    events: Vec<EpollEvent>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    tokens: Vec<String>,
    /// Agent index to its connection's key, once open.
    agent_conn: Vec<Option<usize>>,
    samples: SampleMaker,
    /// With `--patch`: whether each agent sent its full sample on its
    /// current connection (patches follow it).
    full_sent: Vec<bool>,
    clock: Instant,
    /// The measurement window, in microseconds on `clock`.
    window_us: (u64, u64),
    /// In `--handshakes` mode: close agents as soon as they are upgraded.
    churn: bool,
    stats: Stats,
    /// With `--soak`: reconnection, sample numbers and loss accounting.
    soak: Option<Box<Soak>>,
}

impl LoadGen {
    fn new(args: Args, tokens: Vec<String>) -> Result<LoadGen, String> {
        let tls = if args.tls {
            let config =
                vstats::tls::client_config(args.ca_file.as_deref()).map_err(|e| e.to_string())?;
            let name = ServerName::from(args.addr.ip());
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(LoadGen {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?,
            events: vec![EpollEvent::empty(); 1024],
            conns: Vec::new(),
            free: Vec::new(),
            tls,
            agent_conn: vec![None; args.agents],
            samples: SampleMaker::new(args.sample_bytes, args.patch || args.soak.is_some()),
            full_sent: vec![false; args.agents],
            clock: Instant::now(),
            window_us: (u64::MAX, u64::MAX),
            churn: args.handshakes.is_some(),
            stats: Stats {
                received: vec![0; args.dashboards],
                ..Stats::default()
            },
            soak: args
                .soak
                .map(|_| Box::new(Soak::new(args.agents, args.dashboards))),
            tokens,
            args,
        })
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.clock).as_micros() as u64
    }

    fn in_window(&self, us: u64) -> bool {
        (self.window_us.0..self.window_us.1).contains(&us)
    }

    fn fail(&mut self, role: Role, why: String) {
        if let Some(soak) = self.soak.as_mut() {
            soak.retry_later(role, self.clock.elapsed());
        }
        match role {
            Role::Agent(_) => self.stats.agents_failed += 1,
            Role::Dashboard(_) => self.stats.dashboards_failed += 1,
            Role::Deaf => self.stats.deaf_failed += 1,
        }
        *self.stats.failures.entry(why).or_default() += 1;
    }

    fn request(&self, role: Role) -> Request {
        let path = match role {
            Role::Agent(_) => "/ws/agent",
            Role::Dashboard(_) | Role::Deaf => "/ws",
        };
        // The URL was checked in parse_args.
        let mut request = format!("{}{path}", self.args.url)
            .into_client_request()
            .expect("a valid URL");
        if let Role::Agent(i) = role {
            let token = &self.tokens[i % self.tokens.len()];
            let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("a hex token");
            request.headers_mut().insert("authorization", bearer);
        }
        request
    }

    /// Connects (a blocking connect: on loopback the kernel completes it at
    /// once unless the relay's accept queue is full) and starts the
    /// non-blocking TLS and WebSocket handshakes.
    fn open(&mut self, role: Role) {
        let started = Instant::now();
        if let Some(soak) = self.soak.as_mut() {
            soak.opening(role);
        }
        let tcp = match TcpStream::connect_timeout(&self.args.addr, CONNECT_TIMEOUT) {
            Ok(tcp) => tcp,
            Err(e) => return self.fail(role, format!("connect: {}", e.kind())),
        };
        self.stats.slowest_connect = self.stats.slowest_connect.max(started.elapsed());
        if let Err(e) = tcp.set_nonblocking(true) {
            return self.fail(role, format!("socket: {}", e.kind()));
        }
        let _ = tcp.set_nodelay(true);
        if self.soak.is_some() && matches!(role, Role::Dashboard(_)) {
            // Root may exceed net.core.rmem_max; others get what it allows.
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&tcp, sockopt::RcvBufForce, &SOAK_DASHBOARD_RCVBUF).is_err() {
                let _ = setsockopt(&tcp, sockopt::RcvBuf, &SOAK_DASHBOARD_RCVBUF);
            }
        }
        let stream = match &self.tls {
            None => MaybeTls::Plain(tcp),
            Some((config, name)) => match ClientConnection::new(config.clone(), name.clone()) {
                Ok(tls) => MaybeTls::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))),
                Err(e) => return self.fail(role, format!("tls: {e}")),
            },
        };
        let key = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // Edge-triggered: every handler reads and writes until WouldBlock.
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self
            .epoll
            .add(stream.tcp(), EpollEvent::new(flags, key as u64))
        {
            self.free.push(key);
            return self.fail(role, format!("epoll: {e}"));
        }
        let config = match role {
            // Agents only ever read pings: tungstenite's 128 KiB default
            // read buffer, allocated up front, would cost 1.3 GB at 10,000.
            Role::Agent(_) => WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_write_buffer_size(256 * 1024),
            // tungstenite zeroes the whole free read buffer before every
            // read (the one that says WouldBlock included): at 128 KiB that
            // memset was the generator's largest cost.
            Role::Dashboard(_) => WebSocketConfig::default().read_buffer_size(16 * 1024),
            // Never read past the upgrade.
            Role::Deaf => WebSocketConfig::default().read_buffer_size(4096),
        };
        let request = self.request(role);
        let step = tungstenite::client::client_with_config(request, stream, Some(config));
        self.handshake_step(key, role, started, step);
    }

    /// Where a handshake step left a connection: open, still going (kept
    /// under `key` for the next readiness), or failed.
    fn handshake_step(&mut self, key: usize, role: Role, started: Instant, step: HandshakeStep) {
        match step {
            Ok((ws, _)) => self.opened(key, role, ws, started),
            Err(HandshakeError::Interrupted(mid)) => {
                let ws = Ws::Handshake(mid);
                self.conns[key] = Some(Conn { role, ws, started });
            }
            Err(HandshakeError::Failure(e)) => {
                self.free.push(key);
                self.fail(role, handshake_failure(&e));
            }
        }
    }

    /// A connection finished its upgrade: keep it under `key`, or in
    /// `--handshakes` mode count it and close it.
    fn opened(&mut self, key: usize, role: Role, mut ws: WebSocket<Stream>, started: Instant) {
        match role {
            Role::Agent(_) if self.churn => {
                if self.in_window(self.micros(Instant::now())) {
                    self.stats.handshakes += 1;
                }
                let _ = ws.close(None);
                let _ = ws.flush();
                self.free.push(key);
                return;
            }
            Role::Agent(i) => {
                self.stats.agents_connected += 1;
                self.agent_conn[i] = Some(key);
                // A new connection starts with a full sample.
                self.full_sent[i] = false;
                if let Some(soak) = self.soak.as_mut() {
                    soak.agent_opened(i);
                }
            }
            Role::Dashboard(d) => {
                self.stats.dashboards_connected += 1;
                self.stats.dashboards_open += 1;
                let now = self.clock.elapsed();
                if let Some(soak) = self.soak.as_mut() {
                    soak.dashboard_opened(d, now);
                }
            }
            Role::Deaf => {
                // Whatever came with the 101 stays unread. From now on only
                // the socket's end is of interest: no readable or writable
                // edges (hang-ups and errors are always reported).
                self.stats.deaf_connected += 1;
                let flags = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
                if self
                    .epoll
                    .modify(ws.get_ref().tcp(), &mut EpollEvent::new(flags, key as u64))
                    .is_err()
                {
                    self.free.push(key);
                    self.stats.deaf_ended_here += 1;
                    return;
                }
                let ws = Ws::Open(ws);
                self.conns[key] = Some(Conn { role, ws, started });
                return;
            }
        }
        // Frames may have arrived with the 101.
        self.keep_reading(key, role, ws, started);
    }

    /// Advances one connection after a readiness event.
    fn drive(&mut self, key: usize, flags: EpollFlags) {
        let Some(Conn { role, ws, started }) = self.conns[key].take() else {
            return; // a stray event for a connection already gone
        };
        match ws {
            Ws::Handshake(mid) => self.handshake_step(key, role, started, mid.handshake()),
            Ws::Open(ws) if matches!(role, Role::Deaf) => {
                let ended = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
                if flags.intersects(ended) {
                    // Dropping the socket closes it.
                    self.stats.deaf_ended_here += 1;
                    self.free.push(key);
                } else {
                    let ws = Ws::Open(ws);
                    self.conns[key] = Some(Conn { role, ws, started });
                }
            }
            Ws::Open(ws) => self.keep_reading(key, role, ws, started),
        }
    }

    /// Reads what has arrived; puts the connection back under `key` unless
    /// it ended.
    fn keep_reading(
        &mut self,
        key: usize,
        role: Role,
        mut ws: WebSocket<Stream>,
        started: Instant,
    ) {
        if self.read_all(role, &mut ws) {
            let ws = Ws::Open(ws);
            self.conns[key] = Some(Conn { role, ws, started });
        } else {
            self.closed(key, role);
        }
    }

    /// Reads every frame that has arrived (tungstenite queues pong replies)
    /// and flushes; `false` once the connection has ended.
    fn read_all(&mut self, role: Role, ws: &mut WebSocket<Stream>) -> bool {
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    if let Role::Dashboard(d) = role {
                        self.record(d, &text);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(_) => return false,
            }
        }
        match ws.flush() {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) => e.kind() == std::io::ErrorKind::WouldBlock,
            Err(_) => false,
        }
    }

    fn closed(&mut self, key: usize, role: Role) {
        self.stats.dropped += 1;
        let now = self.clock.elapsed();
        if let Some(soak) = self.soak.as_mut() {
            soak.ended(role, now);
            soak.retry_later(role, now);
        }
        match role {
            Role::Agent(i) => {
                if let Some(slot) = self.agent_conn.get_mut(i) {
                    *slot = None;
                }
            }
            Role::Dashboard(_) => self.stats.dashboards_open -= 1,
            Role::Deaf => {}
        }
        self.free.push(key);
    }

    /// Times a dashboard's `metrics` frame by the stamp in its sample.
    fn record(&mut self, dashboard: usize, text: &str) {
        if !text.starts_with(METRICS_PREFIX) {
            return;
        }
        if let Some(soak) = self.soak.as_mut() {
            if let Some(stamp) = stamp_in(text, PATCH_STAMP) {
                soak.received(dashboard, stamp, self.clock.elapsed());
            }
            return;
        }
        let stamp = if self.args.patch { PATCH_STAMP } else { STAMP };
        let Some(sent_us) = stamp_in(text, stamp) else {
            return;
        };
        if !self.in_window(sent_us) {
            return;
        }
        let latency = self.micros(Instant::now()).saturating_sub(sent_us);
        self.stats.received[dashboard] += 1;
        self.stats
            .latencies_us
            .push(latency.min(u32::MAX as u64) as u32);
    }

    /// Sends agent `agent`'s next sample, if it is connected.
    fn send(&mut self, agent: usize) {
        let Some(key) = self.agent_conn[agent] else {
            return;
        };
        let Some(Conn {
            ws: Ws::Open(ws), ..
        }) = &mut self.conns[key]
        else {
            return;
        };
        let sent_us = self.clock.elapsed().as_micros() as u64;
        let stamp = match &self.soak {
            Some(soak) => soak.next_stamp(agent),
            None => sent_us,
        };
        let frame = if self.args.patch && self.full_sent[agent] {
            let elapsed_ms = (1000.0 / self.args.rate).round() as u64;
            self.samples.patch(elapsed_ms, stamp)
        } else {
            self.samples.frame(agent, sent_us, stamp)
        };
        match ws.write(Message::text(frame)) {
            Ok(()) => {}
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.stats.send_blocked += 1;
                return;
            }
            // Queued; the next writable edge flushes it.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // The read side notices and closes it.
            Err(_) => return,
        }
        // Written or queued: the patches that follow have their base.
        self.full_sent[agent] = true;
        if let Some(soak) = self.soak.as_mut() {
            soak.sent(agent, Duration::from_micros(sent_us));
        }
        let _ = ws.flush();
        self.stats.samples_sent += 1;
        if self.in_window(sent_us) {
            self.stats.samples_sent_in_window += 1;
        }
    }

    /// Waits for readiness at most `timeout` and drives what is ready.
    fn poll(&mut self, timeout: Duration) {
        // Round up, as mio does: a wait truncated to 0 ms would spin.
        let millis = timeout.as_nanos().div_ceil(1_000_000).min(1000) as u16;
        let ready = match self
            .epoll
            .wait(&mut self.events, EpollTimeout::from(millis))
        {
            Ok(ready) => ready,
            Err(Errno::EINTR) => 0,
            Err(e) => panic!("epoll_wait: {e}"),
        };
        for i in 0..ready {
            let key = self.events[i].data() as usize;
            let flags = self.events[i].events();
            self.drive(key, flags);
        }
    }

    /// Fails handshakes older than the handshake timeout.
    fn expire_handshakes(&mut self) {
        for key in 0..self.conns.len() {
            let late = matches!(
                &self.conns[key],
                Some(Conn { ws: Ws::Handshake(_), started, .. })
                    if started.elapsed() >= HANDSHAKE_TIMEOUT
            );
            if late {
                if let Some(conn) = self.conns[key].take() {
                    self.free.push(key);
                    self.fail(conn.role, "handshake timeout".to_owned());
                }
            }
        }
    }

    /// Opens the reading dashboards and waits, at most
    /// [`DASHBOARD_SETUP`], until each connected or failed.
    fn open_dashboards(&mut self) {
        let dashboards = self.args.dashboards;
        let setup_end = Instant::now() + DASHBOARD_SETUP;
        for d in 0..dashboards {
            self.open(Role::Dashboard(d));
        }
        while Instant::now() < setup_end
            && ((self.stats.dashboards_connected + self.stats.dashboards_failed) as usize)
                < dashboards
        {
            self.poll(MAX_WAIT);
            self.expire_handshakes();
        }
    }

    /// Opens the agents whose turn on the ramp from `t0` has come;
    /// `opened` counts those opened so far.
    fn open_due_agents(&mut self, opened: &mut usize, t0: Instant, ramp: Duration) {
        let agents = self.args.agents;
        while *opened < agents
            && t0 + ramp.mul_f64(*opened as f64 / agents as f64) <= Instant::now()
        {
            self.open(Role::Agent(*opened));
            *opened += 1;
        }
    }

    /// Sends every sample due by `now`: the s-th overall is due at
    /// t0 + s / (rate x agents), from agent s % agents, so each agent sends
    /// every 1/rate s at its own phase. Returns when the next one is due.
    /// With `--soak`, a sample more than half an interval late is skipped,
    /// as vstats-agent's schedule skips the ticks it missed: after a stall
    /// of the generator an agent never sends two samples back to back.
    fn send_due(&mut self, seq: &mut u64, t0: Instant, now: Instant) -> Instant {
        let agents = self.args.agents;
        let per_second = self.args.rate * agents as f64;
        loop {
            let due = t0 + Duration::from_secs_f64(*seq as f64 / per_second);
            if due > now {
                return due;
            }
            self.stats.worst_send_lag = self.stats.worst_send_lag.max(now - due);
            if self.soak.is_some() && (now - due).as_secs_f64() * self.args.rate > 0.5 {
                self.stats.skipped_late += 1;
            } else {
                self.send((*seq % agents as u64) as usize);
            }
            *seq += 1;
        }
    }

    /// Handles events until `next_due` (at most [`MAX_WAIT`]), expiring
    /// stuck handshakes twice a second.
    fn poll_until(&mut self, next_due: Instant, last_expiry: &mut Instant) {
        self.poll(
            next_due
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT),
        );
        if last_expiry.elapsed() >= Duration::from_millis(500) {
            *last_expiry = Instant::now();
            self.expire_handshakes();
        }
    }

    fn in_flight(&self) -> usize {
        self.conns.len() - self.free.len()
    }
}

/// The whole number after `key` (a stamp field, the sample's last, so
/// searched from the end).
fn stamp_in(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)?;
    let digits = &text[at + key.len()..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn handshake_failure(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(response) => format!("HTTP {}", response.status().as_u16()),
        tungstenite::Error::Io(e) => format!("io: {}", e.kind()),
        e => e.to_string(),
    }
}

/// CPU time the whole machine spent busy (not idle or waiting), in
/// seconds, from the first line of `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Some(busy as f64 / hz as f64)
}

/// CPU use over a window, in percent of one core.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    relay: Option<f64>,
    loadgen: Option<f64>,
    /// Everything else on the machine: on a shared machine other work
    /// competes for the cores, and this says how much.
    others: Option<f64>,
}

/// CPU counters sampled at the start of a window.
struct CpuWindow {
    relay: Option<f64>,
    me: Option<f64>,
    machine: Option<f64>,
    at: Instant,
}

impl CpuWindow {
    fn start(relay_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            relay: relay_pid.and_then(|pid| cpu_seconds(&pid.to_string())),
            me: cpu_seconds("self"),
            machine: machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    fn since_start(&self, relay_pid: Option<u32>) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64();
        let used =
            |before: Option<f64>, after: Option<f64>| Some((after? - before?) / wall * 100.0);
        let relay = used(
            self.relay,
            relay_pid.and_then(|pid| cpu_seconds(&pid.to_string())),
        );
        let loadgen = used(self.me, cpu_seconds("self"));
        let machine = used(self.machine, machine_busy_seconds());
        let others = machine.map(|m| (m - relay.unwrap_or(0.0) - loadgen.unwrap_or(0.0)).max(0.0));
        CpuUse {
            relay,
            loadgen,
            others,
        }
    }
}

/// One line: the percentiles of the sorted latencies, in milliseconds.
fn print_latency(label: &str, sorted: &[u32]) {
    let show = |q| percentile(sorted, q).map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    println!(
        "{label}: p50 {} p90 {} p99 {} max {} ({} samples)",
        show(50.0),
        show(90.0),
        show(99.0),
        show(100.0),
        sorted.len()
    );
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

fn run_handshakes(g: &mut LoadGen, seconds: f64) -> serde_json::Value {
    let in_flight = g.args.agents.max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    g.window_us = (g.micros(start), g.micros(end));
    let cpu = CpuWindow::start(g.args.relay_pid);
    let mut next_token = 0;
    let mut last_expiry = start;
    while Instant::now() < end {
        while g.in_flight() < in_flight {
            g.open(Role::Agent(next_token));
            next_token = (next_token + 1) % g.tokens.len();
        }
        g.poll(MAX_WAIT);
        if last_expiry.elapsed() >= Duration::from_millis(500) {
            last_expiry = Instant::now();
            g.expire_handshakes();
        }
    }
    let cpu = cpu.since_start(g.args.relay_pid);
    let rate = g.stats.handshakes as f64 / seconds;
    println!(
        "handshakes: {} in {seconds} s = {rate:.0}/s ({} in flight, {}), {} failed",
        g.stats.handshakes,
        in_flight,
        if g.args.tls { "TLS" } else { "plain" },
        g.stats.agents_failed
    );
    print_cpu(cpu);
    json!({
        "mode": "handshakes",
        "tls": g.args.tls,
        "in_flight": in_flight,
        "seconds": seconds,
        "handshakes": g.stats.handshakes,
        "handshakes_per_s": rate,
        "relay_cpu_percent": cpu.relay,
        "relay_handshakes_per_cpu_s": cpu.relay.map(|c| rate / (c / 100.0)),
        "loadgen_cpu_percent": cpu.loadgen,
        "others_cpu_percent": cpu.others,
        "failed": g.stats.agents_failed,
        "failures": g.stats.failures,
    })
}

fn print_cpu(cpu: CpuUse) {
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} %"));
    println!(
        "CPU (of one core): relay {}, loadgen {}, other processes {}",
        show(cpu.relay),
        show(cpu.loadgen),
        show(cpu.others)
    );
}

fn run_fleet(g: &mut LoadGen) -> serde_json::Value {
    let (agents, dashboards) = (g.args.agents, g.args.dashboards);
    g.open_dashboards();
    let ramp = Duration::from_secs_f64(g.args.ramp.unwrap_or(agents as f64 / 2000.0));
    let t0 = Instant::now();
    let window_start = t0 + ramp + SETTLE;
    let window_end = window_start + Duration::from_secs_f64(g.args.duration);
    let end = window_end + GRACE;
    g.window_us = (g.micros(window_start), g.micros(window_end));
    let mut seq: u64 = 0;
    let mut opened = 0;
    let mut cpu = None;
    let mut at_end = None;
    let mut last_expiry = t0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        g.open_due_agents(&mut opened, t0, ramp);
        if cpu.is_none() && now >= window_start {
            cpu = Some(CpuWindow::start(g.args.relay_pid));
        }
        if at_end.is_none() && now >= window_end {
            let connected = g.agent_conn.iter().filter(|c| c.is_some()).count();
            let pid = g.args.relay_pid.map(|p| p.to_string());
            let memory = |field| pid.as_deref().and_then(|p| status_kib(p, field));
            at_end = Some((
                cpu.as_ref()
                    .map(|c: &CpuWindow| c.since_start(g.args.relay_pid))
                    .unwrap_or_default(),
                connected,
                memory("VmRSS"),
                memory("VmHWM"),
            ));
        }
        let mut next_due = end;
        if !g.args.idle && agents > 0 && now < window_end {
            next_due = g.send_due(&mut seq, t0, now);
        }
        g.poll_until(next_due, &mut last_expiry);
    }
    let (cpu, connected_at_end, rss, hwm) = at_end.unwrap_or_default();
    g.stats.latencies_us.sort_unstable();
    let lat = &g.stats.latencies_us;
    let p = |q| percentile(lat, q);
    let received = &g.stats.received;
    let expected = g.stats.samples_sent_in_window;
    let (min_received, max_received) = (
        received.iter().copied().min().unwrap_or(0),
        received.iter().copied().max().unwrap_or(0),
    );
    println!(
        "agents: {} connected ({} at the end of the window), {} failed {:?}; dashboards: {}/{dashboards}",
        g.stats.agents_connected,
        connected_at_end,
        g.stats.agents_failed,
        g.stats.failures,
        g.stats.dashboards_connected
    );
    println!(
        "samples: {} sent, {expected} in the {:.0} s window; per dashboard received {min_received}..{max_received}",
        g.stats.samples_sent, g.args.duration
    );
    print_latency("latency ms", lat);
    print_cpu(cpu);
    println!(
        "relay memory: VmRSS {} KiB, VmHWM {} KiB; loadgen: worst send lag {:.1} ms, slowest connect {:.1} ms, {} sends blocked, {} connections dropped",
        rss.map_or("n/a".to_owned(), |v| v.to_string()),
        hwm.map_or("n/a".to_owned(), |v| v.to_string()),
        g.stats.worst_send_lag.as_secs_f64() * 1000.0,
        g.stats.slowest_connect.as_secs_f64() * 1000.0,
        g.stats.send_blocked,
        g.stats.dropped
    );
    json!({
        "mode": if g.args.idle { "idle" } else { "fleet" },
        "tls": g.args.tls,
        "patch": g.args.patch,
        "agents": agents,
        "dashboards": dashboards,
        "rate_hz": g.args.rate,
        "sample_bytes": g.args.sample_bytes,
        "ramp_s": ramp.as_secs_f64(),
        "window_s": g.args.duration,
        "agents_connected": g.stats.agents_connected,
        "agents_connected_at_end": connected_at_end,
        "agents_failed": g.stats.agents_failed,
        "dashboards_connected": g.stats.dashboards_connected,
        "failures": g.stats.failures,
        "dropped": g.stats.dropped,
        "samples_sent": g.stats.samples_sent,
        "samples_sent_in_window": expected,
        "received_per_dashboard_min": min_received,
        "received_per_dashboard_max": max_received,
        "latency_ms": {"p50": p(50.0), "p90": p(90.0), "p99": p(99.0), "max": p(100.0)},
        "relay_cpu_percent": cpu.relay,
        "relay_rss_kib": rss,
        "relay_hwm_kib": hwm,
        "loadgen_cpu_percent": cpu.loadgen,
        "others_cpu_percent": cpu.others,
        "loadgen_worst_send_lag_ms": g.stats.worst_send_lag.as_secs_f64() * 1000.0,
        "loadgen_slowest_connect_ms": g.stats.slowest_connect.as_secs_f64() * 1000.0,
        "send_blocked": g.stats.send_blocked,
    })
}

/// One look at the relay during a `--deaf-dashboards` run.
struct Probe {
    /// Seconds since the first deaf dashboard connected.
    t: f64,
    rss_kib: Option<u64>,
    /// The relay's gauge of open dashboards, deaf and reading.
    dashboards: Option<u64>,
    /// The machine's TCP socket memory in KiB (both ends' buffers, and
    /// those of sockets the relay closed with data still unsent), and how
    /// many such orphaned sockets the kernel holds.
    tcp_mem_kib: Option<u64>,
    orphans: Option<u64>,
}

/// Asks the relay for `/metrics` on a new connection (TLS for `wss://`).
#[derive(Clone)]
struct Scraper {
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Scraper {
    /// The relay's count of open dashboards, or `None` without an answer.
    fn dashboards(&self) -> Option<u64> {
        let mut tcp = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).ok()?;
        tcp.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
        tcp.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut response = Vec::new();
        let read = match &self.tls {
            None => {
                tcp.write_all(request.as_bytes()).ok()?;
                tcp.read_to_end(&mut response)
            }
            Some((config, name)) => {
                let tls = ClientConnection::new(config.clone(), name.clone()).ok()?;
                let mut stream = rustls::StreamOwned::new(tls, tcp);
                stream.write_all(request.as_bytes()).ok()?;
                stream.read_to_end(&mut response)
            }
        };
        // Closed without TLS's close_notify: the response is still whole
        // if the gauge is in it.
        if let Err(e) = read {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return None;
            }
        }
        String::from_utf8_lossy(&response)
            .lines()
            .find_map(|l| l.strip_prefix(DASHBOARD_GAUGE))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// The `TCP:` line of `/proc/net/sockstat`: socket memory in KiB, orphans.
fn tcp_sockstat() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/net/sockstat") else {
        return (None, None);
    };
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("TCP:")) else {
        return (None, None);
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| {
        let at = fields.iter().position(|f| *f == name)?;
        fields.get(at + 1)?.parse::<u64>().ok()
    };
    let page_kib = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64
        / 1024;
    (value("mem").map(|pages| pages * page_kib), value("orphan"))
}

/// Probes the relay once a second, `start + 1 s` to `start + seconds`, on
/// a thread of its own so that a slow `/metrics` never delays the agents;
/// the channel closes after the last probe.
fn spawn_prober(
    scraper: Scraper,
    relay_pid: Option<u32>,
    start: Instant,
    seconds: u64,
) -> mpsc::Receiver<Probe> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let pid = relay_pid.map(|p| p.to_string());
        for k in 1..=seconds {
            std::thread::sleep(
                (start + Duration::from_secs(k)).saturating_duration_since(Instant::now()),
            );
            let t = start.elapsed().as_secs_f64();
            let rss_kib = pid.as_deref().and_then(|p| status_kib(p, "VmRSS"));
            let dashboards = scraper.dashboards();
            let (tcp_mem_kib, orphans) = tcp_sockstat();
            let probe = Probe {
                t,
                rss_kib,
                dashboards,
                tcp_mem_kib,
                orphans,
            };
            if tx.send(probe).is_err() {
                return;
            }
        }
    });
    rx
}

/// `--deaf-dashboards`: the fleet with reading dashboards as in
/// [`run_fleet`]; after the ramp and [`DEAF_BASELINE`], the deaf dashboards
/// connect and the relay is probed once a second for `--duration` seconds.
/// The reading dashboards' latency covers those seconds.
fn run_deaf(g: &mut LoadGen) -> serde_json::Value {
    let (agents, dashboards, deaf) = (g.args.agents, g.args.dashboards, g.args.deaf_dashboards);
    g.open_dashboards();
    let ramp = Duration::from_secs_f64(g.args.ramp.unwrap_or(agents as f64 / 2000.0));
    let deaf_ramp = Duration::from_secs_f64(deaf as f64 / DEAF_CONNECTS_PER_S);
    let seconds = (g.args.duration.ceil() as u64).max(1);
    let t0 = Instant::now();
    let start = t0 + ramp + DEAF_BASELINE;
    let end = start + Duration::from_secs(seconds);
    g.window_us = (g.micros(start), g.micros(end));
    let pid = g.args.relay_pid;
    let scraper = Scraper {
        addr: g.args.addr,
        tls: g.tls.clone(),
    };
    let mut seq: u64 = 0;
    let mut opened = 0;
    let mut deaf_opened = 0;
    let mut probes = None;
    let mut before = (None, None, 0);
    let mut cpu = None;
    let mut timeline: Vec<(Probe, u64)> = Vec::new();
    let mut last_expiry = t0;
    let connected_agents = |g: &LoadGen| g.agent_conn.iter().filter(|c| c.is_some()).count();
    loop {
        let now = Instant::now();
        g.open_due_agents(&mut opened, t0, ramp);
        if probes.is_none() && now >= start {
            before = (
                pid.and_then(|p| status_kib(&p.to_string(), "VmRSS")),
                scraper.dashboards(),
                connected_agents(g),
            );
            println!(
                "before the deaf dashboards: relay RSS {} KiB, relay's dashboard gauge {}, {} agents connected",
                before.0.map_or("n/a".to_owned(), |v| v.to_string()),
                before.1.map_or("n/a".to_owned(), |v| v.to_string()),
                before.2
            );
            cpu = Some(CpuWindow::start(pid));
            probes = Some(spawn_prober(scraper.clone(), pid, start, seconds));
        }
        if probes.is_some() {
            while deaf_opened < deaf
                && start + deaf_ramp.mul_f64(deaf_opened as f64 / deaf as f64) <= Instant::now()
            {
                g.open(Role::Deaf);
                deaf_opened += 1;
            }
        }
        let mut next_due = end;
        if agents > 0 && now < end {
            next_due = g.send_due(&mut seq, t0, now);
        }
        if let Some(rx) = &probes {
            let mut done = false;
            loop {
                match rx.try_recv() {
                    Ok(probe) => {
                        let deaf_open = probe
                            .dashboards
                            .map(|d| d.saturating_sub(g.stats.dashboards_open));
                        let show = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
                        println!(
                            "deaf t={:.1} rss_kib={} deaf_open={} gauge={} ended_here={} tcp_mem_kib={} orphans={}",
                            probe.t,
                            show(probe.rss_kib),
                            show(deaf_open),
                            show(probe.dashboards),
                            g.stats.deaf_ended_here,
                            show(probe.tcp_mem_kib),
                            show(probe.orphans)
                        );
                        timeline.push((probe, g.stats.deaf_ended_here));
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                break;
            }
        }
        g.poll_until(next_due, &mut last_expiry);
    }
    let cpu = cpu
        .map(|c: CpuWindow| c.since_start(pid))
        .unwrap_or_default();
    let hwm = pid.and_then(|p| status_kib(&p.to_string(), "VmHWM"));
    let connected_at_end = connected_agents(g);
    let live = g.stats.dashboards_open;
    // The deaf dashboards the relay holds, by the probes.
    let held: Vec<(f64, Option<u64>)> = timeline
        .iter()
        .map(|(p, _)| (p.t, p.dashboards.map(|d| d.saturating_sub(live))))
        .collect();
    let all_in = held
        .iter()
        .position(|(_, n)| *n == Some(g.stats.deaf_connected) && g.stats.deaf_connected > 0);
    let after_all_in = |pred: &dyn Fn(u64) -> bool| {
        all_in.and_then(|i| {
            held[i..]
                .iter()
                .find(|(_, n)| n.is_some_and(pred))
                .map(|(t, _)| *t)
        })
    };
    let first_gone_at = after_all_in(&|n| n < g.stats.deaf_connected);
    let all_gone_at = after_all_in(&|n| n == 0);
    let peak = timeline
        .iter()
        .filter_map(|(p, _)| Some((p.rss_kib?, p.t)))
        .max_by_key(|&(rss, _)| rss);
    let tcp_peak = timeline.iter().filter_map(|(p, _)| p.tcp_mem_kib).max();
    let rss_at_end = timeline.last().and_then(|(p, _)| p.rss_kib);
    g.stats.latencies_us.sort_unstable();
    let lat = &g.stats.latencies_us;
    let p = |q| percentile(lat, q);
    let received = &g.stats.received;
    let expected = g.stats.samples_sent_in_window;
    let (min_received, max_received) = (
        received.iter().copied().min().unwrap_or(0),
        received.iter().copied().max().unwrap_or(0),
    );
    let show = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
    let show_s = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.1} s"));
    println!(
        "deaf dashboards: {} connected, {} failed {:?}; the relay held all of them at {}, fewer at {}, none at {}; {} ended here",
        g.stats.deaf_connected,
        g.stats.deaf_failed,
        g.stats.failures,
        show_s(all_in.map(|i| held[i].0)),
        show_s(first_gone_at),
        show_s(all_gone_at),
        g.stats.deaf_ended_here
    );
    println!(
        "relay RSS: {} KiB before, peak {} KiB at {} (VmHWM {} KiB), {} KiB at the end; TCP memory peak {} KiB",
        show(before.0),
        show(peak.map(|(rss, _)| rss)),
        show_s(peak.map(|(_, t)| t)),
        show(hwm),
        show(rss_at_end),
        show(tcp_peak)
    );
    println!(
        "agents: {} connected ({connected_at_end} at the end); samples: {} sent, {expected} in the {seconds} s; reading dashboards: {live}/{dashboards} open at the end, received {min_received}..{max_received}",
        g.stats.agents_connected, g.stats.samples_sent,
    );
    print_latency("reading dashboards' latency ms", lat);
    print_cpu(cpu);
    let timeline: Vec<serde_json::Value> = timeline
        .iter()
        .map(|(probe, ended_here)| {
            json!({
                "t": probe.t,
                "rss_kib": probe.rss_kib,
                "dashboards": probe.dashboards,
                "tcp_mem_kib": probe.tcp_mem_kib,
                "orphans": probe.orphans,
                "deaf_ended_here": ended_here,
            })
        })
        .collect();
    json!({
        "mode": "deaf",
        "tls": g.args.tls,
        "patch": g.args.patch,
        "agents": agents,
        "dashboards": dashboards,
        "deaf_dashboards": deaf,
        "rate_hz": g.args.rate,
        "sample_bytes": g.args.sample_bytes,
        "seconds": seconds,
        "agents_connected": g.stats.agents_connected,
        "agents_connected_at_end": connected_at_end,
        "agents_failed": g.stats.agents_failed,
        "dashboards_connected": g.stats.dashboards_connected,
        "dashboards_open_at_end": live,
        "deaf_connected": g.stats.deaf_connected,
        "deaf_failed": g.stats.deaf_failed,
        "deaf_ended_here": g.stats.deaf_ended_here,
        "failures": g.stats.failures,
        "deaf_all_in_at_s": all_in.map(|i| held[i].0),
        "deaf_first_gone_at_s": first_gone_at,
        "deaf_all_gone_at_s": all_gone_at,
        "relay_rss_before_kib": before.0,
        "relay_rss_peak_kib": peak.map(|(rss, _)| rss),
        "relay_rss_peak_at_s": peak.map(|(_, t)| t),
        "relay_rss_end_kib": rss_at_end,
        "relay_hwm_kib": hwm,
        "tcp_mem_peak_kib": tcp_peak,
        "samples_sent": g.stats.samples_sent,
        "samples_sent_in_window": expected,
        "received_per_dashboard_min": min_received,
        "received_per_dashboard_max": max_received,
        "latency_ms": {"p50": p(50.0), "p90": p(90.0), "p99": p(99.0), "max": p(100.0)},
        "relay_cpu_percent": cpu.relay,
        "loadgen_cpu_percent": cpu.loadgen,
        "others_cpu_percent": cpu.others,
        "loadgen_worst_send_lag_ms": g.stats.worst_send_lag.as_secs_f64() * 1000.0,
        "send_blocked": g.stats.send_blocked,
        "timeline": timeline,
    })
}

/// A reading dashboard's connection, as the soak counts it.
struct Tally {
    /// When its upgrade completed, on the generator's clock.
    opened: Duration,
    /// The relay lifetime it belongs to.
    epoch: u32,
    /// Per agent, the last sample number received on it.
    last: Vec<Option<u32>>,
    /// Until when it counts as behind ([`SOAK_BEHIND`]).
    behind_until: Duration,
}

/// What a missing sample was, to one dashboard connection.
enum Missing {
    /// Sent before the connection's upgrade, or to another relay.
    NotExpected,
    /// Sent less than [`SOAK_EXCUSE`] before its relay died.
    Excused,
    /// Missed while the dashboard was behind.
    Behind,
    Lost,
}

/// `--soak` state: who reconnects when, every sample's number and time,
/// the relay's lifetimes, and the tallies.
struct Soak {
    /// Per agent, when each numbered sample was sent (the index is its
    /// number), in ms on the generator's clock.
    sent_ms: Vec<Vec<u32>>,
    /// Per agent, each connection's first sample number and epoch.
    connections: Vec<Vec<(u32, u32)>>,
    /// Per agent and per dashboard, the epoch of its latest connect.
    agent_epoch: Vec<u32>,
    dashboard_epoch: Vec<u32>,
    /// Per reading dashboard, its open connection's tally.
    tallies: Vec<Option<Tally>>,
    /// Ended connections, with when they ended and their dashboard, whose
    /// tail is still to be counted.
    ended_tallies: Vec<(Duration, usize, Tally)>,
    /// Who tries again when: (due in ms, role), soonest first.
    retries: std::collections::BinaryHeap<std::cmp::Reverse<(u64, RetryRole)>>,
    /// Connects allowed now ([`SOAK_CONNECTS_PER_S`], a burst of 100).
    connect_budget: f64,
    budget_at: Duration,
    rng: XorShift,
    /// The relay's pid and lifetimes: `ups[e]` and `deaths[e]` are when
    /// epoch `e` was seen to start and to end.
    pid: Option<u32>,
    relay_up: bool,
    epoch: u32,
    ups: Vec<Duration>,
    deaths: Vec<Duration>,
    /// Per epoch: when every agent, and every reading dashboard, was
    /// connected to it.
    agents_back: Vec<Option<Duration>>,
    dashboards_back: Vec<Option<Duration>>,
    /// When connections ended, to class them (at a restart or a fault).
    agent_drops: Vec<Duration>,
    dashboard_drops: Vec<Duration>,
    received: u64,
    duplicates: u64,
    lost: u64,
    excused: u64,
    behind: u64,
    /// The worst lateness of a sample at a reading dashboard, in ms.
    worst_latency_ms: u32,
    /// Missed samples by second of the run, dashboard and kind ("lost" or
    /// "behind"), for the report.
    gaps: std::collections::BTreeMap<(u64, usize, &'static str), u64>,
    slow: Arc<SlowStats>,
    /// The relay's state for the slow dashboards' threads: up, and the
    /// epoch.
    shared_up: Arc<std::sync::atomic::AtomicBool>,
    shared_epoch: Arc<std::sync::atomic::AtomicU32>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RetryRole {
    Agent(usize),
    Dashboard(usize),
}

impl Soak {
    fn new(agents: usize, dashboards: usize) -> Soak {
        Soak {
            sent_ms: vec![Vec::new(); agents],
            connections: vec![Vec::new(); agents],
            agent_epoch: vec![0; agents],
            dashboard_epoch: vec![0; dashboards],
            tallies: (0..dashboards).map(|_| None).collect(),
            ended_tallies: Vec::new(),
            retries: std::collections::BinaryHeap::new(),
            connect_budget: 100.0,
            budget_at: Duration::ZERO,
            rng: XorShift(0x2545_f491_4f6c_dd1d),
            pid: None,
            relay_up: true,
            epoch: 0,
            ups: vec![Duration::ZERO],
            deaths: Vec::new(),
            agents_back: vec![None],
            dashboards_back: vec![None],
            agent_drops: Vec::new(),
            dashboard_drops: Vec::new(),
            received: 0,
            duplicates: 0,
            lost: 0,
            excused: 0,
            behind: 0,
            worst_latency_ms: 0,
            gaps: std::collections::BTreeMap::new(),
            slow: Arc::new(SlowStats::default()),
            shared_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            shared_epoch: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        }
    }

    fn next_stamp(&self, agent: usize) -> u64 {
        (agent as u64 + 1) * SOAK_STAMP_BASE + self.sent_ms[agent].len() as u64
    }

    fn sent(&mut self, agent: usize, at: Duration) {
        self.sent_ms[agent].push(at.as_millis() as u32);
    }

    fn opening(&mut self, role: Role) {
        match role {
            Role::Agent(i) => self.agent_epoch[i] = self.epoch,
            Role::Dashboard(d) => self.dashboard_epoch[d] = self.epoch,
            Role::Deaf => {}
        }
    }

    fn agent_opened(&mut self, agent: usize) {
        let first = self.sent_ms[agent].len() as u32;
        self.connections[agent].push((first, self.agent_epoch[agent]));
    }

    fn dashboard_opened(&mut self, dashboard: usize, now: Duration) {
        let agents = self.sent_ms.len();
        self.tallies[dashboard] = Some(Tally {
            opened: now,
            epoch: self.dashboard_epoch[dashboard],
            last: vec![None; agents],
            behind_until: Duration::ZERO,
        });
    }

    fn ended(&mut self, role: Role, now: Duration) {
        match role {
            Role::Agent(_) => self.agent_drops.push(now),
            Role::Dashboard(d) => {
                self.dashboard_drops.push(now);
                if let Some(tally) = self.tallies[d].take() {
                    self.ended_tallies.push((now, d, tally));
                }
            }
            Role::Deaf => {}
        }
    }

    fn retry_later(&mut self, role: Role, now: Duration) {
        let delay = SOAK_RETRY_MS.start()
            + self.rng.next() % (SOAK_RETRY_MS.end() - SOAK_RETRY_MS.start() + 1);
        let role = match role {
            Role::Agent(i) => RetryRole::Agent(i),
            Role::Dashboard(d) => RetryRole::Dashboard(d),
            Role::Deaf => return,
        };
        self.schedule(role, now.as_millis() as u64 + delay);
    }

    fn schedule(&mut self, role: RetryRole, due_ms: u64) {
        self.retries.push(std::cmp::Reverse((due_ms, role)));
    }

    /// The retries due by `now` that the connect budget allows, while the
    /// relay is up.
    fn due(&mut self, now: Duration) -> Vec<RetryRole> {
        let refill = (now - self.budget_at).as_secs_f64() * SOAK_CONNECTS_PER_S;
        self.connect_budget = (self.connect_budget + refill).min(100.0);
        self.budget_at = now;
        let mut due = Vec::new();
        if !self.relay_up {
            return due;
        }
        let now_ms = now.as_millis() as u64;
        while self.connect_budget >= 1.0 {
            match self.retries.peek() {
                Some(std::cmp::Reverse((at, _))) if *at <= now_ms => {}
                _ => break,
            }
            if let Some(std::cmp::Reverse((_, role))) = self.retries.pop() {
                due.push(role);
                self.connect_budget -= 1.0;
            }
        }
        due
    }

    /// Looks at the relay's pid file: the current relay dead (or replaced)
    /// ends its epoch, a new live pid starts the next.
    fn probe(&mut self, pid_file: &std::path::Path, now: Duration) {
        let in_file = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if self.pid.is_none() {
            // The first look: the relay the run starts with is epoch 0.
            self.pid = in_file.filter(|&p| alive(p));
            return;
        }
        if self.relay_up && (in_file != self.pid || !self.pid.is_some_and(alive)) {
            self.deaths.push(now);
            self.relay_up = false;
        }
        if let Some(pid) = in_file.filter(|&p| !self.relay_up && Some(p) != self.pid && alive(p)) {
            self.epoch += 1;
            self.ups.push(now);
            self.agents_back.push(None);
            self.dashboards_back.push(None);
            self.relay_up = true;
            self.pid = Some(pid);
        }
        self.shared_up
            .store(self.relay_up, std::sync::atomic::Ordering::Relaxed);
        self.shared_epoch
            .store(self.epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// Notes when every agent and reading dashboard is connected to the
    /// current relay.
    fn check_back(&mut self, agent_conn: &[Option<usize>], now: Duration) {
        if !self.relay_up {
            return;
        }
        let e = self.epoch as usize;
        if self.agents_back[e].is_none()
            && agent_conn
                .iter()
                .zip(&self.agent_epoch)
                .all(|(c, &ep)| c.is_some() && ep == self.epoch)
        {
            self.agents_back[e] = Some(now);
        }
        if self.dashboards_back[e].is_none()
            && self
                .tallies
                .iter()
                .all(|t| t.as_ref().is_some_and(|t| t.epoch == self.epoch))
        {
            self.dashboards_back[e] = Some(now);
        }
    }

    /// A sample number arrived at a reading dashboard: the numbers it
    /// skipped are counted.
    fn received(&mut self, dashboard: usize, stamp: u64, now: Duration) {
        let agent = (stamp / SOAK_STAMP_BASE) as usize;
        if agent == 0 || agent > self.sent_ms.len() {
            return; // a real agent's `processes`
        }
        let (agent, seq) = (agent - 1, (stamp % SOAK_STAMP_BASE) as u32);
        let Some(mut tally) = self.tallies[dashboard].take() else {
            return;
        };
        if let Some(&sent) = self.sent_ms[agent].get(seq as usize) {
            let late = (now.as_millis() as u32).saturating_sub(sent);
            self.worst_latency_ms = self.worst_latency_ms.max(late);
            if Duration::from_millis(late as u64) >= SOAK_BEHIND {
                tally.behind_until = now + SOAK_BEHIND_FOR;
            }
        }
        match tally.last[agent] {
            Some(last) if seq <= last => self.duplicates += 1,
            last => {
                self.received += 1;
                let from = match last {
                    Some(last) => last + 1,
                    None => self.first_after(agent, tally.opened),
                };
                self.count_missing(dashboard, &tally, agent, from..seq, now);
                tally.last[agent] = Some(seq);
            }
        }
        self.tallies[dashboard] = Some(tally);
    }

    /// The first sample number an agent sent after `at`.
    fn first_after(&self, agent: usize, at: Duration) -> u32 {
        let at = at.as_millis() as u32;
        self.sent_ms[agent].partition_point(|&t| t <= at) as u32
    }

    fn classify(&self, tally: &Tally, agent: usize, seq: u32, now: Duration) -> Missing {
        let sent = Duration::from_millis(self.sent_ms[agent][seq as usize] as u64);
        if sent <= tally.opened {
            return Missing::NotExpected;
        }
        let connections = &self.connections[agent];
        let at = connections.partition_point(|&(first, _)| first <= seq);
        let epoch = connections[at.saturating_sub(1)].1;
        if epoch != tally.epoch {
            return Missing::NotExpected;
        }
        match self.deaths.get(epoch as usize) {
            Some(&death) if sent + SOAK_EXCUSE >= death => Missing::Excused,
            _ if tally.behind_until >= now => Missing::Behind,
            _ => Missing::Lost,
        }
    }

    /// Counts the samples `seqs` of `agent` that a dashboard's connection
    /// missed, as found at `now`.
    fn count_missing(
        &mut self,
        dashboard: usize,
        tally: &Tally,
        agent: usize,
        seqs: std::ops::Range<u32>,
        now: Duration,
    ) {
        for seq in seqs {
            let kind = match self.classify(tally, agent, seq, now) {
                Missing::NotExpected => continue,
                Missing::Excused => {
                    self.excused += 1;
                    continue;
                }
                Missing::Behind => {
                    self.behind += 1;
                    "behind"
                }
                Missing::Lost => {
                    self.lost += 1;
                    "lost"
                }
            };
            if self.gaps.len() < 1000 {
                *self
                    .gaps
                    .entry((now.as_secs(), dashboard, kind))
                    .or_default() += 1;
            }
        }
    }

    /// Counts the tail of a tally: the samples sent before `until` after
    /// the last one it received.
    fn count_tail(&mut self, dashboard: usize, tally: &Tally, until: Duration) {
        let end = until;
        let until = until.as_millis() as u32;
        for agent in 0..self.sent_ms.len() {
            let from = match tally.last[agent] {
                Some(last) => last + 1,
                None => self.first_after(agent, tally.opened),
            };
            let to = self.sent_ms[agent].partition_point(|&t| t < until) as u32;
            if from < to {
                self.count_missing(dashboard, tally, agent, from..to, end);
            }
        }
    }

    /// Counts the tails of connections that ended at least
    /// [`SOAK_SETTLE`] ago (all of them with `now` = `None`).
    fn settle(&mut self, now: Option<Duration>) {
        let ended = std::mem::take(&mut self.ended_tallies);
        for (at, dashboard, tally) in ended {
            if now.is_some_and(|now| at + SOAK_SETTLE > now) {
                self.ended_tallies.push((at, dashboard, tally));
            } else {
                self.count_tail(dashboard, &tally, at);
            }
        }
    }

    /// Connections that ended within [`SOAK_EXCUSE`] of a relay's death
    /// (at a restart), and the others (faults).
    fn class_drops(&self, drops: &[Duration]) -> (usize, usize) {
        let at_restart = drops
            .iter()
            .filter(|&&d| {
                self.deaths
                    .iter()
                    .any(|&death| d + SOAK_EXCUSE >= death && d <= death + SOAK_EXCUSE)
            })
            .count();
        (at_restart, drops.len() - at_restart)
    }
}

/// Whether a process runs (exists and is no zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The slow dashboards' counts, shared with their threads.
#[derive(Default)]
struct SlowStats {
    open: std::sync::atomic::AtomicU64,
    connects: std::sync::atomic::AtomicU64,
    samples: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    /// How their connections ended, with counts.
    ends: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A socket read at most `bytes_per_s`: each read takes at most a tenth
/// of that and then sleeps for as long as those bytes are worth.
struct Throttled {
    tcp: TcpStream,
    bytes_per_s: usize,
    stats: Arc<SlowStats>,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let most = (self.bytes_per_s / 10).max(1).min(buf.len());
        let n = self.tcp.read(&mut buf[..most])?;
        self.stats
            .bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64));
        Ok(n)
    }
}

impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// What a slow dashboard's thread shares with the loop.
#[derive(Clone)]
struct SlowShared {
    url: String,
    addr: SocketAddr,
    bytes_per_s: usize,
    up: Arc<std::sync::atomic::AtomicBool>,
    epoch: Arc<std::sync::atomic::AtomicU32>,
    stats: Arc<SlowStats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// One slow dashboard on a thread of its own: connects while the relay is
/// up, reads through [`Throttled`], and after its connection ends tries
/// again in 0.5 to 1 s, until `stop`. Once its relay is gone it leaves at
/// once rather than read, at its pace, what the dead relay's socket still
/// holds (minutes of it), so that it watches each new relay too.
fn spawn_slow_dashboard(shared: SlowShared, seed: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    std::thread::spawn(move || {
        let mut rng = XorShift(seed | 1);
        while !shared.stop.load(Relaxed) {
            if !shared.up.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let end = slow_session(&shared);
            let mut ends = shared.stats.ends.lock().expect("not poisoned");
            *ends.entry(end).or_default() += 1;
            drop(ends);
            std::thread::sleep(Duration::from_millis(
                SOAK_RETRY_MS.start() + rng.next() % 501,
            ));
        }
    });
}

/// One connection of a slow dashboard; returns how it ended.
fn slow_session(shared: &SlowShared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let SlowShared {
        url,
        addr,
        bytes_per_s,
        stats,
        stop,
        ..
    } = shared;
    let (addr, bytes_per_s) = (*addr, *bytes_per_s);
    let epoch = shared.epoch.load(Relaxed);
    let tcp = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(tcp) => tcp,
        Err(e) => return format!("connect: {}", e.kind()),
    };
    // A small receive buffer: the relay feels the slowness soon.
    let _ = nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::RcvBuf, &4096);
    // Wake now and then to look at `stop`.
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let stream = Throttled {
        tcp,
        bytes_per_s,
        stats: stats.clone(),
    };
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let request = format!("{url}/ws")
        .into_client_request()
        .expect("a valid URL");
    let mut ws = match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(e)) => return format!("handshake: {}", handshake_failure(&e)),
        Err(HandshakeError::Interrupted(_)) => return "handshake: timeout".to_owned(),
    };
    stats.connects.fetch_add(1, Relaxed);
    stats.open.fetch_add(1, Relaxed);
    let end = loop {
        if stop.load(Relaxed) {
            break "end of run".to_owned();
        }
        if shared.epoch.load(Relaxed) != epoch || !shared.up.load(Relaxed) {
            break "left: the relay was killed".to_owned();
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                if text.starts_with(METRICS_PREFIX) {
                    stats.samples.fetch_add(1, Relaxed);
                }
            }
            Ok(Message::Close(frame)) => {
                break match frame {
                    Some(f) => format!("closed by the relay: {}", u16::from(f.code)),
                    None => "closed by the relay".to_owned(),
                };
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::Io(e)) => break format!("io: {}", e.kind()),
            Err(e) => break e.to_string(),
        }
    };
    stats.open.fetch_sub(1, Relaxed);
    end
}

/// `--soak`: the fleet and the reading dashboards for that long, across
/// relay restarts (see the module doc, "Soak").
fn run_soak(g: &mut LoadGen, seconds: f64) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let (agents, dashboards) = (g.args.agents, g.args.dashboards);
    let pid_file = g.args.relay_pid_file.clone();
    let now = g.clock.elapsed();
    if let (Some(path), Some(soak)) = (&pid_file, g.soak.as_mut()) {
        soak.probe(path, now);
        if soak.pid.is_none() {
            eprintln!("loadgen: no live relay pid in {}", path.display());
        }
    }
    g.open_dashboards();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let soak = g.soak.as_ref().expect("soak mode");
    let slow = soak.slow.clone();
    let shared = SlowShared {
        url: g.args.url.clone(),
        addr: g.args.addr,
        bytes_per_s: g.args.slow_bytes_per_s,
        up: soak.shared_up.clone(),
        epoch: soak.shared_epoch.clone(),
        stats: slow.clone(),
        stop: stop.clone(),
    };
    for k in 0..g.args.slow_dashboards {
        spawn_slow_dashboard(shared.clone(), 0x5851_f42d_4c95_7f2d ^ k as u64);
    }
    let ramp = Duration::from_secs_f64(g.args.ramp.unwrap_or(agents as f64 / 2000.0));
    let t0 = Instant::now();
    let start = g.clock.elapsed();
    if let Some(soak) = g.soak.as_mut() {
        for i in 0..agents {
            let at = start + ramp.mul_f64(i as f64 / agents as f64);
            soak.schedule(RetryRole::Agent(i), at.as_millis() as u64);
        }
    }
    let end = t0 + Duration::from_secs_f64(seconds);
    let send_end = end.checked_sub(GRACE).unwrap_or(t0);
    println!("soak,{SOAK_CSV_HEADER}");
    let mut seq: u64 = 0;
    let mut last_expiry = t0;
    let mut next_probe = t0;
    let mut next_line = t0 + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let clock = g.clock.elapsed();
        if now >= next_probe {
            next_probe = now + SOAK_PROBE_EVERY;
            let soak = g.soak.as_mut().expect("soak mode");
            if let Some(path) = &pid_file {
                soak.probe(path, clock);
            }
            soak.check_back(&g.agent_conn, clock);
            soak.settle(Some(clock));
        }
        let due = g.soak.as_mut().expect("soak mode").due(clock);
        for role in due {
            match role {
                RetryRole::Agent(i) => g.open(Role::Agent(i)),
                RetryRole::Dashboard(d) => g.open(Role::Dashboard(d)),
            }
        }
        if now >= next_line {
            next_line += Duration::from_secs(1);
            let connected = g.agent_conn.iter().filter(|c| c.is_some()).count();
            let soak = g.soak.as_ref().expect("soak mode");
            println!(
                "soak,{:.1},{},{},{connected},{},{},{},{},{},{},{}",
                t0.elapsed().as_secs_f64(),
                u8::from(soak.relay_up),
                soak.epoch,
                g.stats.dashboards_open,
                slow.open.load(Relaxed),
                g.stats.samples_sent,
                soak.received,
                soak.lost,
                soak.excused,
                soak.behind
            );
        }
        let mut next_due = end;
        if agents > 0 && now < send_end {
            next_due = g.send_due(&mut seq, t0, now).min(send_end);
        }
        g.poll_until(next_due.min(next_probe), &mut last_expiry);
    }
    stop.store(true, Relaxed);
    let soak_end = g.clock.elapsed();
    let send_end = soak_end.saturating_sub(GRACE);
    let mut soak = g.soak.take().expect("soak mode");
    for d in 0..dashboards {
        if let Some(tally) = soak.tallies[d].take() {
            soak.ended_tallies.push((send_end, d, tally));
        }
    }
    soak.settle(None);
    let at = |d: Duration| d.saturating_sub(start).as_secs_f64();
    let restarts: Vec<serde_json::Value> = (1..soak.ups.len())
        .map(|e| {
            let up = soak.ups[e];
            let death = soak.deaths.get(e - 1).copied();
            let since_up = |t: Option<Duration>| t.map(|t| (t - up).as_secs_f64());
            json!({
                "epoch": e,
                "killed_at_s": death.map(at),
                "up_at_s": at(up),
                "down_s": death.map(|d| (up - d).as_secs_f64()),
                "all_agents_back_after_up_s": since_up(soak.agents_back[e]),
                "all_dashboards_back_after_up_s": since_up(soak.dashboards_back[e]),
            })
        })
        .collect();
    let worst = |key: &str| {
        restarts
            .iter()
            .filter_map(|r| r[key].as_f64())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let all_back = restarts
        .iter()
        .all(|r| r["all_agents_back_after_up_s"].is_number());
    let (agent_drops_at_restarts, agent_drops_other) = soak.class_drops(&soak.agent_drops);
    let (dash_drops_at_restarts, dash_drops_other) = soak.class_drops(&soak.dashboard_drops);
    let sent_numbered: usize = soak.sent_ms.iter().map(Vec::len).sum();
    let connected_at_end = g.agent_conn.iter().filter(|c| c.is_some()).count();
    let slow_ends = slow.ends.lock().expect("not poisoned").clone();
    println!(
        "soak: {seconds} s, {} relay restarts; agents {agents} ({connected_at_end} connected at the end), all back after every restart: {all_back} (worst {} s after the relay was up); dashboards {dashboards}",
        restarts.len(),
        worst("all_agents_back_after_up_s").map_or("n/a".to_owned(), |v| format!("{v:.1}"))
    );
    println!(
        "samples: {sent_numbered} sent on open connections; reading dashboards received {} (+{} repeats), lost {}, excused (in flight at a kill) {}, missed while behind {} (worst lateness {} ms)",
        soak.received, soak.duplicates, soak.lost, soak.excused, soak.behind, soak.worst_latency_ms
    );
    println!(
        "drops: agents {agent_drops_at_restarts} at restarts, {agent_drops_other} otherwise; reading dashboards {dash_drops_at_restarts} at restarts, {dash_drops_other} otherwise; failures {:?}",
        g.stats.failures
    );
    println!(
        "slow dashboards: {} connects, {} samples, {} bytes read; ends {:?}",
        slow.connects.load(Relaxed),
        slow.samples.load(Relaxed),
        slow.bytes.load(Relaxed),
        slow_ends
    );
    let gaps: Vec<serde_json::Value> = soak
        .gaps
        .iter()
        .map(|(&(t, d, kind), &n)| {
            json!({"t_s": at(Duration::from_secs(t)).round(), "dashboard": d, "kind": kind, "samples": n})
        })
        .collect();
    json!({
        "mode": "soak",
        "tls": g.args.tls,
        "patch": g.args.patch,
        "seconds": seconds,
        "agents": agents,
        "dashboards": dashboards,
        "slow_dashboards": g.args.slow_dashboards,
        "rate_hz": g.args.rate,
        "restarts": restarts,
        "restarts_all_back": all_back,
        "worst_all_agents_back_after_up_s": worst("all_agents_back_after_up_s"),
        "worst_all_dashboards_back_after_up_s": worst("all_dashboards_back_after_up_s"),
        "initial_all_agents_connected_s": soak.agents_back[0].map(at),
        "agents_connected_at_end": connected_at_end,
        "samples_sent": sent_numbered,
        "samples_received": soak.received,
        "samples_repeated": soak.duplicates,
        "samples_lost": soak.lost,
        "samples_missed_while_behind": soak.behind,
        "worst_dashboard_latency_ms": soak.worst_latency_ms,
        "gaps": gaps,
        "samples_excused": soak.excused,
        "agent_drops_at_restarts": agent_drops_at_restarts,
        "agent_drops_other": agent_drops_other,
        "dashboard_drops_at_restarts": dash_drops_at_restarts,
        "dashboard_drops_other": dash_drops_other,
        "agents_failed": g.stats.agents_failed,
        "dashboards_failed": g.stats.dashboards_failed,
        "failures": g.stats.failures,
        "send_blocked": g.stats.send_blocked,
        "loadgen_worst_send_lag_ms": g.stats.worst_send_lag.as_secs_f64() * 1000.0,
        "samples_skipped_late": g.stats.skipped_late,
        "slow_connects": slow.connects.load(Relaxed),
        "slow_samples": slow.samples.load(Relaxed),
        "slow_bytes": slow.bytes.load(Relaxed),
        "slow_ends": slow_ends,
    })
}

fn read_tokens(args: &Args) -> Result<Vec<String>, String> {
    let Some(path) = &args.tokens else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn main() {
    let result = parse_args().and_then(|mut args| {
        let tokens = read_tokens(&args)?;
        let budget = connection_budget();
        if args.dashboards + args.deaf_dashboards > budget {
            return Err(format!(
                "{} dashboards exceed the fd limit",
                args.dashboards + args.deaf_dashboards
            ));
        }
        // Each agent needs its own token: a second connection with the same
        // token replaces the first. Churning handshakes cycle through them.
        let wanted = match args.handshakes {
            Some(_) => args.agents.min(1),
            None => args.agents,
        };
        if tokens.len() < wanted {
            return Err(format!(
                "{} agents need as many tokens; --tokens has {}",
                args.agents,
                tokens.len()
            ));
        }
        let room = budget - args.dashboards - args.deaf_dashboards;
        if args.agents > room {
            eprintln!(
                "loadgen: {} agents capped to {room} by the open-files limit",
                args.agents
            );
            args.agents = room;
        }
        let mut g = LoadGen::new(args, tokens)?;
        let report = match (g.args.handshakes, g.args.soak) {
            (Some(seconds), _) => run_handshakes(&mut g, seconds),
            (None, Some(seconds)) => run_soak(&mut g, seconds),
            (None, None) if g.args.deaf_dashboards > 0 => run_deaf(&mut g),
            (None, None) => run_fleet(&mut g),
        };
        println!("{report}");
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
}
