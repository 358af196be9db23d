//! `GET /metrics`: the fleet and the relay in Prometheus' text format 0.0.4.
//!
//! Names follow Prometheus conventions: a `vstats_` prefix, base units
//! (`_bytes`, `_seconds`, ratios rather than percent), `_total` on
//! counters. Per-server series carry `server_id` and `name`. This is the
//! scale-out path: Prometheus-compatible stores keep the history and the
//! view across relays.
//!
//! The lists in a sample (filesystems, interfaces, sensors) are capped per
//! server (`MAX_FILESYSTEMS` and its siblings): an agent's sample decides
//! how much it says, not how big every scrape gets.

use super::hub::ServerState;
use super::shared::Counters;
use crate::protocol::{Disk, Interface, Metrics};
use std::fmt::Write;
use std::time::UNIX_EPOCH;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Open connections by kind, counted at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Connections {
    pub agents: usize,
    pub dashboards: usize,
    pub http: usize,
}

struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(text, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }
}

fn escape_label_value(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// One server with its latest sample parsed (the relay stores the agent's
/// bytes; they are parsed only when scraped).
struct Parsed<'a> {
    server: &'a ServerState,
    metrics: Option<Metrics>,
}

/// A per-server gauge: its name, help, and how to read it from a sample.
type Reading = (&'static str, &'static str, fn(&Metrics) -> Option<f64>);

const SERVER_GAUGES: &[Reading] = &[
    (
        "vstats_cpu_usage_ratio",
        "Share of all CPUs busy over the agent's last interval (0-1).",
        |m| m.cpu.as_ref().map(|c| c.usage / 100.0),
    ),
    ("vstats_cpu_cores", "Logical CPUs online.", |m| {
        m.cpu.as_ref().map(|c| f64::from(c.cores))
    }),
    ("vstats_memory_total_bytes", "Physical memory.", |m| {
        m.memory.as_ref().map(|x| x.total as f64)
    }),
    (
        "vstats_memory_used_bytes",
        "Memory in use: total minus available.",
        |m| m.memory.as_ref().map(|x| x.used as f64),
    ),
    (
        "vstats_memory_available_bytes",
        "Memory available to new work (MemAvailable).",
        |m| m.memory.as_ref().map(|x| x.available as f64),
    ),
    ("vstats_swap_total_bytes", "Swap space.", |m| {
        m.memory.as_ref().map(|x| x.swap_total as f64)
    }),
    ("vstats_swap_used_bytes", "Swap space in use.", |m| {
        m.memory.as_ref().map(|x| x.swap_used as f64)
    }),
    (
        "vstats_disk_read_bytes_per_second",
        "Bytes read per second over whole disks.",
        |m| m.disk_io.as_ref().map(|d| d.read_rate),
    ),
    (
        "vstats_disk_write_bytes_per_second",
        "Bytes written per second over whole disks.",
        |m| m.disk_io.as_ref().map(|d| d.write_rate),
    ),
    (
        "vstats_network_receive_bytes_per_second",
        "Bytes received per second over counted interfaces.",
        |m| m.network.as_ref().map(|n| n.rx),
    ),
    (
        "vstats_network_transmit_bytes_per_second",
        "Bytes sent per second over counted interfaces.",
        |m| m.network.as_ref().map(|n| n.tx),
    ),
    ("vstats_load1", "Load average over 1 minute.", |m| {
        m.load_average.as_ref().map(|l| l.one)
    }),
    ("vstats_load5", "Load average over 5 minutes.", |m| {
        m.load_average.as_ref().map(|l| l.five)
    }),
    ("vstats_load15", "Load average over 15 minutes.", |m| {
        m.load_average.as_ref().map(|l| l.fifteen)
    }),
    (
        "vstats_uptime_seconds",
        "Seconds since the server booted.",
        |m| m.uptime.map(|u| u as f64),
    ),
    (
        "vstats_processes",
        "Processes running on the server.",
        |m| m.processes.map(|p| p as f64),
    ),
];

