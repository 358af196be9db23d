//! What the agent puts on the wire each interval: one whole sample when a
//! connection opens, then patches of what changed (docs/PROTOCOL.md,
//! "`patch`: lean samples").
//!
//! The agent keeps a mirror of the relay's view of the sample and applies
//! each patch it sends to it with the relay's own code
//! ([`LeanState::apply`]). So it compares every new sample with exactly
//! what the relay holds, derived fields and rounding included, and an
//! error can never add up over time. Pure: no sockets, no clock but the
//! `elapsed_ms` it is given.

use crate::agent::fit::{self, CAPS, Caps};
use crate::protocol::MAX_SAMPLE_BYTES;
use crate::protocol::{
    AgentMessage, Cpu, CpuPatch, Disk, DiskIo, DiskIoPatch, DiskPatch, Frame, Interface,
    InterfacePatch, LeanState, Memory, MemoryPatch, Metrics, MetricsPatch, Network, NetworkPatch,
    Sockets, SocketsPatch, Temperature, TemperaturePatch, rfc3339, to_json,
};
use std::time::SystemTime;

/// The largest whole frame sent. A relay takes frames of up to
/// [`MAX_SAMPLE_BYTES`] and holds the samples it rebuilds from patches to
/// that size; it writes numbers and its timestamp a little differently,
/// so a kilobyte is left for that.
pub const MAX_WHOLE_FRAME: usize = MAX_SAMPLE_BYTES - 1024;

/// The lean sender of one connection: a new connection starts a new one.
#[derive(Debug)]
pub struct LeanWire {
    /// The relay's view, once a whole sample went out.
    mirror: Option<LeanState>,
    /// Every sample whole (`--full-samples`), for a server that takes no
    /// patches.
    whole_only: bool,
    /// The lists' caps: [`CAPS`] (what the collector cut to already) until
    /// a whole sample cut to them is still over [`MAX_WHOLE_FRAME`] (long
    /// mount paths, say); then halved until one fits, for every sample
    /// after, so that patches do not grow the lists back. The session
    /// hands them on to the next connection's wire.
    caps: Caps,
}

impl Default for LeanWire {
    fn default() -> LeanWire {
        LeanWire::new(false, CAPS)
    }
}

impl LeanWire {
    pub fn new(whole_only: bool, caps: Caps) -> LeanWire {
        LeanWire {
            mirror: None,
            whole_only,
            caps,
        }
    }

    /// The caps samples are cut to now.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Forgets the relay's view: the next sample goes whole. For a frame
    /// that never reached the relay.
    pub fn forget(&mut self) {
        self.mirror = None;
    }

    /// The frame, as JSON text, that tells the relay about `sample`, taken
    /// `elapsed_ms` after the previous one on this connection; a whole
    /// sample is stamped `now`.
    pub fn frame(
        &mut self,
        mut sample: Metrics,
        elapsed_ms: u64,
        now: SystemTime,
    ) -> serde_json::Result<String> {
        if self.caps != CAPS {
            fit::fit(&mut sample, &self.caps);
        }
        if let Some(mirror) = &mut self.mirror {
            if let Some(patch) = diff(mirror, &sample, elapsed_ms) {
                // The relay stamps a patched sample with its own clock.
                let frame = Frame {
                    message: AgentMessage::Patch(Box::new(patch)),
                    timestamp: None,
                };
                let text = to_json(&frame)?;
                if let AgentMessage::Patch(patch) = frame.message {
                    mirror.apply(*patch);
                }
                return Ok(text);
            }
        }
        // One time stamps the sample and its frame.
        let stamp = rfc3339(now);
        sample.timestamp.clone_from(&stamp);
        let mut frame = Frame {
            message: AgentMessage::Metrics(Box::new(sample)),
            timestamp: Some(stamp),
        };
        let mut text = to_json(&frame)?;
        while text.len() > MAX_WHOLE_FRAME && self.caps != self.caps.halved() {
            let AgentMessage::Metrics(sample) = &mut frame.message else {
                break;
            };
            self.caps = self.caps.halved();
            fit::fit(sample, &self.caps);
            log::warn!(
                "a whole sample of {} bytes is over the {MAX_WHOLE_FRAME} a relay takes: \
                 listing at most {} interfaces, {} filesystems and {} sensors",
                text.len(),
                self.caps.interfaces,
                self.caps.disks,
                self.caps.temperatures
            );
            text = to_json(&frame)?;
        }
        if let AgentMessage::Metrics(sample) = frame.message {
            if !self.whole_only {
                self.mirror = Some(LeanState::new(*sample));
            }
        }
        Ok(text)
    }
}

