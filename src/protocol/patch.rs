//! Lean samples: a `patch` carries what changed since the agent's previous
//! sample on the same connection, and the relay rebuilds the whole sample
//! (docs/PROTOCOL.md, "Lean samples").
//!
//! Static facts (hostname, OS, CPU model, sizes, names) go once, in the
//! full `metrics` an agent sends first on each connection; a patch leaves
//! out every value that did not change and every value the relay can
//! derive from the others, with the formulas here, which agent and relay
//! share. Pure functions: tested without sockets.

use super::{Cpu, DiskIo, Interface, LoadAverage, Memory, Metrics, Network, Os, Sockets};
use serde::{Deserialize, Serialize};

/// `used / whole` in percent, to the one decimal a person reads.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 1000.0).round() / 10.0
}

/// Bytes a second, whole: `bytes` counted over `elapsed_ms`.
pub fn per_second(bytes: u64, elapsed_ms: u64) -> f64 {
    if elapsed_ms == 0 {
        return 0.0;
    }
    (bytes as f64 * 1000.0 / elapsed_ms as f64).round()
}

/// The `data` of a `patch`. Absent fields are unchanged, except where a
/// field says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsPatch {
    /// Milliseconds since the previous sample, by the agent's monotonic
    /// clock: what rates and the uptime advance by.
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryPatch>,
    /// See [`merge_list`] for how a list is patched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskPatch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_io: Option<DiskIoPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPatch>,
    /// Absent: the uptime advanced by `elapsed_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_average: Option<LoadAverage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperatures: Option<Vec<TemperaturePatch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketsPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_core: Option<Vec<f64>>,
}

/// `used` and `usage_percent` are derived: `total - available`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_used: Option<u64>,
}

/// `usage_percent` is derived from `used` and `total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskIoPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketsPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<u64>,
}

/// The totals and rates of `network` itself are derived: sums over the
/// interfaces marked `counted`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfacePatch>>,
}

/// An interface's rates come from the bytes it moved in `elapsed_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfacePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<bool>,
    /// Bytes received since the previous sample; absent: none. The total
    /// grows by it, and the rate is it over `elapsed_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// The total itself, when it cannot be told as growth: a new
    /// interface, or a counter that went back (wrapped, re-created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_total: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemperaturePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub celsius: Option<f64>,
}

/// What the relay keeps of a connection that sends patches: the whole
/// sample so far, and the uptime to the millisecond, so that whole seconds
/// added up do not drift.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeanState {
    pub sample: Metrics,
    uptime_ms: Option<u64>,
}

impl LeanState {
    /// Starts from the full sample the connection sent first.
    pub fn new(sample: Metrics) -> LeanState {
        let uptime_ms = sample.uptime.map(|s| s.saturating_mul(1000));
        LeanState { sample, uptime_ms }
    }

    /// The uptime, in whole seconds, that a patch leaving it out would
    /// give after `elapsed_ms`.
    pub fn uptime_after(&self, elapsed_ms: u64) -> Option<u64> {
        self.uptime_ms
            .map(|ms| ms.saturating_add(elapsed_ms) / 1000)
    }