const SERVER_COUNTERS: &[Reading] = &[
    (
        "vstats_network_receive_bytes_total",
        "Bytes received since boot over counted interfaces.",
        |m| m.network.as_ref().map(|n| n.rx_total as f64),
    ),
    (
        "vstats_network_transmit_bytes_total",
        "Bytes sent since boot over counted interfaces.",
        |m| m.network.as_ref().map(|n| n.tx_total as f64),
    ),
];

/// Renders the whole exposition.
pub fn render(servers: &[ServerState], counters: &Counters, connections: Connections) -> String {
    let parsed: Vec<Parsed> = servers
        .iter()
        .map(|server| Parsed {
            server,
            metrics: server
                .latest_data
                .as_ref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        })
        .collect();
    let mut x = Exposition {
        out: String::with_capacity(512 + servers.len() * 2048),
    };
    x.family(
        "vstats_up",
        "gauge",
        "Whether the server's agent is connected and reporting (1) or not (0).",
    );
    for p in &parsed {
        x.sample(
            "vstats_up",
            &server_labels(p),
            if p.server.presence.online() { 1.0 } else { 0.0 },
        );
    }
    x.family(
        "vstats_last_seen_timestamp_seconds",
        "gauge",
        "When the relay last heard from the server's agent, in Unix time.",
    );
    for p in &parsed {
        let Some(seen) = p.server.presence.last_seen() else {
            continue;
        };
        let seconds = seen
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        x.sample(
            "vstats_last_seen_timestamp_seconds",
            &server_labels(p),
            seconds,
        );
    }
    x.family(
        "vstats_agent_connections_total",
        "counter",
        "Agent connections admitted for the server since the relay started: a fast rise is a flapping agent.",
    );
    for p in &parsed {
        x.sample(
            "vstats_agent_connections_total",
            &server_labels(p),
            p.server.connections as f64,
        );
    }
    for (kind, readings) in [("gauge", SERVER_GAUGES), ("counter", SERVER_COUNTERS)] {
        for (name, help, read) in readings {
            family(&mut x, &parsed, name, kind, help, |m, emit| {
                if let Some(value) = read(m) {
                    emit(&[], value);
                }
            });
        }
    }
    labelled_series(&mut x, &parsed);
    relay_series(&mut x, servers.len(), counters, connections);
    x.out
}

fn server_labels<'a>(p: &'a Parsed) -> [(&'static str, &'a str); 2] {
    [("server_id", &p.server.id), ("name", &p.server.name)]
}

/// Emits a value with extra labels beyond the server's.
type Emit<'e> = dyn FnMut(&[(&'static str, &str)], f64) + 'e;

/// One family over every server that has a sample: `each` emits its values.
fn family(
    x: &mut Exposition,
    parsed: &[Parsed],
    name: &str,
    kind: &str,
    help: &str,
    each: impl Fn(&Metrics, &mut Emit),
) {
    x.family(name, kind, help);
    for p in parsed {
        let Some(metrics) = &p.metrics else { continue };
        each(metrics, &mut |extra, value| {
            let mut labels = server_labels(p).to_vec();
            labels.extend_from_slice(extra);
            x.sample(name, &labels, value);
        });
    }
}

/// A family's name and help, and how to read its value from one item.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

const FILESYSTEM_FAMILIES: [Field<Disk>; 2] = [
    (
        "vstats_filesystem_size_bytes",
        "Size of a mounted filesystem.",
        |d| d.total,
    ),
    (
        "vstats_filesystem_used_bytes",
        "Bytes used on a mounted filesystem.",
        |d| d.used,
    ),
];

const INTERFACE_FAMILIES: [Field<Interface>; 2] = [
    (
        "vstats_network_interface_receive_bytes_total",
        "Bytes received since boot on one interface.",
        |i| i.rx_total,
    ),
    (
        "vstats_network_interface_transmit_bytes_total",
        "Bytes sent since boot on one interface.",
        |i| i.tx_total,
    ),
];