/// What changed from the relay's view to `new`; `None` when a patch cannot
/// say it, because a section went away.
fn diff(mirror: &LeanState, new: &Metrics, elapsed_ms: u64) -> Option<MetricsPatch> {
    let old = &mirror.sample;
    if gone(&old.cpu, &new.cpu)
        || gone(&old.memory, &new.memory)
        || gone(&old.disk_io, &new.disk_io)
        || gone(&old.network, &new.network)
        || gone(&old.uptime, &new.uptime)
        || gone(&old.load_average, &new.load_average)
        || gone(&old.sockets, &new.sockets)
        || gone(&old.processes, &new.processes)
    {
        return None;
    }
    Some(MetricsPatch {
        elapsed_ms,
        hostname: changed(&old.hostname, &new.hostname),
        os: changed(&old.os, &new.os),
        cpu: section(&old.cpu, &new.cpu, cpu),
        memory: section(&old.memory, &new.memory, memory),
        disks: list(&old.disks, &new.disks, disk),
        disk_io: section(&old.disk_io, &new.disk_io, disk_io),
        network: network(&old.network, &new.network),
        uptime: match (new.uptime, mirror.uptime_after(elapsed_ms)) {
            // Clocks that tick a few ms apart round to seconds differently.
            (Some(uptime), Some(expected)) if uptime.abs_diff(expected) <= 1 => None,
            (uptime, _) => uptime,
        },
        load_average: changed(&old.load_average, &new.load_average).flatten(),
        temperatures: list(&old.temperatures, &new.temperatures, temperature),
        sockets: section(&old.sockets, &new.sockets, sockets),
        processes: changed(&old.processes, &new.processes).flatten(),
    })
}

fn gone<T>(old: &Option<T>, new: &Option<T>) -> bool {
    old.is_some() && new.is_none()
}

fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
    (old != new).then(|| new.clone())
}

/// A section patched field by field: `None` when nothing changed, but
/// always sent (empty at worst) when it appears, so the relay has it too.
fn section<T: Default, P: Default + PartialEq>(
    old: &Option<T>,
    new: &Option<T>,
    fields: impl Fn(&T, &T) -> P,
) -> Option<P> {
    let new = new.as_ref()?;
    let patch = fields(old.as_ref().unwrap_or(&T::default()), new);
    (old.is_none() || patch != P::default()).then_some(patch)
}

/// A list patched entry by entry when its length holds (`None` when no
/// entry changed); otherwise sent whole, each entry against an empty one,
/// which is what the relay patches it onto (`entry` is told which).
fn list<T: Default, P: Default + PartialEq>(
    old: &[T],
    new: &[T],
    entry: impl Fn(&T, &T, bool) -> P,
) -> Option<Vec<P>> {
    if old.len() != new.len() {
        let blank = T::default();
        return Some(new.iter().map(|new| entry(&blank, new, true)).collect());
    }
    let patches: Vec<P> = old
        .iter()
        .zip(new)
        .map(|(old, new)| entry(old, new, false))
        .collect();
    patches
        .iter()
        .any(|patch| *patch != P::default())
        .then_some(patches)
}

fn cpu(old: &Cpu, new: &Cpu) -> CpuPatch {
    CpuPatch {
        brand: changed(&old.brand, &new.brand),
        cores: changed(&old.cores, &new.cores),
        usage: changed(&old.usage, &new.usage),
        per_core: changed(&old.per_core, &new.per_core),
    }
}

/// `used` and `usage_percent` are the relay's to derive.
fn memory(old: &Memory, new: &Memory) -> MemoryPatch {
    MemoryPatch {
        total: changed(&old.total, &new.total),
        available: readable(old.available, new.available, new.total),
        swap_total: changed(&old.swap_total, &new.swap_total),
        swap_used: readable(old.swap_used, new.swap_used, new.swap_total),
    }
}

/// A size, once it moved by what a person can read: a tenth of a percent
/// of its whole (the one decimal of `usage_percent`), or more. Memory and
/// disks shift by kilobytes every second without anyone seeing it; the
/// relay's figure stays within that tenth of the truth, since each change
/// is measured from what the relay holds, never from the last reading.
fn readable(old: u64, new: u64, whole: u64) -> Option<u64> {
    let moved = u128::from(old.abs_diff(new));
    (moved * 1000 >= u128::from(whole) && moved > 0).then_some(new)
}