    /// Applies a patch and derives what it left out.
    pub fn apply(&mut self, patch: MetricsPatch) {
        let sample = &mut self.sample;
        let elapsed_ms = patch.elapsed_ms;
        set(&mut sample.hostname, patch.hostname);
        set(&mut sample.os, patch.os);
        if let Some(cpu) = patch.cpu {
            let base = sample.cpu.get_or_insert_with(Cpu::default);
            set(&mut base.brand, cpu.brand);
            set(&mut base.cores, cpu.cores);
            set(&mut base.usage, cpu.usage);
            set(&mut base.per_core, cpu.per_core);
        }
        if let Some(memory) = patch.memory {
            let base = sample.memory.get_or_insert_with(Memory::default);
            set(&mut base.total, memory.total);
            set(&mut base.available, memory.available);
            set(&mut base.swap_total, memory.swap_total);
            set(&mut base.swap_used, memory.swap_used);
            base.used = base.total.saturating_sub(base.available);
            base.usage_percent = percent(base.used, base.total);
        }
        if let Some(disks) = patch.disks {
            merge_list(&mut sample.disks, disks, |disk, patch| {
                set(&mut disk.name, patch.name);
                set(&mut disk.mount, patch.mount);
                set(&mut disk.fs_type, patch.fs_type);
                set(&mut disk.total, patch.total);
                set(&mut disk.used, patch.used);
                disk.usage_percent = percent(disk.used, disk.total);
            });
        }
        if let Some(disk_io) = patch.disk_io {
            let base = sample.disk_io.get_or_insert_with(DiskIo::default);
            set(&mut base.read_rate, disk_io.read_rate);
            set(&mut base.write_rate, disk_io.write_rate);
        }
        if let Some(network) = patch.network {
            let base = sample.network.get_or_insert_with(Default::default);
            // Interfaces a patch does not list moved nothing.
            for interface in &mut base.interfaces {
                interface.rx = 0.0;
                interface.tx = 0.0;
            }
            if let Some(interfaces) = network.interfaces {
                merge_list(&mut base.interfaces, interfaces, |interface, patch| {
                    grow(interface, patch, elapsed_ms);
                });
            }
            base.sum_counted();
        }
        self.uptime_ms = match patch.uptime {
            Some(seconds) => Some(seconds.saturating_mul(1000)),
            None => self.uptime_ms.map(|ms| ms.saturating_add(elapsed_ms)),
        };
        sample.uptime = self.uptime_ms.map(|ms| ms / 1000);
        set(&mut sample.load_average, patch.load_average.map(Some));
        if let Some(temperatures) = patch.temperatures {
            merge_list(&mut sample.temperatures, temperatures, |sensor, patch| {
                set(&mut sensor.name, patch.name);
                set(&mut sensor.celsius, patch.celsius);
            });
        }
        if let Some(sockets) = patch.sockets {
            let base = sample.sockets.get_or_insert_with(Sockets::default);
            set(&mut base.tcp, sockets.tcp);
            set(&mut base.udp, sockets.udp);
        }
        set(&mut sample.processes, patch.processes.map(Some));
    }
}