// How many entries of each list in a sample become series, per server.
// Without a cap one agent decides the size of every scrape: 20,000 empty
// disk entries (60 KB of JSON, under the frame limit) made `/metrics` 68
// times its size. Entries past the cap are left out, in the agent's order,
// and counted in `vstats_server_series_dropped`.

/// The agent lists one filesystem per block device (bind mounts, btrfs
/// subvolumes and pseudo filesystems are left out), so this takes 64
/// separately mounted devices: servers have a handful, and a 60-bay
/// storage chassis with one filesystem per drive still fits.
const MAX_FILESYSTEMS: usize = 64;
/// The agent lists every interface but `lo`, a veth per container
/// included: a Kubernetes node at its default of 110 pods has about 115;
/// only a node full at OpenShift's 250 pods may pass it.
const MAX_INTERFACES: usize = 256;
/// `coretemp` gives one sensor per physical core: a two-socket 64-core
/// Xeon has 130. Only two-socket machines with 128 or more cores a socket
/// pass it (the later sockets' cores and chips are then cut).
const MAX_SENSORS: usize = 256;

/// A list in a sample whose entries become labelled series.
struct List {
    /// The sample's field, as the `list` label of the dropped count.
    name: &'static str,
    /// The entries rendered per server.
    cap: usize,
    /// Series per entry.
    families: usize,
    len: fn(&Metrics) -> usize,
}

const LISTS: [List; 3] = [
    List {
        name: "disks",
        cap: MAX_FILESYSTEMS,
        families: FILESYSTEM_FAMILIES.len(),
        len: |m| m.disks.len(),
    },
    List {
        name: "interfaces",
        cap: MAX_INTERFACES,
        families: INTERFACE_FAMILIES.len(),
        len: |m| interfaces(m).len(),
    },
    List {
        name: "temperatures",
        cap: MAX_SENSORS,
        families: 1,
        len: |m| m.temperatures.len(),
    },
];

fn interfaces(m: &Metrics) -> &[Interface] {
    m.network.as_ref().map_or(&[], |n| &n.interfaces)
}

/// The first `cap` items.
fn capped<T>(items: &[T], cap: usize) -> &[T] {
    &items[..items.len().min(cap)]
}

/// Series with a label of their own beyond the server's: filesystems,
/// interfaces, sensors, socket protocols. Each list is capped per server
/// ([`MAX_FILESYSTEMS`] and its siblings).
fn labelled_series(x: &mut Exposition, parsed: &[Parsed]) {
    for (name, help, read) in FILESYSTEM_FAMILIES {
        family(x, parsed, name, "gauge", help, |m, emit| {
            for d in capped(&m.disks, MAX_FILESYSTEMS) {
                let labels = [
                    ("mount", &*d.mount),
                    ("device", &*d.name),
                    ("fstype", &*d.fs_type),
                ];
                emit(&labels, read(d) as f64);
            }
        });
    }
    for (name, help, read) in INTERFACE_FAMILIES {
        family(x, parsed, name, "counter", help, |m, emit| {
            for i in capped(interfaces(m), MAX_INTERFACES) {
                emit(&[("interface", &i.name)], read(i) as f64);
            }
        });
    }
    family(
        x,
        parsed,
        "vstats_temperature_celsius",
        "gauge",
        "Temperature of a sensor.",
        |m, emit| {
            for t in capped(&m.temperatures, MAX_SENSORS) {
                emit(&[("sensor", &t.name)], t.celsius);
            }
        },
    );
    let help = "Sockets in use, IPv4 and IPv6 together.";
    family(
        x,
        parsed,
        "vstats_sockets_in_use",
        "gauge",
        help,
        |m, emit| {
            if let Some(sockets) = &m.sockets {
                emit(&[("protocol", "tcp")], sockets.tcp as f64);
                emit(&[("protocol", "udp")], sockets.udp as f64);
            }
        },
    );
    let help = format!(
        "Series left out because the server's sample listed more entries than /metrics \
         renders ({MAX_FILESYSTEMS} disks, {MAX_INTERFACES} interfaces, {MAX_SENSORS} \
         temperatures); absent when nothing was cut."
    );
    family(
        x,
        parsed,
        "vstats_server_series_dropped",
        "gauge",
        &help,
        |m, emit| {
            for list in &LISTS {
                let over = (list.len)(m).saturating_sub(list.cap);
                if over > 0 {
                    emit(&[("list", list.name)], (over * list.families) as f64);
                }
            }
        },
    );
}