fn disk_io(old: &DiskIo, new: &DiskIo) -> DiskIoPatch {
    DiskIoPatch {
        read_rate: changed(&old.read_rate, &new.read_rate),
        write_rate: changed(&old.write_rate, &new.write_rate),
    }
}

fn sockets(old: &Sockets, new: &Sockets) -> SocketsPatch {
    SocketsPatch {
        tcp: changed(&old.tcp, &new.tcp),
        udp: changed(&old.udp, &new.udp),
    }
}

/// A new entry goes complete, its `used` too, however small.
fn disk(old: &Disk, new: &Disk, fresh: bool) -> DiskPatch {
    DiskPatch {
        name: changed(&old.name, &new.name),
        mount: changed(&old.mount, &new.mount),
        fs_type: changed(&old.fs_type, &new.fs_type),
        total: changed(&old.total, &new.total),
        used: if fresh {
            changed(&old.used, &new.used)
        } else {
            readable(old.used, new.used, new.total)
        },
    }
}

/// The relay resets every rate when a patch has `network`, so it is sent
/// while anything moves or moved last time (`{}` when nothing did since),
/// and left out once all is still.
fn network(old: &Option<Network>, new: &Option<Network>) -> Option<NetworkPatch> {
    let new = new.as_ref()?;
    let blank = Network::default();
    let base = old.as_ref().unwrap_or(&blank);
    let was_moving = base.rx != 0.0
        || base.tx != 0.0
        || base.interfaces.iter().any(|i| i.rx != 0.0 || i.tx != 0.0);
    let interfaces = interfaces(&base.interfaces, &new.interfaces);
    (old.is_none() || was_moving || interfaces.is_some()).then_some(NetworkPatch { interfaces })
}

/// Interfaces go by position like any list, but what one moved is
/// reckoned from its own previous reading, found by name when the list
/// changed, so its rate survives another interface coming or going.
fn interfaces(old: &[Interface], new: &[Interface]) -> Option<Vec<InterfacePatch>> {
    let blank = Interface::default();
    let same_length = old.len() == new.len();
    let patches: Vec<InterfacePatch> = new
        .iter()
        .enumerate()
        .map(|(index, new)| {
            let base = if same_length { &old[index] } else { &blank };
            let previous = if same_length && base.name == new.name {
                Some(base)
            } else {
                old.iter().find(|old| old.name == new.name)
            };
            interface(base, new, previous)
        })
        .collect();
    (!same_length
        || patches
            .iter()
            .any(|patch| *patch != InterfacePatch::default()))
    .then_some(patches)
}

/// `base` is what the relay's entry holds, `previous` this interface's
/// own last reading.
fn interface(base: &Interface, new: &Interface, previous: Option<&Interface>) -> InterfacePatch {
    let (rx_bytes, rx_total) = counter(base.rx_total, previous.map(|p| p.rx_total), new.rx_total);
    let (tx_bytes, tx_total) = counter(base.tx_total, previous.map(|p| p.tx_total), new.tx_total);
    InterfacePatch {
        name: changed(&base.name, &new.name),
        counted: changed(&base.counted, &new.counted),
        rx_bytes,
        tx_bytes,
        rx_total,
        tx_total,
    }
}

/// `(bytes moved, total)`: the bytes moved since the previous reading make
/// the rate; the total goes too when growing `base` by them does not give
/// it (a new entry, a counter that went back).
fn counter(base: u64, previous: Option<u64>, new: u64) -> (Option<u64>, Option<u64>) {
    let moved = previous
        .and_then(|previous| new.checked_sub(previous))
        .filter(|&moved| moved > 0);
    let total = match moved {
        Some(moved) if base.checked_add(moved) == Some(new) => None,
        _ => (base != new).then_some(new),
    };
    (moved, total)
}

