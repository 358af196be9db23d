//! vStats compatibility: what a vStats agent (the Go agent of
//! zsai001/vstats, `server-go/cmd/agent`) sends to `/compat/ws/agent`, read
//! and turned into our shapes. Pure functions over text; the engine decides
//! what to do with the results (docs/PROTOCOL.md, "vStats compatibility").
//!
//! Their agent connects without a credential in the URL, sends
//! `{"type":"auth","server_id","token","version"}` first and waits up to
//! 10 s for `{"type":"auth","status":"ok"}` or
//! `{"type":"auth","status":"error","message":...}`. Then come `metrics`
//! frames (`{"type":"metrics","metrics":{...}}`, every `interval_secs`,
//! 5 s by default), WebSocket pings every 30 s, and, while its local
//! storage is on, `aggregated_metrics` (at connect and every 60 s, growing
//! with its local history) and `batch_metrics` (what it kept while cut
//! off). The last two are counted and dropped: the relay keeps its own
//! history.

use crate::protocol::{
    self, Cpu, Disk, DiskIo, Interface, LoadAverage, Memory, Metrics, Network, Os, SampleError,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Largest message a vStats agent may send (larger: close 1009).
/// `aggregated_metrics` carries up to five tiers of buckets and grows with
/// the agent's history: far past our own 64 KiB, usually under this.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The first frame, `auth`, must come within this time of the upgrade
/// (their agent gives the answer as long).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message before `auth` is accepted: the `auth` frame itself,
/// some 150 bytes. Until then a socket has shown no credential, so it may
/// hold no more than this (larger: close 1009).
pub const MAX_AUTH_MESSAGE: usize = 4 * 1024;
/// Largest `metrics` frame mapped to a sample. Theirs spell more per
/// interface than ours (MAC, packet counts), so a frame that maps within
/// our [`MAX_SAMPLE_BYTES`](protocol::MAX_SAMPLE_BYTES) is at most about
/// twice that; a larger one is malformed before any work on its content.
pub const MAX_METRICS_TEXT: usize = 4 * protocol::MAX_SAMPLE_BYTES;
/// The vStats agent's settings that stop `aggregated_metrics` and
/// `batch_metrics` (its `server-go/cmd/agent/config.go`): without local
/// storage it sends neither.
pub const STORAGE_OFF: &str = "\"enable_offline_storage\": false in its vstats-agent.json \
     (VSTATS_OFFLINE_STORAGE=false when it is configured by environment)";

/// What the relay answers a good `auth`, in vStats' shape. (Their server
/// may add `ping_targets`, `last_seen` and `last_buckets`; the agent
/// treats each as optional.)
pub const AUTH_OK: &str = r#"{"type":"auth","status":"ok"}"#;

/// Why an `auth` frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No registered server has this id.
    UnknownServer,
    /// The server exists; the token is not its token.
    WrongToken,
}

impl Refusal {
    /// The answer, with the message vStats' own server gives for each.
    pub fn answer(self) -> &'static str {
        match self {
            Refusal::UnknownServer => {
                r#"{"type":"auth","status":"error","message":"Server not found"}"#
            }
            Refusal::WrongToken => r#"{"type":"auth","status":"error","message":"Invalid token"}"#,
        }
    }

    /// For the relay's log, which never shows the id or the token offered.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::UnknownServer => "vStats agent of an unknown server id",
            Refusal::WrongToken => "vStats agent with a wrong token",
        }
    }
}

/// A frame's `type`. Their encoder (Go's `encoding/json` on structs whose
/// first field is `Type`) writes it first, so it is read from the start
/// of the text without parsing the rest: a large `aggregated_metrics` is
/// recognised in a few bytes. Text of another layout falls back to a
/// parse that skips every other field without building it.
pub fn kind(text: &str) -> Option<Cow<'_, str>> {
    leading_type(text)
        .map(Cow::Borrowed)
        .or_else(|| kind_anywhere(text))
}