fn relay_series(x: &mut Exposition, servers: usize, counters: &Counters, connections: Connections) {
    x.family(
        "vstats_relay_servers",
        "gauge",
        "Servers in the relay's registry.",
    );
    x.sample("vstats_relay_servers", &[], servers as f64);
    x.family(
        "vstats_relay_connections",
        "gauge",
        "Open connections to the relay, by kind.",
    );
    for (kind, count) in [
        ("agent", connections.agents),
        ("dashboard", connections.dashboards),
        ("http", connections.http),
    ] {
        x.sample("vstats_relay_connections", &[("kind", kind)], count as f64);
    }
    let totals = [
        (
            "vstats_relay_frames_received_total",
            "Frames received from agents.",
            counters.frames_in,
        ),
        (
            "vstats_relay_frames_sent_total",
            "Messages sent to dashboards.",
            counters.frames_out,
        ),
        (
            "vstats_relay_sent_bytes_total",
            "Message bytes sent to dashboards.",
            counters.bytes_out,
        ),
        (
            "vstats_relay_malformed_frames_total",
            "Malformed agent frames dropped.",
            counters.malformed,
        ),
        (
            "vstats_relay_conflated_messages_total",
            "Samples replaced by a newer one before a slow dashboard took them.",
            counters.conflated,
        ),
        (
            "vstats_relay_refused_connections_total",
            "Connections refused because the relay was at --max-connections.",
            counters.refused_connections,
        ),
        (
            "vstats_relay_dropped_samples_total",
            "Samples dropped because their agent sent more than --agent-max-rate a second.",
            counters.dropped_samples,
        ),
        (
            "vstats_relay_protocol_errors_total",
            "Connections closed (1002) for breaking the WebSocket protocol.",
            counters.protocol_errors,
        ),
        (
            "vstats_relay_slow_dashboards_total",
            "Dashboards closed (1013) for not keeping up with the messages sent to them.",
            counters.slow_dashboards,
        ),
    ];
    for (name, help, value) in totals {
        x.family(name, "counter", help);
        x.sample(name, &[], value as f64);
    }
    let ignored = counters.compat_ignored;
    labelled_counter(
        x,
        "vstats_relay_compat_ignored_frames_total",
        "Frames of vStats agents read and dropped, by type: their own aggregation and offline batches.",
        "type",
        &[
            ("aggregated_metrics", ignored.aggregated_metrics),
            ("batch_metrics", ignored.batch_metrics),
        ],
    );
    let delivered = counters.notifications;
    labelled_counter(
        x,
        "vstats_relay_notifications_total",
        "Notifications by result: sent, failed (refused, or failing past the retries) or dropped (queue full).",
        "result",
        &[
            ("sent", delivered.sent),
            ("failed", delivered.failed),
            ("dropped", delivered.dropped),
        ],
    );
    let store = counters.store;
    labelled_counter(
        x,
        "vstats_relay_history_rows_total",
        "Minutes of history handed to the database, by result: written, or dropped (the oldest, \
         with the queue full while the disk was full or slow).",
        "result",
        &[
            ("written", store.rows_written),
            ("dropped", store.rows_dropped),
        ],
    );
    let history = [
        (
            "vstats_relay_history_write_errors_total",
            "counter",
            "Writes to the history database that failed and wait to be tried again.",
            store.write_errors,
        ),
        (
            "vstats_relay_history_queries_total",
            "counter",
            "Reads of the history database for requests.",
            store.queries,
        ),
        (
            "vstats_relay_history_queued_rows",
            "gauge",
            "Minutes waiting to be written to the history database.",
            store.rows_queued,
        ),
        (
            "vstats_relay_history_database_bytes",
            "gauge",
            "The history database's size, as of its last write.",
            store.bytes,
        ),
    ];
    for (name, kind, help, value) in history {
        x.family(name, kind, help);
        x.sample(name, &[], value as f64);
    }
}