fn temperature(old: &Temperature, new: &Temperature, _fresh: bool) -> TemperaturePatch {
    TemperaturePatch {
        name: changed(&old.name, &new.name),
        celsius: changed(&old.celsius, &new.celsius),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LoadAverage, Os, per_second, percent};

    const SECOND: u64 = 1000;
    /// When the tests' samples are taken: any time will do, one is fixed.
    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    /// A host as the agent samples it: derived fields computed the way the
    /// relay derives them, so the two can be compared whole.
    #[derive(Clone)]
    struct Host {
        hostname: String,
        busy: f64,
        available: u64,
        disks: Vec<(String, u64)>,
        interfaces: Vec<Link>,
        uptime: u64,
        processes: u64,
        load: f64,
        celsius: Vec<f64>,
    }

    #[derive(Clone)]
    struct Link {
        name: &'static str,
        counted: bool,
        rx_total: u64,
        tx_total: u64,
        /// Bytes received and sent in the last interval.
        moved: (u64, u64),
    }

    fn link(name: &'static str, counted: bool, rx_total: u64, tx_total: u64) -> Link {
        Link {
            name,
            counted,
            rx_total,
            tx_total,
            moved: (0, 0),
        }
    }

    impl Host {
        fn new() -> Host {
            Host {
                hostname: "pi".into(),
                busy: 3.5,
                available: 600 << 20,
                disks: vec![("/".into(), 1 << 30)],
                interfaces: vec![
                    link("eth0", true, 10_000, 5_000),
                    link("docker0", false, 700, 70),
                ],
                uptime: 100,
                processes: 90,
                load: 0.25,
                celsius: vec![45.0],
            }
        }

        /// One interval later, with what each interface moved in it.
        fn step(&mut self, moved: &[(u64, u64)]) {
            self.uptime += 1;
            for (link, &(rx, tx)) in self.interfaces.iter_mut().zip(moved) {
                link.rx_total += rx;
                link.tx_total += tx;
                link.moved = (rx, tx);
            }
        }

        fn sample(&self) -> Metrics {
            let total = 1 << 30;
            let interfaces: Vec<Interface> = self
                .interfaces
                .iter()
                .map(|link| Interface {
                    name: link.name.into(),
                    counted: link.counted,
                    rx: per_second(link.moved.0, SECOND),
                    tx: per_second(link.moved.1, SECOND),
                    rx_total: link.rx_total,
                    tx_total: link.tx_total,
                })
                .collect();
            let counted = || interfaces.iter().filter(|i| i.counted);
            Metrics {
                timestamp: String::new(),
                hostname: self.hostname.clone(),
                os: Os {
                    name: "Raspbian".into(),
                    kernel: "6.6".into(),
                    ..Os::default()
                },
                cpu: Some(Cpu {
                    brand: "Cortex-A72".into(),
                    cores: 2,
                    usage: self.busy,
                    per_core: vec![self.busy, self.busy],
                }),
                memory: Some(Memory {
                    total,
                    used: total - self.available,
                    available: self.available,
                    usage_percent: percent(total - self.available, total),
                    swap_total: 0,
                    swap_used: 0,
                }),
                disks: self
                    .disks
                    .iter()
                    .map(|(mount, used)| Disk {
                        name: format!("/dev/disk{}", mount.len()),
                        mount: mount.clone(),
                        fs_type: "ext4".into(),
                        total: 4 << 30,
                        used: *used,
                        usage_percent: percent(*used, 4 << 30),
                    })
                    .collect(),
                disk_io: Some(DiskIo {
                    read_rate: 0.0,
                    write_rate: 4096.0,
                }),
                network: Some(Network {
                    rx: counted().map(|i| i.rx).sum(),
                    tx: counted().map(|i| i.tx).sum(),
                    rx_total: counted().map(|i| i.rx_total).sum(),
                    tx_total: counted().map(|i| i.tx_total).sum(),
                    interfaces: interfaces.clone(),
                }),
                uptime: Some(self.uptime),
                load_average: Some(LoadAverage {
                    one: self.load,
                    five: 0.5,
                    fifteen: 0.5,
                }),
                temperatures: self
                    .celsius
                    .iter()
                    .map(|&celsius| Temperature {
                        name: "cpu-thermal".into(),
                        celsius,
                    })
                    .collect(),
                sockets: Some(Sockets { tcp: 5, udp: 2 }),
                processes: Some(self.processes),
            }
        }
    }

    /// The relay's side: what it holds after each frame, by its own code.
    #[derive(Default)]
    struct RelayView {
        state: Option<LeanState>,
    }

    impl RelayView {
        fn receive(&mut self, text: &str) -> &'static str {
            let frame = AgentMessage::parse(text).expect("a frame the relay reads");
            match frame.message {
                AgentMessage::Metrics(sample) => {
                    self.state = Some(LeanState::new(*sample));
                    "metrics"
                }
                AgentMessage::Patch(patch) => {
                    self.state.as_mut().expect("a base").apply(*patch);
                    "patch"
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        /// The relay's sample, but for the time it was stamped with.
        fn sample(&self) -> Metrics {
            let mut sample = self.state.as_ref().unwrap().sample.clone();
            sample.timestamp = String::new();
            sample
        }
    }

    fn send(wire: &mut LeanWire, relay: &mut RelayView, host: &Host) -> (&'static str, String) {
        let text = wire.frame(host.sample(), SECOND, T0).unwrap();
        let kind = relay.receive(&text);
        assert_eq!(relay.sample(), host.sample(), "after {text}");
        (kind, text)
    }

    #[test]
    fn the_relay_rebuilds_every_sample_the_agent_took() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        assert_eq!(send(&mut wire, &mut relay, &host).0, "metrics");
        // Traffic, then a quiet second (rates back to 0), then nothing.
        host.step(&[(1500, 300), (10, 0)]);
        assert_eq!(send(&mut wire, &mut relay, &host).0, "patch");
        host.step(&[(0, 0), (0, 0)]);
        send(&mut wire, &mut relay, &host);
        host.step(&[(0, 0), (0, 0)]);
        let (_, quiet) = send(&mut wire, &mut relay, &host);
        assert_eq!(quiet, r#"{"type":"patch","data":{"elapsed_ms":1000}}"#);
        // A new name, CPU and memory moving, a disk filling, a new mount,
        // a new interface, a counter that went back, a sensor warming.
        host.hostname = "pi-kitchen".into();
        host.busy = 57.1;
        host.available -= 3 << 20;
        host.disks[0].1 += 5 << 20;
        host.step(&[(1, 2), (0, 0)]);
        send(&mut wire, &mut relay, &host);
        host.disks.push(("/mnt/usb".into(), 77));
        host.interfaces.push(link("wg0", true, 123_456, 654));
        host.step(&[(0, 0), (0, 0), (0, 0)]);
        send(&mut wire, &mut relay, &host);
        host.interfaces[0].rx_total = 12;
        host.celsius = vec![47.5];
        host.processes += 3;
        host.load = 1.5;
        host.step(&[(0, 0), (5, 5), (5, 5)]);
        let (kind, _) = send(&mut wire, &mut relay, &host);
        assert_eq!(kind, "patch");
        // A sensor and an interface going away still patch (shorter lists).
        host.celsius.clear();
        host.interfaces.remove(1);
        host.step(&[(1, 1), (1, 1)]);
        assert_eq!(send(&mut wire, &mut relay, &host).0, "patch");
    }

    #[test]
    fn a_steady_patch_carries_only_what_moved() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        send(&mut wire, &mut relay, &host);
        host.busy = 12.3;
        host.available += 2 << 20;
        host.step(&[(1234, 56), (0, 0)]);
        let (_, text) = send(&mut wire, &mut relay, &host);
        assert_eq!(
            text,
            concat!(
                r#"{"type":"patch","data":{"elapsed_ms":1000,"#,
                r#""cpu":{"usage":12.3,"per_core":[12.3,12.3]},"#,
                r#""memory":{"available":631242752},"#,
                r#""network":{"interfaces":[{"rx_bytes":1234,"tx_bytes":56},{}]}}}"#
            )
        );
    }

    #[test]
    fn sizes_are_sent_once_they_moved_by_what_a_person_reads() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        send(&mut wire, &mut relay, &host);
        let start = host.available;
        // 1 GiB of memory: a tenth of a percent is about 1 MiB. Each step
        // alone is below it; their sum is not, and goes out then.
        let mut sent = Vec::new();
        for _ in 0..4 {
            host.available -= 300 << 10;
            host.step(&[(0, 0), (0, 0)]);
            let text = wire.frame(host.sample(), SECOND, T0).unwrap();
            relay.receive(&text);
            let held = relay.sample().memory.unwrap().available;
            assert!(host.available.abs_diff(held) * 1000 < 1 << 30, "{text}");
            sent.push(text.contains("available"));
        }
        assert_eq!(sent, [false, false, false, true]);
        assert_eq!(
            relay.sample().memory.unwrap().available,
            start - (1200 << 10)
        );
        // A disk of 4 GiB: 4 MiB moves it.
        host.disks[0].1 += 3 << 20;
        host.step(&[(0, 0), (0, 0)]);
        let text = wire.frame(host.sample(), SECOND, T0).unwrap();
        assert!(!text.contains("disks"), "{text}");
        host.disks[0].1 += 2 << 20;
        host.step(&[(0, 0), (0, 0)]);
        let text = wire.frame(host.sample(), SECOND, T0).unwrap();
        assert!(text.contains(r#""disks":[{"used":"#), "{text}");
    }

    #[test]
    fn a_section_that_went_away_sends_the_whole_sample() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        send(&mut wire, &mut relay, &host);
        host.step(&[(0, 0), (0, 0)]);
        let mut sample = host.sample();
        sample.sockets = None;
        let text = wire.frame(sample.clone(), SECOND, T0).unwrap();
        assert_eq!(relay.receive(&text), "metrics");
        assert_eq!(relay.sample(), sample);
        // And the next ones patch that.
        let text = wire.frame(sample, SECOND, T0).unwrap();
        assert_eq!(relay.receive(&text), "patch");
    }

    #[test]
    fn the_uptime_is_sent_only_when_it_strays() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        send(&mut wire, &mut relay, &host);
        host.step(&[(0, 0), (0, 0)]);
        // The agent's clock read 1.4 s where /proc/uptime moved 1 s.
        let text = wire.frame(host.sample(), 1400, T0).unwrap();
        assert!(!text.contains("uptime"), "{text}");
        // A suspend: the monotonic clock ran 1 s, the uptime 60 s.
        host.uptime += 60;
        let text = wire.frame(host.sample(), SECOND, T0).unwrap();
        assert!(text.contains(r#""uptime":161"#), "{text}");
    }

    #[test]
    fn a_whole_sample_over_the_frame_limit_is_cut_and_patches_keep_to_the_cut() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::default(), RelayView::default(), Host::new());
        // 64 filesystems (within the caps) at mount paths of 1,500 bytes.
        host.disks = (0..64)
            .map(|i| (format!("/{i}{}", "m".repeat(1500)), 1 << 30))
            .collect();
        host.disks[40].0 = "/".into();
        let text = wire.frame(host.sample(), SECOND, T0).unwrap();
        assert!(text.len() <= MAX_WHOLE_FRAME, "{}", text.len());
        assert_eq!(relay.receive(&text), "metrics");
        let kept = relay.sample().disks;
        assert_eq!(kept.len(), 32);
        assert!(kept.iter().any(|disk| disk.mount == "/"));
        // The next samples patch what was sent, not the whole list again.
        for _ in 0..3 {
            host.step(&[(10, 10), (0, 0)]);
            let text = wire.frame(host.sample(), SECOND, T0).unwrap();
            assert_eq!(relay.receive(&text), "patch");
            assert!(text.len() < 1024, "{text}");
            assert_eq!(relay.sample().disks, kept);
        }
    }

    #[test]
    fn the_next_connection_starts_from_the_caps_the_last_one_cut_to() {
        let mut host = Host::new();
        host.disks = (0..64)
            .map(|i| (format!("/{i}{}", "m".repeat(1500)), 1 << 30))
            .collect();
        let mut first = LeanWire::default();
        first.frame(host.sample(), SECOND, T0).unwrap();
        let caps = first.caps();
        assert_eq!(caps.disks, 32);
        let mut next = LeanWire::new(false, caps);
        let text = next.frame(host.sample(), SECOND, T0).unwrap();
        let mut relay = RelayView::default();
        assert_eq!(relay.receive(&text), "metrics");
        assert_eq!(relay.sample().disks.len(), 32);
        assert_eq!(next.caps(), caps);
    }

    #[test]
    fn whole_only_sends_every_sample_whole() {
        let (mut wire, mut relay, mut host) =
            (LeanWire::new(true, CAPS), RelayView::default(), Host::new());
        for _ in 0..3 {
            assert_eq!(send(&mut wire, &mut relay, &host).0, "metrics");
            host.step(&[(10, 10), (0, 0)]);
        }
        let mut wire = LeanWire::default();
        send(&mut wire, &mut relay, &host);
        wire.forget();
        host.step(&[(10, 10), (0, 0)]);
        assert_eq!(send(&mut wire, &mut relay, &host).0, "metrics");
        host.step(&[(10, 10), (0, 0)]);
        assert_eq!(send(&mut wire, &mut relay, &host).0, "patch");
    }

    #[test]
    fn a_new_connection_starts_with_a_whole_sample() {
        let host = Host::new();
        let mut wire = LeanWire::default();
        wire.frame(host.sample(), SECOND, T0).unwrap();
        let text = LeanWire::default()
            .frame(host.sample(), SECOND, T0)
            .unwrap();
        assert!(text.starts_with(r#"{"type":"metrics""#), "{text}");
        assert!(text.contains(r#""timestamp":"#), "{text}");
    }
}
