//! `network`: per-interface byte counters from `/proc/net/dev`.
//!
//! Hand-parsed rather than with procfs-core's `InterfaceDeviceStatus`, which
//! splits on whitespace: 2.6-era kernels print `"%6s:%8lu"`, so a receive
//! counter of 100 MB or more touches the colon (`eth0:1483920573`) and the
//! whole file fails to parse. It also returns a `HashMap`, losing the
//! kernel's interface order.

use super::{Line, Paths, Previous, Text, millis, rate, read_bytes};
use crate::protocol::{Interface, Network};
use std::path::PathBuf;
use std::time::Instant;

/// How to tell which interfaces' bytes add up to the host's traffic.
enum Counted {
    /// Exactly these, as the operator named them.
    Named(Vec<String>),
    /// Those backed by a device (`sysfs/class/net/NAME/device` exists),
    /// except the conduit of a DSA switch (it has `dsa/`): on OpenWrt 21.02
    /// and later its bytes are the switch ports' (`lan1`, `wan`) again.
    WithDevice(PathBuf),
    /// No readable sysfs (a chroot, a fixture tree): every interface but
    /// `lo`. Bridged bytes may count twice, but a busy host never reads as
    /// idle; name the interfaces to do better.
    All,
}

impl Counted {
    fn contains(&self, name: &str) -> bool {
        match self {
            Counted::Named(names) => names.iter().any(|n| n == name),
            Counted::WithDevice(class_net) => {
                let interface = class_net.join(name);
                interface.join("device").exists() && !interface.join("dsa").exists()
            }
            Counted::All => name != "lo",
        }
    }
}

/// Bytes received and sent by one interface, and whether it is counted.
struct Counters {
    counted: bool,
    rx: u64,
    tx: u64,
}

pub(crate) struct NetworkCollector {
    /// `procfs/net/dev`.
    dev: PathBuf,
    counted: Counted,
    interfaces: Previous<Counters>,
    at: Instant,
}

impl NetworkCollector {
    /// Takes the baseline reading.
    pub(super) fn new(
        paths: &Paths,
        buf: &mut Vec<u8>,
        counted_interfaces: Option<Vec<String>>,
    ) -> NetworkCollector {
        let class_net = paths.sysfs.join("class/net");
        let counted = match counted_interfaces {
            Some(names) => Counted::Named(names),
            None if class_net.read_dir().is_ok() => Counted::WithDevice(class_net),
            None => {
                log::debug!(
                    "{} unreadable: counting every interface",
                    class_net.display()
                );
                Counted::All
            }
        };
        let mut collector = NetworkCollector {
            dev: paths.procfs.join("net/dev"),
            counted,
            interfaces: Previous::new(),
            at: Instant::now(),
        };
        collector.sample(buf);
        collector
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>) -> Option<Network> {
        self.sample_at(buf, Instant::now())
    }

    /// A reading taken at `now`: rates over the time since the last one.
    fn sample_at(&mut self, buf: &mut Vec<u8>, now: Instant) -> Option<Network> {
        let text = read_bytes(&self.dev, buf)?;
        let elapsed_ms = millis(now.saturating_duration_since(self.at));
        self.at = now;
        Some(self.account(text, elapsed_ms))
    }

    /// A collector of text handed to [`NetworkCollector::account`] that
    /// counts every interface but `lo` and reads no file (for fuzzing).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn detached() -> NetworkCollector {
        NetworkCollector {
            dev: PathBuf::new(),
            counted: Counted::All,
            interfaces: Previous::new(),
            at: Instant::now(),
        }
    }

    /// Takes in one reading of `net/dev`, `elapsed_ms` after the previous one.
    pub(crate) fn account(&mut self, text: &[u8], elapsed_ms: u64) -> Network {
        let mut network = Network::default();
        let mut listed = 0;
        for (name, rx, tx) in parse(text) {
            let counted = &self.counted;
            let (counters, seen) = self.interfaces.entry(listed, name, || Counters {
                counted: counted.contains(name),
                rx,
                tx,
            });
            listed += 1;
            let (rx_rate, tx_rate) = if seen {
                (
                    rate(rx, counters.rx, elapsed_ms),
                    rate(tx, counters.tx, elapsed_ms),
                )
            } else {
                (0.0, 0.0)
            };
            (counters.rx, counters.tx) = (rx, tx);
            if counters.counted {
                network.rx += rx_rate;
                network.tx += tx_rate;
                network.rx_total = network.rx_total.saturating_add(rx);
                network.tx_total = network.tx_total.saturating_add(tx);
            }
            if name != "lo" {
                network.interfaces.push(Interface {
                    name: name.to_owned(),
                    counted: counters.counted,
                    rx: rx_rate,
                    tx: tx_rate,
                    rx_total: rx,
                    tx_total: tx,
                });
            }
        }
        self.interfaces.forget_after(listed);
        network
    }
}

