//! Keeps a sample within the protocol's limits (docs/PROTOCOL.md,
//! "Limits"): a relay refuses a frame over 64 KiB, and a sample it
//! rebuilds from patches is held to the same size. A host with hundreds of
//! interfaces (a container host's veths) or datasets (a Proxmox host's ZFS
//! volumes) would otherwise send a sample that is closed on every connect,
//! forever. So long lists are cut to a length that keeps the whole well
//! within the limit, the entries that matter kept first. Pure: the caller
//! logs what was left out.

use crate::protocol::{MAX_SAMPLE_ENTRIES, Metrics};

/// How many entries each long list of a sample may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub interfaces: usize,
    pub disks: usize,
    pub temperatures: usize,
}

/// What a sample of real hosts stays far within, and a list past it is
/// cut to: 256 interfaces are some 22 KB, 64 disks (their paths at some
/// 60 bytes) some 12 KB, 64 sensors 3 KB; with 4,096 per-core figures of
/// 5 bytes, the largest list the protocol allows, the whole stays under
/// 64 KiB. A sample that does not (long mount paths, say) has its caps
/// halved by the sender (see [`Caps::halved`]).
pub const CAPS: Caps = Caps {
    interfaces: 256,
    disks: 64,
    temperatures: 64,
};

impl Caps {
    /// Half of each cap (at least one entry): the next step when a sample
    /// cut to these caps is still too large.
    pub fn halved(self) -> Caps {
        Caps {
            interfaces: (self.interfaces / 2).max(1),
            disks: (self.disks / 2).max(1),
            temperatures: (self.temperatures / 2).max(1),
        }
    }
}

/// How many entries of each list [`fit`] left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub interfaces: usize,
    pub disks: usize,
    pub temperatures: usize,
}

impl Trimmed {
    pub fn any(&self) -> bool {
        *self != Trimmed::default()
    }
}