impl Network {
    /// Sets `rx`, `tx` and the totals to the sums over the interfaces
    /// marked `counted`, as a relay derives them after a patch.
    pub fn sum_counted(&mut self) {
        let (mut rx, mut tx, mut rx_total, mut tx_total) = (0.0, 0.0, 0, 0);
        for interface in self.interfaces.iter().filter(|i| i.counted) {
            rx += interface.rx;
            tx += interface.tx;
            // Totals a hostile agent sets near u64::MAX must not wrap (or,
            // in a debug build, panic and end the relay).
            rx_total = u64::saturating_add(rx_total, interface.rx_total);
            tx_total = u64::saturating_add(tx_total, interface.tx_total);
        }
        (self.rx, self.tx, self.rx_total, self.tx_total) = (rx, tx, rx_total, tx_total);
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// An interface's totals and rates after `elapsed_ms`.
fn grow(interface: &mut Interface, patch: InterfacePatch, elapsed_ms: u64) {
    set(&mut interface.name, patch.name);
    set(&mut interface.counted, patch.counted);
    let rx = patch.rx_bytes.unwrap_or(0);
    let tx = patch.tx_bytes.unwrap_or(0);
    interface.rx_total = patch
        .rx_total
        .unwrap_or_else(|| interface.rx_total.saturating_add(rx));
    interface.tx_total = patch
        .tx_total
        .unwrap_or_else(|| interface.tx_total.saturating_add(tx));
    interface.rx = per_second(rx, elapsed_ms);
    interface.tx = per_second(tx, elapsed_ms);
}

/// A list in a patch lines up with the stored list by position when both
/// have the same length: each entry patches the one at its place. A list
/// of another length replaces the stored one, each entry patching an
/// empty one (so it must carry every field).
pub fn merge_list<T: Default, P>(
    base: &mut Vec<T>,
    patch: Vec<P>,
    mut apply: impl FnMut(&mut T, P),
) {
    if base.len() != patch.len() {
        base.clear();
        base.resize_with(patch.len(), T::default);
    }
    for (entry, change) in base.iter_mut().zip(patch) {
        apply(entry, change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Disk, Network, Temperature};

    fn interface(name: &str, counted: bool, rx_total: u64) -> Interface {
        Interface {
            name: name.into(),
            counted,
            rx_total,
            tx_total: rx_total / 10,
            ..Interface::default()
        }
    }

    fn base() -> LeanState {
        LeanState::new(Metrics {
            hostname: "pi".into(),
            cpu: Some(Cpu {
                brand: "Cortex-A72".into(),
                cores: 4,
                usage: 3.0,
                per_core: vec![1.0, 2.0, 3.0, 4.0],
            }),
            memory: Some(Memory {
                total: 1000,
                used: 400,
                available: 600,
                usage_percent: 40.0,
                swap_total: 0,
                swap_used: 0,
            }),
            disks: vec![Disk {
                name: "/dev/mmcblk0p2".into(),
                mount: "/".into(),
                fs_type: "ext4".into(),
                total: 3000,
                used: 1000,
                usage_percent: 33.3,
            }],
            network: Some(Network {
                interfaces: vec![
                    interface("eth0", true, 10_000),
                    interface("wlan0", true, 500),
                    interface("docker0", false, 7_000),
                ],
                ..Network::default()
            }),
            uptime: Some(100),
            temperatures: vec![Temperature {
                name: "cpu-thermal".into(),
                celsius: 45.0,
            }],
            ..Metrics::default()
        })
    }

    fn patch(json: &str) -> MetricsPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numbers_are_rounded_as_a_person_reads_them() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(2, 3), 66.7);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(per_second(1500, 1000), 1500.0);
        assert_eq!(per_second(1000, 3000), 333.0);
        assert_eq!(per_second(1000, 0), 0.0);
    }

    #[test]
    fn an_empty_patch_changes_nothing_but_time() {
        let mut state = base();
        let before = state.sample.clone();
        state.apply(patch(r#"{"elapsed_ms":1000}"#));
        assert_eq!(state.sample.uptime, Some(101));
        state.sample.uptime = before.uptime;
        assert_eq!(state.sample, before);
    }

    #[test]
    fn memory_used_and_percentages_are_derived() {
        let mut state = base();
        state.apply(patch(
            r#"{"elapsed_ms":1000,"memory":{"available":250},"disks":[{"used":1500}]}"#,
        ));
        let memory = state.sample.memory.as_ref().unwrap();
        assert_eq!((memory.used, memory.usage_percent), (750, 75.0));
        let disk = &state.sample.disks[0];
        assert_eq!(
            (disk.name.as_str(), disk.used, disk.usage_percent),
            ("/dev/mmcblk0p2", 1500, 50.0)
        );
    }

    #[test]
    fn interfaces_grow_by_the_bytes_they_moved_and_network_sums_the_counted() {
        let mut state = base();
        state.apply(patch(
            r#"{"elapsed_ms":2000,"network":{"interfaces":[
                {"rx_bytes":4000,"tx_bytes":200},{},{"rx_bytes":999999}]}}"#,
        ));
        let network = state.sample.network.as_ref().unwrap();
        let eth0 = &network.interfaces[0];
        assert_eq!(
            (eth0.rx, eth0.tx, eth0.rx_total, eth0.tx_total),
            (2000.0, 100.0, 14_000, 1_200)
        );
        assert_eq!(network.interfaces[1].rx, 0.0);
        assert_eq!(network.interfaces[2].rx_total, 7_000 + 999_999);
        // docker0 is not counted: its bytes are already on eth0.
        assert_eq!((network.rx, network.tx), (2000.0, 100.0));
        assert_eq!(
            (network.rx_total, network.tx_total),
            (14_000 + 500, 1_200 + 50)
        );
        // A second without traffic: rates drop to 0, totals stay.
        state.apply(patch(
            r#"{"elapsed_ms":1000,"network":{"interfaces":[{},{},{}]}}"#,
        ));
        let network = state.sample.network.as_ref().unwrap();
        assert_eq!((network.rx, network.rx_total), (0.0, 14_500));
        assert_eq!(network.interfaces[0].rx, 0.0);
    }

