//! What a vStats server (zsai001/vstats, server-go at 9b1f52b) takes from an
//! agent, made from our sample, and what it answers. Pure: no sockets, no
//! clock but the time it is given. In builds with the `vstats-compat`
//! feature (`--protocol vstats`).
//!
//! Their server decodes a `metrics` frame with Go's `encoding/json` into
//! `internal/common/types.go`'s `SystemMetrics`, and drops the whole frame,
//! silently, if one value does not fit its field. So every field that is a
//! `uint64` there (sizes, byte counters, rates, uptime) goes out here as a
//! whole number, never `12.5` nor `-1`. A field we have no reading for is
//! left out: Go leaves it zero, as their own agent does when gopsutil fails.
//! docs/PROTOCOL.md, "vStats compatibility", has the table field by field.

use crate::protocol::{LoadAverage, Memory, Metrics, rfc3339, to_json};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::SystemTime;

/// The first frame on a connection, before anything else is read.
#[derive(Serialize)]
struct Auth<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    server_id: &'a str,
    token: &'a str,
    version: &'a str,
}

/// The `auth` frame as JSON text. It holds the token: never log it.
pub fn auth_frame(server_id: &str, token: &str, version: &str) -> serde_json::Result<String> {
    to_json(&Auth {
        kind: "auth",
        server_id,
        token,
        version,
    })
}

#[derive(Serialize)]
struct MetricsFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    metrics: SystemMetrics<'a>,
}

/// `SystemMetrics`, the fields we have readings for.
#[derive(Serialize)]
struct SystemMetrics<'a> {
    timestamp: &'a str,
    hostname: &'a str,
    os: OsInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<CpuMetrics<'a>>,
    /// Our `memory` has their fields, names and units (bytes, percent).
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<&'a Memory>,
    disks: Vec<DiskMetrics<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<NetworkMetrics<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime: Option<u64>,
    /// Same fields as ours: `one`, `five`, `fifteen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_average: Option<&'a LoadAverage>,
    version: &'a str,
}

#[derive(Serialize)]
struct OsInfo<'a> {
    name: &'a str,
    version: &'a str,
    kernel: &'a str,
    arch: &'a str,
}

/// No `frequency`: we do not read one, and Go leaves it 0.
#[derive(Serialize)]
struct CpuMetrics<'a> {
    brand: &'a str,
    cores: u32,
    usage: f64,
    per_core: &'a [f64],
}

#[derive(Serialize)]
struct DiskMetrics<'a> {
    name: &'a str,
    total: u64,
    used: u64,
    usage_percent: f64,
    mount_points: [&'a str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    read_speed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_speed: Option<u64>,
}

#[derive(Serialize)]
struct NetworkMetrics<'a> {
    interfaces: Vec<NetworkInterface<'a>>,
    total_rx: u64,
    total_tx: u64,
    rx_speed: u64,
    tx_speed: u64,
}

#[derive(Serialize)]
struct NetworkInterface<'a> {
    name: &'a str,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// `{"type":"metrics","metrics":{...}}` for `sample` taken at `time`,
/// carrying our `version`.
pub fn metrics_frame(
    sample: &Metrics,
    time: SystemTime,
    version: &str,
) -> serde_json::Result<String> {
    let timestamp = rfc3339(time);
    to_json(&MetricsFrame {
        kind: "metrics",
        metrics: system_metrics(sample, &timestamp, version),
    })
}

fn system_metrics<'a>(
    sample: &'a Metrics,
    timestamp: &'a str,
    version: &'a str,
) -> SystemMetrics<'a> {
    SystemMetrics {
        timestamp,
        hostname: &sample.hostname,
        os: OsInfo {
            name: &sample.os.name,
            version: &sample.os.version,
            kernel: &sample.os.kernel,
            arch: go_arch(&sample.os.arch),
        },
        cpu: sample.cpu.as_ref().map(|cpu| CpuMetrics {
            brand: &cpu.brand,
            cores: cpu.cores,
            usage: cpu.usage,
            per_core: &cpu.per_core,
        }),
        memory: sample.memory.as_ref(),
        disks: disks(sample),
        network: sample.network.as_ref().map(|network| NetworkMetrics {
            interfaces: network
                .interfaces
                .iter()
                .map(|interface| NetworkInterface {
                    name: &interface.name,
                    rx_bytes: interface.rx_total,
                    tx_bytes: interface.tx_total,
                })
                .collect(),
            total_rx: network.rx_total,
            total_tx: network.tx_total,
            rx_speed: whole(network.rx),
            tx_speed: whole(network.tx),
        }),
        uptime: sample.uptime,
        load_average: sample.load_average.as_ref(),
        version,
    }
}