fn leading_type(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"type\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let kind = &rest[..end];
    // An escape would need decoding: leave it to the full parse.
    (!kind.contains('\\')).then_some(kind)
}

fn kind_anywhere(text: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    serde_json::from_str::<Kind>(text).ok().map(|k| k.kind)
}

/// The `auth` frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Auth {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub token: String,
    /// The agent's version; not used.
    #[serde(default)]
    pub version: String,
}

/// The first frame as an `auth`, or why it is not one.
pub fn auth(text: &str) -> Result<Auth, &'static str> {
    match serde_json::from_str::<Auth>(text) {
        Ok(auth) if auth.kind == "auth" => Ok(auth),
        Ok(_) => Err("vStats agent whose first frame is not auth"),
        Err(_) => Err("vStats agent whose first frame is not JSON"),
    }
}

// ----- their sample --------------------------------------------------------
//
// `SystemMetrics` of `server-go/internal/common/types.go`, only the fields
// that have a counterpart here. Units, from their agent's collectors
// (gopsutil): sizes and counters in bytes, speeds in bytes a second,
// percentages 0-100, uptime in seconds.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirFrame {
    metrics: Option<TheirMetrics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirMetrics {
    timestamp: String,
    hostname: String,
    os: Os,
    cpu: Option<TheirCpu>,
    memory: Option<TheirMemory>,
    disks: Vec<TheirDisk>,
    network: Option<TheirNetwork>,
    uptime: Option<u64>,
    load_average: Option<LoadAverage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirCpu {
    brand: String,
    cores: u32,
    usage: f64,
    per_core: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirMemory {
    total: u64,
    used: u64,
    available: u64,
    swap_total: u64,
    swap_used: u64,
    usage_percent: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirDisk {
    name: String,
    total: u64,
    used: u64,
    usage_percent: f64,
    mount_points: Vec<String>,
    /// Left out when 0 (`omitempty`), and by agents older than the field.
    read_speed: Option<u64>,
    write_speed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirNetwork {
    interfaces: Vec<TheirInterface>,
    total_rx: u64,
    total_tx: u64,
    rx_speed: u64,
    tx_speed: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TheirInterface {
    name: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// What one connection remembers between samples: their agent sends each
/// interface's byte counters but no rate, so the rates come from two
/// samples' counters and timestamps.
#[derive(Debug, Default)]
pub struct RateBase {
    previous: Option<Counters>,
}

#[derive(Debug)]
struct Counters {
    at: SystemTime,
    /// Rx and tx bytes by interface name: one lookup per interface, so a
    /// frame of thousands costs thousands of steps, not millions.
    interfaces: HashMap<String, (u64, u64)>,
}

/// A `metrics` frame as our sample's JSON (the `data` of our `metrics`,
/// docs/PROTOCOL.md "vStats compatibility" field by field). The frame is
/// held to [`MAX_METRICS_TEXT`] and to the sample limits first, so a
/// hostile one is refused before it is built; the mapping is linear in the
/// frame, and the result still goes through the relay's usual check
/// (within [`MAX_SAMPLE_BYTES`](protocol::MAX_SAMPLE_BYTES) among them).
/// `now` stamps a sample whose own time cannot be read.
pub fn sample(text: &str, session: &mut RateBase, now: SystemTime) -> Result<String, SampleError> {
    if text.len() > MAX_METRICS_TEXT {
        return Err(SampleError::TooLarge);
    }
    protocol::check_limits(text)?;
    let frame: TheirFrame = serde_json::from_str(text)?;
    let Some(theirs) = frame.metrics else {
        return Err(SampleError::Shape(serde::de::Error::missing_field(
            "metrics",
        )));
    };
    let (ours, counters) = map(theirs, session.previous.as_ref(), now);
    let json = protocol::to_json(&ours)?;
    if json.len() > protocol::MAX_SAMPLE_BYTES {
        // Nor are its counters kept: what the session holds comes from
        // samples within the limit.
        return Err(SampleError::TooLarge);
    }
    if let Some(counters) = counters {
        session.previous = counters;
    }
    Ok(json)
}

/// Our sample, and what the session's counters become (`None`: as they
/// are, the frame having no `network`).
fn map(
    theirs: TheirMetrics,
    previous: Option<&Counters>,
    now: SystemTime,
) -> (Metrics, Option<Option<Counters>>) {
    let taken = humantime::parse_rfc3339(&theirs.timestamp).ok();
    let disk_io = disk_io(&theirs.disks);
    let (network, counters) = match theirs.network {
        Some(network) => {
            let (network, counters) = self::network(network, taken, previous);
            (Some(network), Some(counters))
        }
        None => (None, None),
    };
    let ours = Metrics {
        timestamp: protocol::rfc3339(taken.unwrap_or(now)),
        hostname: theirs.hostname,
        os: theirs.os,
        cpu: theirs.cpu.map(|cpu| Cpu {
            brand: cpu.brand,
            cores: cpu.cores,
            usage: one_decimal(cpu.usage),
            per_core: cpu.per_core.into_iter().map(one_decimal).collect(),
        }),
        memory: theirs.memory.map(memory),
        disks: theirs.disks.into_iter().map(disk).collect(),
        disk_io,
        network,
        uptime: theirs.uptime,
        load_average: theirs.load_average,
        temperatures: Vec::new(),
        sockets: None,
        processes: None,
    };
    (ours, counters)
}

/// Our `used` is `total - available` (what the kernel could not hand out
/// at once); theirs is gopsutil's `total - free - buffers - cached`, which
/// reads lower. Ours is rebuilt from `available` so that alerts and
/// charts mean the same for every agent; without `available`, theirs is
/// kept.
fn memory(theirs: TheirMemory) -> Memory {
    let (used, usage_percent) = if theirs.available > 0 && theirs.available <= theirs.total {
        let used = theirs.total - theirs.available;
        (used, protocol::percent(used, theirs.total))
    } else {
        (theirs.used, one_decimal(theirs.usage_percent))
    };
    Memory {
        total: theirs.total,
        used,
        available: theirs.available,
        usage_percent,
        swap_total: theirs.swap_total,
        swap_used: theirs.swap_used,
    }
}

/// Theirs is a physical disk with the mount points of its partitions;
/// ours a mounted filesystem. One entry each, at `/` when that is among
/// its mount points (history and alerts watch the disk at `/`), else the
/// first.
fn disk(theirs: TheirDisk) -> Disk {
    let mount = theirs
        .mount_points
        .iter()
        .find(|mount| *mount == "/")
        .or(theirs.mount_points.first())
        .cloned()
        .unwrap_or_default();
    Disk {
        name: theirs.name,
        mount,
        fs_type: String::new(),
        total: theirs.total,
        used: theirs.used,
        usage_percent: one_decimal(theirs.usage_percent),
    }
}

/// The sum of their disks' speeds, when any disk has one (`omitempty`
/// leaves out a speed of 0, and older agents send none: a section with
/// nothing to say is left out).
fn disk_io(disks: &[TheirDisk]) -> Option<DiskIo> {
    let measured = disks
        .iter()
        .any(|d| d.read_speed.is_some() || d.write_speed.is_some());
    // Saturating: speeds near u64::MAX must not wrap (or, in a debug
    // build, panic and end the relay).
    let sum = |speeds: &mut dyn Iterator<Item = u64>| speeds.fold(0, u64::saturating_add) as f64;
    measured.then(|| DiskIo {
        read_rate: sum(&mut disks.iter().filter_map(|d| d.read_speed)),
        write_rate: sum(&mut disks.iter().filter_map(|d| d.write_speed)),
    })
}

/// Their totals are sums over every interface they list (all but
/// loopback and a few virtual kinds, by name), so each is `counted`.
/// With the counters the next sample's rates start from (`None` when this
/// one's time cannot be read).
fn network(
    theirs: TheirNetwork,
    at: Option<SystemTime>,
    previous: Option<&Counters>,
) -> (Network, Option<Counters>) {
    let elapsed = match (previous, at) {
        (Some(previous), Some(at)) => at.duration_since(previous.at).ok(),
        _ => None,
    }
    .map(|elapsed| elapsed.as_secs_f64())
    .filter(|secs| *secs > 0.0);
    let rate = |now: u64, before: Option<u64>| match (elapsed, before) {
        // A counter that went back (an interface re-created) gives 0.
        (Some(secs), Some(before)) if now >= before => ((now - before) as f64 / secs).round(),
        _ => 0.0,
    };
    let interfaces = theirs
        .interfaces
        .iter()
        .map(|iface| {
            let before = previous.and_then(|p| p.interfaces.get(&iface.name));
            Interface {
                name: iface.name.clone(),
                counted: true,
                rx: rate(iface.rx_bytes, before.map(|b| b.0)),
                tx: rate(iface.tx_bytes, before.map(|b| b.1)),
                rx_total: iface.rx_bytes,
                tx_total: iface.tx_bytes,
            }
        })
        .collect();
    let counters = at.map(|at| Counters {
        at,
        interfaces: theirs
            .interfaces
            .into_iter()
            .map(|iface| (iface.name, (iface.rx_bytes, iface.tx_bytes)))
            .collect(),
    });
    let network = Network {
        rx: theirs.rx_speed as f64,
        tx: theirs.tx_speed as f64,
        rx_total: theirs.total_rx,
        tx_total: theirs.total_tx,
        interfaces,
    };
    (network, counters)
}

/// Percentages to one decimal, as our own agent sends them.
fn one_decimal(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// What the real vStats agent sent, one frame a line (see its
    /// SOURCES.md): auth, three metrics 2 s apart, aggregated_metrics.
    const FRAMES: &str = include_str!("../../tests/vstats-real/agent-frames.jsonl");

    fn frames() -> Vec<&'static str> {
        FRAMES.lines().collect()
    }

    fn mapped(session: &mut RateBase, frame: &str) -> Value {
        let text = sample(frame, session, SystemTime::UNIX_EPOCH).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_frame_of_the_real_agent_names_its_type_first() {
        let kinds: Vec<&str> = frames()
            .into_iter()
            .map(|frame| leading_type(frame).expect(frame))
            .collect();
        assert_eq!(
            kinds,
            [
                "auth",
                "metrics",
                "metrics",
                "metrics",
                "aggregated_metrics"
            ]
        );
    }

    #[test]
    fn a_type_not_first_is_still_found() {
        let text = r#"{"batch_id":"x","metrics":[],"type":"batch_metrics"}"#;
        assert_eq!(kind(text).as_deref(), Some("batch_metrics"));
        assert_eq!(
            kind(r#" { "type" : "met\u0072ics" }"#).as_deref(),
            Some("metrics")
        );
        assert_eq!(kind("not json"), None);
        assert_eq!(kind(r#"{"no":"type"}"#), None);
    }

    #[test]
    fn the_auth_frame_is_read_and_anything_else_first_is_refused() {
        let auth = auth(frames()[0]).unwrap();
        assert_eq!(
            (auth.server_id.as_str(), auth.token.as_str()),
            ("srv-test", "tok-test")
        );
        assert_eq!(auth.version, "v-src-9b1f52b");
        assert!(super::auth(frames()[1]).is_err());
        assert!(super::auth("{").is_err());
    }

    #[test]
    fn answers_have_vstats_shape() {
        let ok: Value = serde_json::from_str(AUTH_OK).unwrap();
        assert_eq!(ok, json!({"type": "auth", "status": "ok"}));
        for (refusal, message) in [
            (Refusal::UnknownServer, "Server not found"),
            (Refusal::WrongToken, "Invalid token"),
        ] {
            let answer: Value = serde_json::from_str(refusal.answer()).unwrap();
            assert_eq!(
                answer,
                json!({"type": "auth", "status": "error", "message": message})
            );
        }
    }

    #[test]
    fn the_real_agents_first_sample_maps_field_by_field() {
        let ours = mapped(&mut RateBase::default(), frames()[1]);
        assert_eq!(ours["timestamp"], "2026-12-01T10:56:18Z");
        assert_eq!(ours["hostname"], "vm");
        assert_eq!(
            ours["os"],
            json!({"name": "debian", "version": "12.11", "kernel": "6.18.44-fc-v857", "arch": "amd64"})
        );
        assert_eq!(
            ours["cpu"],
            json!({"brand": "Intel(R) Xeon(R) Processor", "cores": 2, "usage": 100, "per_core": [100, 100]})
        );
        // used = total - available: 25276059648 - 24036954112.
        assert_eq!(
            ours["memory"],
            json!({"total": 25276059648u64, "used": 1239105536u64, "available": 24036954112u64,
                   "usage_percent": 4.9, "swap_total": 0, "swap_used": 0})
        );
        assert_eq!(
            ours["disks"],
            json!([{"name": "vda", "mount": "/", "fs_type": "", "total": 274877906944u64,
                    "used": 188921581568u64, "usage_percent": 68.7}])
        );
        assert_eq!(
            ours["disk_io"],
            json!({"read_rate": 381818, "write_rate": 17596362})
        );
        let network = &ours["network"];
        assert_eq!((&network["rx"], &network["tx"]), (&json!(0), &json!(0)));
        assert_eq!(network["rx_total"], 581235905);
        assert_eq!(network["tx_total"], 570439);
        assert_eq!(
            network["interfaces"][2],
            json!({"name": "eth0", "counted": true, "rx": 0, "tx": 0,
                   "rx_total": 581235905, "tx_total": 570439})
        );
        assert_eq!(ours["uptime"], 389);
        assert_eq!(
            ours["load_average"],
            json!({"one": 5.83, "five": 3.43, "fifteen": 1.44})
        );
        assert_eq!(ours["temperatures"], json!([]));
        // No counterpart: dropped.
        for gone in ["version", "ip_addresses", "sockets", "processes"] {
            assert!(ours.get(gone).is_none(), "{gone}");
        }
        assert!(network.get("daily_rx").is_none());
        // What dashboards and history read parses as our sample.
        let text = sample(frames()[1], &mut RateBase::default(), SystemTime::now()).unwrap();
        let raw = serde_json::value::RawValue::from_string(text).unwrap();
        let (_, reading) = crate::relay::hub::check_sample(&raw).unwrap();
        assert_eq!(reading.values[0], Some(100.0));
        assert_eq!(reading.values[3], Some(68.7));
    }

    #[test]
    fn a_disk_speed_left_out_counts_as_zero_and_no_speed_at_all_leaves_disk_io_out() {
        // The second frame has read_speed only (write_speed 0, omitted).
        let ours = mapped(&mut RateBase::default(), frames()[2]);
        assert_eq!(
            ours["disk_io"],
            json!({"read_rate": 719366, "write_rate": 0})
        );
        let older = r#"{"type":"metrics","metrics":{"disks":[{"name":"sda","mount_points":["/data","/"],"total":10,"used":5,"usage_percent":50}]}}"#;
        let ours = mapped(&mut RateBase::default(), older);
        assert!(ours.get("disk_io").is_none());
        assert_eq!(ours["disks"][0]["mount"], "/");
    }

    #[test]
    fn a_frame_that_maps_past_64_kib_leaves_the_sessions_counters_as_they_were() {
        let frame = |interfaces: usize, rx: u64| {
            let interfaces: Vec<Value> = (0..interfaces)
                .map(|i| json!({"name": format!("{i:0>40}"), "rx_bytes": rx}))
                .collect();
            json!({"type": "metrics", "metrics": {"timestamp": "2026-12-01T10:00:00Z",
                "network": {"interfaces": interfaces}}})
            .to_string()
        };
        let mut session = RateBase::default();
        mapped(&mut session, &frame(2, 100));
        // 1,200 names of 40 bytes: within the text limit, mapped past 64 KiB.
        let hostile = frame(1200, 0);
        assert!(hostile.len() < MAX_METRICS_TEXT);
        let refused = sample(&hostile, &mut session, SystemTime::UNIX_EPOCH);
        assert!(matches!(refused, Err(SampleError::TooLarge)), "{refused:?}");
        let kept = session.previous.as_ref().unwrap();
        assert_eq!(kept.interfaces.len(), 2, "the last good sample's counters");
        assert_eq!(kept.interfaces.values().next(), Some(&(100, 0)));
    }

    #[test]
    fn a_deep_auth_frame_is_skipped_through_without_building_it() {
        // 2,000 levels within the 4 KiB before auth: serde_json skips an
        // unknown field without recursing, and builds nothing of it; the
        // id and token are empty, which the registry refuses.
        let deep = format!(
            r#"{{"type":"auth","x":{}{}}}"#,
            "[".repeat(2000),
            "]".repeat(2000)
        );
        assert!(deep.len() < MAX_AUTH_MESSAGE);
        let auth = auth(&deep).unwrap();
        assert_eq!((auth.server_id.as_str(), auth.token.as_str()), ("", ""));
        let unclosed = format!(r#"{{"type":"auth","x":{}"#, "[".repeat(4000));
        assert!(super::auth(&unclosed).is_err());
    }

    #[test]
    fn disk_speeds_near_the_top_saturate_instead_of_wrapping() {
        let max = u64::MAX;
        let frame = format!(
            r#"{{"type":"metrics","metrics":{{"disks":[{{"name":"a","read_speed":{max}}},
                {{"name":"b","read_speed":{max},"write_speed":{max}}}]}}}}"#
        );
        let ours = mapped(&mut RateBase::default(), &frame);
        assert_eq!(ours["disk_io"]["read_rate"], max as f64);
        assert_eq!(ours["disk_io"]["write_rate"], max as f64);
    }

    #[test]
    fn interface_rates_come_from_two_samples_counters_and_times() {
        let frame = |at: &str, rx: u64, tx: u64| {
            json!({"type": "metrics", "metrics": {"timestamp": at, "network": {
                "interfaces": [{"name": "eth0", "rx_bytes": rx, "tx_bytes": tx}],
                "total_rx": rx, "total_tx": tx, "rx_speed": 7, "tx_speed": 8}}})
            .to_string()
        };
        let mut session = RateBase::default();
        let first = mapped(&mut session, &frame("2026-12-01T10:00:00.5Z", 1000, 5000));
        assert_eq!(first["network"]["interfaces"][0]["rx"], 0);
        let second = mapped(&mut session, &frame("2026-12-01T10:00:02.5Z", 3000, 4000));
        let eth0 = &second["network"]["interfaces"][0];
        // 2000 bytes in 2 s; tx went back (re-created): 0, never negative.
        assert_eq!((&eth0["rx"], &eth0["tx"]), (&json!(1000), &json!(0)));
        // The totals' rate is theirs.
        assert_eq!(second["network"]["rx"], 7);
        // A sample without a readable time restarts the rates.
        let third = mapped(&mut session, &frame("yesterday", 9000, 9000));
        assert_eq!(third["network"]["interfaces"][0]["rx"], 0);
        assert_eq!(third["timestamp"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_hostile_or_empty_metrics_frame_is_refused() {
        let deep = format!(
            r#"{{"type":"metrics","metrics":{{"x":{}{}}}}}"#,
            "[".repeat(20),
            "]".repeat(20)
        );
        assert!(matches!(
            sample(&deep, &mut RateBase::default(), SystemTime::now()),
            Err(SampleError::TooDeep)
        ));
        let wrong = r#"{"type":"metrics","metrics":{"cpu":{"usage":"high"}}}"#;
        assert!(sample(wrong, &mut RateBase::default(), SystemTime::now()).is_err());
        let empty = r#"{"type":"metrics"}"#;
        assert!(sample(empty, &mut RateBase::default(), SystemTime::now()).is_err());
    }
}