    #[test]
    fn interface_totals_near_the_top_saturate_instead_of_wrapping() {
        let mut state = base();
        state.apply(patch(&format!(
            r#"{{"elapsed_ms":1000,"network":{{"interfaces":[
                {{"rx_total":{max},"tx_total":{max}}},{{"rx_total":{max}}},{{}}]}}}}"#,
            max = u64::MAX
        )));
        let network = state.sample.network.as_ref().unwrap();
        assert_eq!((network.rx_total, network.tx_total), (u64::MAX, u64::MAX));
        // And growth past the top stays there.
        state.apply(patch(
            r#"{"elapsed_ms":1000,"network":{"interfaces":[{"rx_bytes":5},{},{}]}}"#,
        ));
        let network = state.sample.network.as_ref().unwrap();
        assert_eq!(network.interfaces[0].rx_total, u64::MAX);
        assert_eq!(network.rx_total, u64::MAX);
    }

    #[test]
    fn a_counter_that_went_back_is_sent_as_its_total() {
        let mut state = base();
        state.apply(patch(
            r#"{"elapsed_ms":1000,"network":{"interfaces":[{"rx_total":12,"tx_total":3},{},{}]}}"#,
        ));
        let eth0 = &state.sample.network.as_ref().unwrap().interfaces[0];
        assert_eq!((eth0.rx_total, eth0.tx_total, eth0.rx), (12, 3, 0.0));
    }

    #[test]
    fn a_list_of_another_length_replaces_the_stored_one() {
        let mut state = base();
        state.apply(patch(
            r#"{"elapsed_ms":1000,"disks":[
                {"name":"/dev/sda1","mount":"/","fs_type":"ext4","total":100,"used":10},
                {"name":"/dev/sdb1","mount":"/data","fs_type":"xfs","total":200,"used":150}]}"#,
        ));
        let disks: Vec<_> = state
            .sample
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.usage_percent))
            .collect();
        assert_eq!(disks, [("/dev/sda1", 10.0), ("/dev/sdb1", 75.0)]);
        state.apply(patch(
            r#"{"elapsed_ms":1000,"temperatures":[{"celsius":51.5}]}"#,
        ));
        assert_eq!(state.sample.temperatures[0].name, "cpu-thermal");
        assert_eq!(state.sample.temperatures[0].celsius, 51.5);
    }

    #[test]
    fn the_uptime_advances_to_the_millisecond_without_drift() {
        let mut state = base();
        for _ in 0..10 {
            state.apply(patch(r#"{"elapsed_ms":1250}"#));
        }
        assert_eq!(state.sample.uptime, Some(112)); // 100 s + 12.5 s
        state.apply(patch(r#"{"elapsed_ms":1000,"uptime":5}"#));
        assert_eq!(
            state.sample.uptime,
            Some(5),
            "a reboot or a suspend resets it"
        );
    }

    #[test]
    fn changed_values_replace_the_stored_ones() {
        let mut state = base();
        state.apply(patch(
            r#"{"elapsed_ms":1000,"hostname":"pi-2","cpu":{"usage":55.5,"per_core":[50,60,55,57]},
                "load_average":{"one":0.5,"five":0.25,"fifteen":0.1},"processes":120,
                "sockets":{"tcp":3},"disk_io":{"read_rate":4096}}"#,
        ));
        let sample = &state.sample;
        assert_eq!(sample.hostname, "pi-2");
        let cpu = sample.cpu.as_ref().unwrap();
        assert_eq!(
            (cpu.brand.as_str(), cpu.cores, cpu.usage),
            ("Cortex-A72", 4, 55.5)
        );
        assert_eq!(cpu.per_core, [50.0, 60.0, 55.0, 57.0]);
        assert_eq!(sample.load_average.as_ref().unwrap().five, 0.25);
        assert_eq!(sample.processes, Some(120));
        assert_eq!(sample.sockets, Some(Sockets { tcp: 3, udp: 0 }));
        assert_eq!(sample.disk_io.as_ref().unwrap().read_rate, 4096.0);
    }

    #[test]
    fn only_counted_interfaces_say_so_on_the_wire() {
        let text = serde_json::to_string(&interface("eth0", false, 1)).unwrap();
        assert!(!text.contains("counted"), "{text}");
        let text = serde_json::to_string(&interface("eth0", true, 1)).unwrap();
        assert!(text.contains(r#""counted":true"#), "{text}");
    }
}