/// Name, received and transmitted bytes of each interface line.
pub(super) fn parse(text: &[u8]) -> impl Iterator<Item = (&str, u64, u64)> {
    let mut text = Text::new(text);
    let mut headers = 2;
    std::iter::from_fn(move || {
        loop {
            let mut line = text.line()?;
            if headers > 0 {
                headers -= 1;
                continue;
            }
            match parse_line(&mut line) {
                Some(parsed) => return Some(parsed),
                None => log::debug!("net/dev: unparsable line \"{}\"", line.whole()),
            }
        }
    })
}

fn parse_line<'a>(line: &mut Line<'_, 'a>) -> Option<(&'a str, u64, u64)> {
    // Interface names cannot hold a colon (dev_valid_name).
    let name = std::str::from_utf8(line.until(b':')?.trim_ascii()).ok()?;
    let rx = line.number()?;
    line.skip(7)?;
    let tx = line.number()?;
    Some((name, rx, tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_in_kernel_order() {
        let text = fixture!("x86_64-linux3x-laptop-node-exporter-2014/proc/net/dev");
        let names: Vec<_> = parse(text.as_bytes()).map(|(name, _, _)| name).collect();
        assert_eq!(
            names,
            ["tun0", "veth4B09XN", "lo", "lxcbr0", "wlan0", "docker0"]
        );
        assert_eq!(
            parse(text.as_bytes()).nth(4),
            Some(("wlan0", 10437182923, 2851649360))
        );
    }

    // Linux 2.6 printed "%6s:%8lu" (net/core/dev.c): no space after the
    // colon once rx_bytes reaches 10^8. Synthesized in that format for the
    // D-Link DWR-956, whose vendor kernel is 2.6.
    #[test]
    fn linux_2_6_counters_touch_the_colon() {
        let text = fixture!("lantiq-ar10-dlink-dwr956-linux2.6/proc/net/dev");
        assert!(text.contains("eth0:1483920573"));
        assert_eq!(
            parse(text.as_bytes()).nth(1),
            Some(("eth0", 1483920573, 402188311))
        );
        assert_eq!(parse(text.as_bytes()).count(), 4);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = "header\nheader\n  eth0: 1 2 3\n\u{1F600}\n  eth1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  eth2: x 2 3 4 5 6 7 8 9\n";
        assert_eq!(parse(text.as_bytes()).collect::<Vec<_>>(), [("eth1", 1, 9)]);
        assert_eq!(parse(b"").count(), 0);
    }

    // OpenWrt router (synthesized net/dev and sysfs): only eth0 and the two
    // radios have a device; the VLANs, br-lan and pppoe-wan carry the same
    // bytes again.
    #[test]
    fn counted_interfaces_are_those_with_a_device() {
        let paths = crate::agent::collect::fixture_paths("openwrt-router-composite");
        let mut buf = Vec::new();
        let network = NetworkCollector::new(&paths, &mut buf, None)
            .sample(&mut buf)
            .unwrap();
        assert_eq!(network.rx_total, 9184471502 + 612508211 + 1027991190);
        assert_eq!(network.tx_total, 3871150826 + 1398116204 + 2455108790);
        assert_eq!(network.interfaces.len(), 7);
        assert!(network.interfaces.iter().all(|i| i.name != "lo"));

        let named = Some(vec!["pppoe-wan".to_owned()]);
        let network = NetworkCollector::new(&paths, &mut buf, named)
            .sample(&mut buf)
            .unwrap();
        assert_eq!(
            (network.rx_total, network.tx_total),
            (7194711030, 1851107133)
        );
    }

    #[test]
    fn rates_and_counters_that_go_backwards() {
        let dir = std::env::temp_dir().join(format!("vstats-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths {
            procfs: dir.clone(),
            sysfs: dir.join("no-sys"),
            ..Paths::default()
        };
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let write = |lines: &[(&str, u64)]| {
            let mut text = String::from("h\nh\n");
            for (name, bytes) in lines {
                text += &format!("{name}: {bytes} 0 0 0 0 0 0 0 {bytes} 0 0 0 0 0 0 0\n");
            }
            std::fs::write(dir.join("net/dev"), text).unwrap();
        };
        write(&[("lo", 0), ("eth0", 1000), ("ppp0", 5000)]);
        let mut buf = Vec::new();
        let mut collector = NetworkCollector::new(&paths, &mut buf, None);
        // ppp0 reconnected (counter reset), wlan0 appeared.
        write(&[("lo", 999), ("eth0", 3000), ("ppp0", 10), ("wlan0", 7777)]);
        // Exactly 2 s later, by the collector's clock: no real time counts.
        let later = collector.at + std::time::Duration::from_secs(2);
        let network = collector.sample_at(&mut buf, later).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let rates: Vec<_> = network
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.rx))
            .collect();
        assert_eq!(rates, [("eth0", 1000.0), ("ppp0", 0.0), ("wlan0", 0.0)]);
        assert_eq!(network.rx, 1000.0);
        assert_eq!(network.rx_total, 3000 + 10 + 7777);
    }

    #[test]
    fn rates_are_whole_bytes_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            procfs: dir.path().to_owned(),
            sysfs: dir.path().join("no-sys"),
            ..Paths::default()
        };
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        let write = |rx: u64, tx: u64| {
            let text = format!("h\nh\neth0: {rx} 0 0 0 0 0 0 0 {tx} 0 0 0 0 0 0 0\n");
            std::fs::write(dir.path().join("net/dev"), text).unwrap();
        };
        write(0, 0);
        let mut buf = Vec::new();
        let mut collector = NetworkCollector::new(&paths, &mut buf, None);
        write(1000, 2000);
        let later = collector.at + std::time::Duration::from_secs(3);
        let network = collector.sample_at(&mut buf, later).unwrap();
        let eth0 = &network.interfaces[0];
        assert_eq!((eth0.rx, eth0.tx), (333.0, 667.0));
        assert_eq!((network.rx, network.tx), (333.0, 667.0));
    }

    // A DSA router (OpenWrt 21.02+, e.g. an MT7621): eth0 is the switch's
    // conduit and carries every port's traffic; the ports and the radio
    // count, eth0 and the bridge do not.
    #[test]
    fn a_dsa_conduit_is_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let class_net = dir.path().join("sys/class/net");
        for (name, has_device, is_conduit) in [
            ("eth0", true, true),
            ("lan1", true, false),
            ("wan", true, false),
            ("phy0-ap0", true, false),
            ("br-lan", false, false),
        ] {
            std::fs::create_dir_all(class_net.join(name)).unwrap();
            if has_device {
                std::fs::create_dir_all(class_net.join(name).join("device")).unwrap();
            }
            if is_conduit {
                std::fs::create_dir_all(class_net.join(name).join("dsa")).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        let mut text = String::from("h\nh\n");
        for (name, bytes) in [
            ("eth0", 1100),
            ("lan1", 300),
            ("wan", 700),
            ("phy0-ap0", 50),
            ("br-lan", 350),
        ] {
            text += &format!("{name}: {bytes} 0 0 0 0 0 0 0 {bytes} 0 0 0 0 0 0 0\n");
        }
        std::fs::write(dir.path().join("proc/net/dev"), text).unwrap();
        let paths = Paths::under(dir.path());
        let mut buf = Vec::new();
        let network = NetworkCollector::new(&paths, &mut buf, None)
            .sample(&mut buf)
            .unwrap();
        assert_eq!(network.rx_total, 300 + 700 + 50);
        assert_eq!(network.interfaces.len(), 5);
    }
}