/// One vStats disk per filesystem we measure, the one mounted on `/`
/// first: their dashboard's card shows `disks[0]` as the host's disk. Our
/// `disk_io` is one rate over all disks; it goes on that first disk, so a
/// sum over the disks is the host's, and the others carry none.
fn disks(sample: &Metrics) -> Vec<DiskMetrics<'_>> {
    let root = sample.disks.iter().position(|disk| disk.mount == "/");
    let order = root
        .into_iter()
        .chain((0..sample.disks.len()).filter(|&index| Some(index) != root));
    order
        .enumerate()
        .map(|(place, index)| {
            let disk = &sample.disks[index];
            let io = sample.disk_io.as_ref().filter(|_| place == 0);
            DiskMetrics {
                // Their agent names the block device (`vda`), not its path.
                name: disk.name.strip_prefix("/dev/").unwrap_or(&disk.name),
                total: disk.total,
                used: disk.used,
                usage_percent: disk.usage_percent,
                mount_points: [&disk.mount],
                read_speed: io.map(|io| whole(io.read_rate)),
                write_speed: io.map(|io| whole(io.write_rate)),
            }
        })
        .collect()
}

/// A rate in bytes per second as the `uint64` Go decodes: rounded, and 0
/// for anything negative or not a number (`as` saturates).
fn whole(rate: f64) -> u64 {
    rate.round() as u64
}

/// `uname -m` as Go's `runtime.GOARCH` spells it, which is what their own
/// agent sends: `x86_64` is `amd64`, every 32-bit ARM is `arm`. A machine
/// Go has no other name for goes as it is.
fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i486" | "i586" | "i686" => "386",
        arm if arm.starts_with("armv") => "arm",
        other => other,
    }
}

/// A frame from the server, as far as the agent cares.
#[derive(Debug, PartialEq)]
pub enum FromServer {
    /// `{"type":"auth","status":"ok"}`: the agent may send samples.
    AuthOk,
    /// `auth` with any other status, and the server's reason
    /// (`Invalid token`, `Server not found`), cut short.
    AuthRefused(String),
    /// `{"type":"error","message":...}`, e.g. `Not authenticated`.
    Error(String),
    /// `command` (`update`: their agent replaces itself; ours never does).
    Command,
    /// Any other type: `config` (ping targets), `batch_ack`, ones to come.
    Other,
}

/// `ServerResponse` in their `internal/common/websocket.go`, the fields
/// read here; the rest are ignored.
#[derive(Deserialize)]
struct ServerResponse<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// The longest server message kept for a log line.
const MESSAGE_CHARS: usize = 200;