/// Cuts the sample's lists to `caps`. Interfaces counted in the network
/// totals are kept before the others; the disk mounted at `/` (which
/// history and alerts watch) before the rest; otherwise the first ones,
/// in the order the kernel lists them. A counted interface left out (only
/// when more than the cap are counted) leaves the totals too, so that
/// they remain the sums over the listed interfaces, as a relay derives
/// them from patches.
pub fn fit(sample: &mut Metrics, caps: &Caps) -> Trimmed {
    let mut trimmed = Trimmed::default();
    if let Some(network) = &mut sample.network
        && network.interfaces.len() > caps.interfaces
    {
        let before = network.interfaces.len();
        let counted = network.interfaces.iter().filter(|i| i.counted).count();
        let (mut counted_room, mut other_room) =
            (caps.interfaces, caps.interfaces.saturating_sub(counted));
        network.interfaces.retain(|interface| {
            let room = if interface.counted {
                &mut counted_room
            } else {
                &mut other_room
            };
            let keep = *room > 0;
            *room = room.saturating_sub(1);
            keep
        });
        if counted > caps.interfaces {
            network.sum_counted();
        }
        trimmed.interfaces = before - network.interfaces.len();
    }
    if sample.disks.len() > caps.disks {
        let before = sample.disks.len();
        let root = sample.disks.iter().position(|disk| disk.mount == "/");
        let mut room = caps.disks.saturating_sub(usize::from(root.is_some()));
        let mut index = 0;
        sample.disks.retain(|_| {
            let is_root = Some(index) == root;
            index += 1;
            let keep = is_root || room > 0;
            if keep && !is_root {
                room -= 1;
            }
            keep
        });
        trimmed.disks = before - sample.disks.len();
    }
    if sample.temperatures.len() > caps.temperatures {
        trimmed.temperatures = sample.temperatures.len() - caps.temperatures;
        sample.temperatures.truncate(caps.temperatures);
    }
    if let Some(cpu) = &mut sample.cpu {
        cpu.per_core.truncate(MAX_SAMPLE_ENTRIES);
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Disk, Interface, Network, Temperature, to_json};

    fn interface(name: &str, counted: bool, total: u64) -> Interface {
        Interface {
            name: name.into(),
            counted,
            rx: 1.0,
            tx: 2.0,
            rx_total: total,
            tx_total: total,
        }
    }

    fn disk(mount: &str) -> Disk {
        Disk {
            name: format!("rpool/data{mount}"),
            mount: mount.into(),
            fs_type: "zfs".into(),
            total: 1 << 40,
            used: 1 << 30,
            usage_percent: 0.1,
        }
    }

    /// A container host: 2 NICs among 900 veths and bridges, 300 ZFS
    /// datasets with `/` among the last, 100 sensors.
    fn crowded() -> Metrics {
        let mut interfaces: Vec<Interface> = (0..900)
            .map(|i| interface(&format!("veth{i:08x}"), false, i))
            .collect();
        interfaces[3] = interface("eth0", true, 1000);
        interfaces[700] = interface("eth1", true, 2000);
        let mut disks: Vec<Disk> = (0..300)
            .map(|i| disk(&format!("/rpool/data/subvol-{i}-disk-0")))
            .collect();
        disks[250] = disk("/");
        Metrics {
            network: Some(Network {
                rx: 2.0,
                tx: 4.0,
                rx_total: 3000,
                tx_total: 3000,
                interfaces,
            }),
            disks,
            temperatures: (0..100)
                .map(|i| Temperature {
                    name: format!("sensor {i}"),
                    celsius: 40.0,
                })
                .collect(),
            ..Metrics::default()
        }
    }

    #[test]
    fn a_crowded_host_keeps_its_counted_interfaces_and_root_disk_within_64_kib() {
        let mut sample = crowded();
        let before = to_json(&sample).unwrap().len();
        assert!(before > 64 * 1024, "{before}");
        let trimmed = fit(&mut sample, &CAPS);
        assert_eq!(
            trimmed,
            Trimmed {
                interfaces: 900 - 256,
                disks: 300 - 64,
                temperatures: 100 - 64
            }
        );
        let network = sample.network.as_ref().unwrap();
        let counted: Vec<&str> = network
            .interfaces
            .iter()
            .filter(|i| i.counted)
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(counted, ["eth0", "eth1"], "kept, in kernel order");
        assert_eq!(network.interfaces[0].name, "veth00000000");
        assert_eq!((network.rx_total, network.rx), (3000, 2.0), "totals kept");
        assert_eq!(sample.disks.len(), 64);
        assert!(sample.disks.iter().any(|d| d.mount == "/"));
        assert_eq!(sample.disks[0].mount, "/rpool/data/subvol-0-disk-0");
        let after = to_json(&sample).unwrap().len();
        assert!(after < 48 * 1024, "{after}");
    }

    #[test]
    fn counted_interfaces_past_the_cap_leave_the_totals_too() {
        let mut sample = Metrics {
            network: Some(Network {
                rx_total: 999,
                interfaces: (0..10).map(|i| interface("vf", true, 100 + i)).collect(),
                ..Network::default()
            }),
            ..Metrics::default()
        };
        let caps = Caps {
            interfaces: 4,
            ..CAPS
        };
        assert_eq!(fit(&mut sample, &caps).interfaces, 6);
        let network = sample.network.unwrap();
        assert_eq!(network.interfaces.len(), 4);
        assert_eq!(network.rx_total, 100 + 101 + 102 + 103);
        assert_eq!((network.rx, network.tx), (4.0, 8.0));
    }

    #[test]
    fn a_sample_within_the_caps_is_left_as_it_is() {
        let mut sample = crowded();
        sample.network.as_mut().unwrap().interfaces.truncate(256);
        sample.disks.truncate(64);
        sample.temperatures.truncate(64);
        let before = sample.clone();
        assert!(!fit(&mut sample, &CAPS).any());
        assert_eq!(sample, before);
    }

    #[test]
    fn the_root_disk_is_kept_wherever_it_is_and_halving_never_reaches_zero() {
        for root in [0, 5, 299] {
            let mut sample = Metrics {
                disks: (0..300).map(|i| disk(&format!("/d{i}"))).collect(),
                ..Metrics::default()
            };
            sample.disks[root] = disk("/");
            let caps = Caps { disks: 3, ..CAPS };
            fit(&mut sample, &caps);
            assert_eq!(sample.disks.len(), 3, "root at {root}");
            assert!(
                sample.disks.iter().any(|d| d.mount == "/"),
                "root at {root}"
            );
        }
        let mut caps = CAPS;
        for _ in 0..20 {
            caps = caps.halved();
        }
        assert_eq!(
            caps,
            Caps {
                interfaces: 1,
                disks: 1,
                temperatures: 1
            }
        );
    }
}