/// A counter family of one label, a sample for each of its values.
fn labelled_counter(
    x: &mut Exposition,
    name: &str,
    help: &str,
    label: &'static str,
    counts: &[(&str, u64)],
) {
    x.family(name, "counter", help);
    for (value, count) in counts {
        x.sample(name, &[(label, value)], *count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::hub::Hub;
    use crate::relay::registry::Registry;
    use serde_json::value::RawValue;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value("a\"b\\c\nd 上海", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\nd 上海");
    }

    #[test]
    fn a_server_renders_with_base_units_and_labels() {
        let mut registry = Registry::empty();
        registry.add("pi \"4\"", "上海").unwrap();
        registry.add("idle", "").unwrap();
        let mut hub = Hub::new(&registry);
        hub.servers[0]
            .presence
            .admitted(1, std::time::Instant::now(), UNIX_EPOCH);
        hub.servers[0].latest_data = Some(
            RawValue::from_string(
                r#"{"cpu":{"usage":25.0,"cores":4},"memory":{"total":1000,"used":400},
                   "disks":[{"name":"/dev/root","mount":"/","fs_type":"ext4","total":10,"used":5}],
                   "temperatures":[{"name":"cpu-thermal","celsius":45.5}],
                   "sockets":{"tcp":3,"udp":1},"network":{"rx_total":7,"interfaces":[{"name":"eth0","rx_total":7}]}}"#
                    .into(),
            )
            .unwrap(),
        );
        let id = hub.servers[0].id.clone();
        let text = render(&hub.servers, &Counters::default(), Connections::default());
        let labels = format!("server_id=\"{id}\",name=\"pi \\\"4\\\"\"");
        for line in [
            format!("vstats_up{{{labels}}} 1"),
            format!("vstats_cpu_usage_ratio{{{labels}}} 0.25"),
            format!("vstats_memory_used_bytes{{{labels}}} 400"),
            format!(
                "vstats_filesystem_size_bytes{{{labels},mount=\"/\",device=\"/dev/root\",fstype=\"ext4\"}} 10"
            ),
            format!("vstats_temperature_celsius{{{labels},sensor=\"cpu-thermal\"}} 45.5"),
            format!("vstats_sockets_in_use{{{labels},protocol=\"tcp\"}} 3"),
            format!(
                "vstats_network_interface_receive_bytes_total{{{labels},interface=\"eth0\"}} 7"
            ),
            "vstats_relay_servers 2".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // The idle server is down and has no readings.
        assert_eq!(text.matches("vstats_up{").count(), 2);
        assert_eq!(text.matches("vstats_cpu_cores{").count(), 1);
    }

    /// One online server whose latest sample is `sample`; its exposition
    /// and its labels.
    fn render_one(sample: &str) -> (String, String) {
        let mut registry = Registry::empty();
        registry.add("nas", "").unwrap();
        let mut hub = Hub::new(&registry);
        hub.servers[0]
            .presence
            .admitted(1, std::time::Instant::now(), UNIX_EPOCH);
        hub.servers[0].latest_data = Some(RawValue::from_string(sample.to_owned()).unwrap());
        let labels = format!("server_id=\"{}\",name=\"nas\"", hub.servers[0].id);
        let text = render(&hub.servers, &Counters::default(), Connections::default());
        (text, labels)
    }

    /// A sample like a small server's, with `disks` first in it.
    fn sample_with_disks(disks: &str) -> String {
        format!(
            r#"{{"disks":[{disks}],"cpu":{{"usage":25.0,"cores":4}},"memory":{{"total":1000,"used":400}},
               "temperatures":[{{"name":"coretemp Package id 0","celsius":45.5}},{{"name":"nvme temp1","celsius":38}}],
               "sockets":{{"tcp":3,"udp":1}},"load_average":{{"one":0.5}},"uptime":100,"processes":90,
               "network":{{"rx_total":7,"interfaces":[{{"name":"eth0","rx_total":7}},{{"name":"wlan0"}}]}}}}"#
        )
    }

    fn lines_of(text: &str, family: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .count()
    }

    #[test]
    fn twenty_thousand_empty_disks_render_at_most_the_cap() {
        let real = r#"{"name":"/dev/sda1","mount":"/","fs_type":"ext4","total":10,"used":5},
                      {"name":"/dev/sdb1","mount":"/srv","fs_type":"xfs","total":20,"used":1}"#;
        let (normal, labels) = render_one(&sample_with_disks(real));
        assert_eq!(lines_of(&normal, "vstats_filesystem_size_bytes"), 2);
        assert_eq!(lines_of(&normal, "vstats_server_series_dropped"), 0);

        // The reported fault: 20,000 `{}` fit in one 64 KiB frame.
        let flood = vec!["{}"; 20_000].join(",");
        let (flooded, labels_flooded) = render_one(&sample_with_disks(&flood));
        for family in [
            "vstats_filesystem_size_bytes",
            "vstats_filesystem_used_bytes",
        ] {
            assert_eq!(lines_of(&flooded, family), MAX_FILESYSTEMS, "{family}");
        }
        let dropped = 2 * (20_000 - MAX_FILESYSTEMS);
        let line =
            format!("vstats_server_series_dropped{{{labels_flooded},list=\"disks\"}} {dropped}");
        assert!(flooded.lines().any(|l| l == line), "missing {line}");
        assert_eq!(lines_of(&flooded, "vstats_server_series_dropped"), 1);
        // The other series are untouched.
        assert!(flooded.contains("vstats_cpu_cores{"));
        assert_eq!(lines_of(&flooded, "vstats_temperature_celsius"), 2);
        // Capped, one such server costs a few normal ones, not 68.
        assert!(
            flooded.len() < 5 * normal.len(),
            "{} bytes against {} for a normal server",
            flooded.len(),
            normal.len()
        );
        assert!(normal.contains(&labels));
    }

    #[test]
    fn interfaces_and_sensors_are_capped_too() {
        let interfaces: Vec<String> = (0..MAX_INTERFACES + 10)
            .map(|i| format!(r#"{{"name":"veth{i}","rx_total":{i}}}"#))
            .collect();
        let sensors: Vec<String> = (0..MAX_SENSORS + 1)
            .map(|i| format!(r#"{{"name":"coretemp Core {i}","celsius":40}}"#))
            .collect();
        let sample = format!(
            r#"{{"network":{{"interfaces":[{}]}},"temperatures":[{}]}}"#,
            interfaces.join(","),
            sensors.join(",")
        );
        let (text, labels) = render_one(&sample);
        assert_eq!(
            lines_of(&text, "vstats_network_interface_receive_bytes_total"),
            MAX_INTERFACES
        );
        assert_eq!(lines_of(&text, "vstats_temperature_celsius"), MAX_SENSORS);
        // The agent's order is kept: the first entries are the ones shown.
        assert!(text.contains("interface=\"veth0\"}"));
        assert!(!text.contains(&format!("interface=\"veth{MAX_INTERFACES}\"")));
        for line in [
            format!("vstats_server_series_dropped{{{labels},list=\"interfaces\"}} 20"),
            format!("vstats_server_series_dropped{{{labels},list=\"temperatures\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert_eq!(lines_of(&text, "vstats_server_series_dropped"), 2);
    }
}