/// Parses one text frame from the server; `None` when it is not a JSON
/// object with a string `type` and a string `message`, if any.
pub fn parse_server_frame(text: &str) -> Option<FromServer> {
    let frame: ServerResponse = serde_json::from_str(text).ok()?;
    let message = || {
        frame
            .message
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(MESSAGE_CHARS)
            .collect()
    };
    Some(match frame.kind.as_ref() {
        "auth" if frame.status.as_deref() == Some("ok") => FromServer::AuthOk,
        "auth" => FromServer::AuthRefused(message()),
        "error" => FromServer::Error(message()),
        "command" => FromServer::Command,
        _ => FromServer::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Golden samples of captured machine trees (tests/golden.rs), in our
    /// wire format; sizes are masked to 0 there, so a few are set here.
    fn golden(tree: &str) -> Metrics {
        let text = match tree {
            "x86_64-bench-8c-4i-4d" => {
                include_str!("../../tests/golden/x86_64-bench-8c-4i-4d.json")
            }
            "openwrt-router-composite" => {
                include_str!("../../tests/golden/openwrt-router-composite.json")
            }
            _ => unreachable!(),
        };
        serde_json::from_str(text).unwrap()
    }

    /// The `metrics` frames their own agent sent (tests/vstats-real).
    fn real_frames() -> Vec<Value> {
        include_str!("../../tests/vstats-real/agent-frames.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn mapped(sample: &Metrics) -> Value {
        let taken = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_122_578);
        let text = metrics_frame(sample, taken, "0.1.0").unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The fields that are `uint64` in their `SystemMetrics` (Go drops the
    /// frame if one holds a fraction or a sign).
    const UNSIGNED: [&str; 13] = [
        "/memory/total",
        "/memory/used",
        "/memory/available",
        "/memory/swap_total",
        "/memory/swap_used",
        "/disks/0/total",
        "/disks/0/used",
        "/disks/0/read_speed",
        "/disks/0/write_speed",
        "/network/total_rx",
        "/network/rx_speed",
        "/network/interfaces/0/rx_bytes",
        "/uptime",
    ];

    #[test]
    fn a_sample_maps_to_their_names_and_units() {
        let mut sample = golden("x86_64-bench-8c-4i-4d");
        sample.os.arch = "x86_64".into();
        sample.disks[0].total = 64 << 30;
        sample.disks[0].used = 16 << 30;
        sample.disks[0].usage_percent = 25.0;
        let network = sample.network.as_mut().unwrap();
        (network.rx, network.tx) = (1234.5, 0.4);
        sample.disk_io.as_mut().unwrap().write_rate = 4096.25;
        let frame = mapped(&sample);
        assert_eq!(frame["type"], "metrics");
        let m = &frame["metrics"];
        assert_eq!(m["timestamp"], "2026-12-01T10:56:18Z");
        assert_eq!(m["version"], "0.1.0");
        assert_eq!(m["hostname"], "bench-8c");
        assert_eq!(m["os"]["arch"], "amd64");
        assert_eq!(m["cpu"]["brand"], "Intel(R) Xeon(R) W-2155 CPU @ 3.30GHz");
        assert_eq!(m["cpu"]["cores"], 8);
        assert_eq!(m["cpu"]["per_core"].as_array().unwrap().len(), 8);
        assert!(m["cpu"].get("frequency").is_none(), "we read none");
        // Bytes and percent, as ours.
        assert_eq!(m["memory"]["total"], 32_703_262_720u64);
        assert_eq!(m["memory"]["available"], 7_094_853_632u64);
        assert_eq!(m["memory"]["usage_percent"], 78.3);
        assert_eq!(m["memory"]["swap_used"], 728_236_032);
        let root = &m["disks"][0];
        assert_eq!(root["name"], "dm-2");
        assert_eq!(root["mount_points"], serde_json::json!(["/"]));
        assert_eq!(root["total"], 64u64 << 30);
        assert_eq!(root["used"], 16u64 << 30);
        assert_eq!(root["usage_percent"], 25);
        // Bytes per second, rounded to whole bytes.
        assert_eq!(root["read_speed"], 0);
        assert_eq!(root["write_speed"], 4096);
        assert_eq!(m["disks"][1]["name"], "md1");
        assert!(m["disks"][1].get("write_speed").is_none());
        let net = &m["network"];
        assert_eq!(net["total_rx"], 10_437_182_923u64);
        assert_eq!(net["total_tx"], 2_851_649_360u64);
        assert_eq!(net["rx_speed"], 1235);
        assert_eq!(net["tx_speed"], 0);
        let wlan0 = &net["interfaces"][2];
        assert_eq!(wlan0["name"], "wlan0");
        assert_eq!(wlan0["rx_bytes"], 10_437_182_923u64);
        assert_eq!(m["uptime"], 11751);
        assert_eq!(m["load_average"]["five"], 0.37);
        for pointer in UNSIGNED {
            assert!(m.pointer(pointer).unwrap().is_u64(), "{pointer}: {m}");
        }
    }

    #[test]
    fn every_field_we_send_is_one_their_agent_sends_with_the_same_type() {
        let real = real_frames();
        let theirs = real
            .iter()
            .find(|frame| frame["type"] == "metrics")
            .unwrap();
        for tree in ["x86_64-bench-8c-4i-4d", "openwrt-router-composite"] {
            let ours = mapped(&golden(tree));
            assert_same_shape(&ours, theirs, "");
        }
    }

    /// Every key of `ours` is in `theirs` with a value of the same JSON
    /// type (arrays: compared with their first element).
    fn assert_same_shape(ours: &Value, theirs: &Value, path: &str) {
        match (ours, theirs) {
            (Value::Object(ours), Value::Object(theirs)) => {
                for (key, value) in ours {
                    let path = format!("{path}/{key}");
                    let theirs = theirs
                        .get(key)
                        .unwrap_or_else(|| panic!("{path}: not theirs"));
                    assert_same_shape(value, theirs, &path);
                }
            }
            (Value::Array(ours), Value::Array(theirs)) => {
                if let (Some(ours), Some(theirs)) = (ours.first(), theirs.first()) {
                    assert_same_shape(ours, theirs, &format!("{path}/0"));
                }
            }
            (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_)) => {}
            _ => panic!("{path}: ours {ours}, theirs {theirs}"),
        }
    }

    #[test]
    fn missing_sections_are_left_out_not_zeroed() {
        let mut sample = golden("openwrt-router-composite");
        sample.cpu = None;
        sample.memory = None;
        sample.network = None;
        sample.uptime = None;
        sample.load_average = None;
        let m = &mapped(&sample)["metrics"];
        for section in ["cpu", "memory", "network", "uptime", "load_average"] {
            assert!(m.get(section).is_none(), "{section}: {m}");
        }
        assert!(m["disks"].is_array() && m["os"].is_object());
    }

    #[test]
    fn the_root_filesystem_goes_first() {
        let mut sample = golden("x86_64-bench-8c-4i-4d");
        sample.disks.rotate_left(1);
        assert_eq!(sample.disks[3].mount, "/");
        let m = &mapped(&sample)["metrics"];
        let mounts: Vec<&str> = (0..4)
            .map(|i| m["disks"][i]["mount_points"][0].as_str().unwrap())
            .collect();
        assert_eq!(mounts, ["/", "/boot", "/srv/data0", "/srv/data1"]);
        assert!(m["disks"][0]["read_speed"].is_u64());
    }

    #[test]
    fn rates_become_whole_unsigned_bytes() {
        assert_eq!(whole(0.4), 0);
        assert_eq!(whole(2.5), 3);
        assert_eq!(whole(-3.0), 0);
        assert_eq!(whole(f64::NAN), 0);
        assert_eq!(whole(1e30), u64::MAX);
    }

    #[test]
    fn machines_get_go_names() {
        for (uname, go) in [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("armv7l", "arm"),
            ("armv6l", "arm"),
            ("i686", "386"),
            ("mips", "mips"),
        ] {
            assert_eq!(go_arch(uname), go, "{uname}");
        }
    }

    #[test]
    fn the_auth_frame_is_theirs() {
        let ours: Value =
            serde_json::from_str(&auth_frame("srv-test", "tok-test", "v-src-9b1f52b").unwrap())
                .unwrap();
        assert_eq!(ours, real_frames()[0]);
    }

    #[test]
    fn auth_replies() {
        assert_eq!(
            parse_server_frame(
                r#"{"type":"auth","status":"ok","ping_targets":[{"name":"g","host":"1.1.1.1"}]}"#
            ),
            Some(FromServer::AuthOk)
        );
        assert_eq!(
            parse_server_frame(r#"{"type":"auth","status":"error","message":"Invalid token"}"#),
            Some(FromServer::AuthRefused("Invalid token".into()))
        );
        assert_eq!(
            parse_server_frame(r#"{"type":"auth","status":"error","message":"Server not found"}"#),
            Some(FromServer::AuthRefused("Server not found".into()))
        );
        // Their agent takes anything but "ok" as a refusal.
        assert_eq!(
            parse_server_frame(r#"{"type":"auth"}"#),
            Some(FromServer::AuthRefused(String::new()))
        );
        let long = format!(
            r#"{{"type":"auth","status":"error","message":"{}"}}"#,
            "x".repeat(5000)
        );
        let Some(FromServer::AuthRefused(message)) = parse_server_frame(&long) else {
            panic!("not a refusal");
        };
        assert_eq!(message.len(), MESSAGE_CHARS);
        for garbage in [
            "",
            "not json",
            "[1]",
            r#"{"status":"ok"}"#,
            r#"{"type":7}"#,
            r#"{"type":"auth","message":3}"#,
        ] {
            assert_eq!(parse_server_frame(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn other_frames_from_the_server() {
        for (text, expected) in [
            (
                r#"{"type":"error","message":"Not authenticated"}"#,
                FromServer::Error("Not authenticated".into()),
            ),
            (
                r#"{"type":"command","command":"update","download_url":"http://x/a","force":true}"#,
                FromServer::Command,
            ),
            (r#"{"type":"config","ping_targets":[]}"#, FromServer::Other),
            (
                r#"{"type":"batch_ack","batch_id":"b","accepted":1}"#,
                FromServer::Other,
            ),
        ] {
            assert_eq!(parse_server_frame(text), Some(expected), "{text}");
        }
    }
}
