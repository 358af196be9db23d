//! `disk_io`: read and write rates over whole disks, from `/proc/diskstats`.
//!
//! Hand-parsed rather than with procfs-core's `DiskStat::from_line`, which
//! parses all seventeen counters and allocates the name on every line,
//! every second (some 3,000 instructions a line, and snap loop devices alone
//! can be dozens of lines); this needs three fields.

use super::{Paths, Previous, rate, read_file};
use crate::protocol::DiskIo;
use std::path::PathBuf;
use std::time::Instant;

/// diskstats counts 512-byte sectors whatever the device's sector size.
const SECTOR: u64 = 512;

/// Bytes read and written since boot by one device, and whether it is a
/// whole disk.
struct Device {
    whole: bool,
    read: u64,
    written: u64,
}

pub(super) struct DiskIoCollector {
    /// `sysfs/block`, when there is one to ask which devices are disks.
    sys_block: Option<PathBuf>,
    devices: Previous<Device>,
    at: Instant,
}

impl DiskIoCollector {
    /// Takes the baseline reading.
    pub(super) fn new(paths: &Paths, buf: &mut String) -> DiskIoCollector {
        let sys_block = Some(paths.sysfs.join("block")).filter(|dir| dir.is_dir());
        let mut collector = DiskIoCollector {
            sys_block,
            devices: Previous::new(),
            at: Instant::now(),
        };
        collector.sample(paths, buf);
        collector
    }

    pub(super) fn sample(&mut self, paths: &Paths, buf: &mut String) -> Option<DiskIo> {
        let text = read_file(&paths.procfs.join("diskstats"), buf)?;
        let secs = self.at.elapsed().as_secs_f64();
        self.at = Instant::now();
        let mut io = DiskIo::default();
        let mut listed = 0;
        for (name, sectors_read, sectors_written) in parse(text) {
            let (read, written) = (
                sectors_read.saturating_mul(SECTOR),
                sectors_written.saturating_mul(SECTOR),
            );
            let sys_block = self.sys_block.as_ref();
            let (device, seen) = self.devices.entry(listed, name, || Device {
                whole: is_whole_disk(name, sys_block.map(|dir| dir.join(name).exists())),
                read,
                written,
            });
            listed += 1;
            if seen && device.whole {
                io.read_rate += rate(read, device.read, secs);
                io.write_rate += rate(written, device.written, secs);
            }
            (device.read, device.written) = (read, written);
        }
        self.devices.forget_after(listed);
        Some(io)
    }
}

/// Name, sectors read and sectors written of each device line; the
/// 14-, 18- and 20-field formats all start the same way.
pub(super) fn parse(text: &str) -> impl Iterator<Item = (&str, u64, u64)> {
    text.lines().filter_map(|line| {
        let parsed = parse_line(line);
        if parsed.is_none() {
            log::debug!("diskstats: unparsable line {line:?}");
        }
        parsed
    })
}

fn parse_line(line: &str) -> Option<(&str, u64, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let name = fields.nth(2)?;
    let sectors_read = fields.nth(2)?.parse().ok()?;
    let sectors_written = fields.nth(3)?.parse().ok()?;
    Some((name, sectors_read, sectors_written))
}

/// A disk whose I/O counts: one with `/sys/block/NAME` (partitions live
/// below their disk there), judged by name when there is no sysfs. RAM
/// disks, loop devices and zram are not storage, and device-mapper and md
/// devices are stacked on disks already counted. NVMe multipath hidden
/// nodes (`nvme0c0n1`) repeat the I/O of their `nvme0n1`.
pub(super) fn is_whole_disk(name: &str, in_sys_block: Option<bool>) -> bool {
    const NOT_DISKS: [&str; 5] = ["ram", "loop", "zram", "dm-", "md"];
    if NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) || is_nvme_path(name) {
        return false;
    }
    in_sys_block.unwrap_or_else(|| !looks_like_partition(name))
}

/// `nvme<subsystem>c<controller>n<namespace>`.
fn is_nvme_path(name: &str) -> bool {
    fn after_number(s: &str, tag: char) -> Option<&str> {
        let rest = s.trim_start_matches(|c: char| c.is_ascii_digit());
        rest.strip_prefix(tag).filter(|_| rest.len() < s.len())
    }
    name.strip_prefix("nvme")
        .and_then(|rest| after_number(rest, 'c'))
        .and_then(|rest| after_number(rest, 'n'))
        .is_some_and(|namespace| {
            !namespace.is_empty() && namespace.bytes().all(|b| b.is_ascii_digit())
        })
}

/// `sda1`, `vdb2`, `nvme0n1p1`, `mmcblk0p1`; not `sda`, `nvme0n1`,
/// `mmcblk0`, `sr0` or `mtdblock3`.
fn looks_like_partition(name: &str) -> bool {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() {
        return false;
    }
    match base.strip_suffix('p') {
        Some(disk) => disk.ends_with(|c: char| c.is_ascii_digit()),
        None => ["sd", "hd", "vd", "xvd"]
            .iter()
            .any(|prefix| base.starts_with(prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole_disks(text: &str) -> Vec<&str> {
        parse(text)
            .map(|(name, _, _)| name)
            .filter(|name| is_whole_disk(name, None))
            .collect()
    }

    // 14 fields (kernels before 4.18): the 2014 node_exporter laptop, with
    // dm-crypt/LVM on sda4 and an SD card reader.
    #[test]
    fn diskstats_14_fields() {
        let text = fixture!("x86_64-linux3x-laptop-node-exporter-2014/proc/diskstats");
        assert_eq!(whole_disks(text), ["sda", "mmcblk0"]);
        assert_eq!(parse(text).nth(24), Some(("sda", 1003346126, 505697032)));
    }

    // 18 fields (4.18 added discards): OpenShift VM with a CD drive.
    #[test]
    fn diskstats_18_fields() {
        let text = fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/diskstats");
        assert_eq!(whole_disks(text), ["sr0", "sda"]);
        assert_eq!(parse(text).nth(1), Some(("sda", 856916, 2253152)));
    }

    // 20 fields (5.5 added flushes).
    #[test]
    fn diskstats_20_fields() {
        let text = " 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n";
        assert_eq!(parse(text).next(), Some(("nvme0n1", 3, 7)));
    }

    // netdata#9560, Samsung PM1733 with native NVMe multipath: the hidden
    // per-controller nodes (major 0) carry the I/O that their nvme0n1 shows.
    #[test]
    fn nvme_hidden_multipath_nodes_are_skipped() {
        let text = fixture!("x86_64-server-4x-nvme-pm1733-netdata9560/proc/diskstats");
        assert_eq!(
            whole_disks(text),
            ["nvme1n1", "nvme0n1", "nvme3n1", "nvme2n1"]
        );
        assert!(is_nvme_path("nvme10c12n3"));
        for name in ["nvme0n1", "nvme0n1p1", "nvmec0n1", "nvme0c0n", "nvme0c0n1x"] {
            assert!(!is_nvme_path(name), "{name}");
        }
    }

    #[test]
    fn sysfs_decides_when_present() {
        assert!(is_whole_disk("mmcblk0", Some(true)));
        assert!(!is_whole_disk("mmcblk0p1", Some(false)));
        assert!(!is_whole_disk("sda", Some(false)));
        assert!(!is_whole_disk("dm-0", Some(true)));
        assert!(!is_whole_disk("zram0", Some(true)));
    }

    #[test]
    fn partition_names() {
        for name in [
            "sda1",
            "sdaa12",
            "vdb2",
            "xvda1",
            "hda3",
            "nvme0n1p1",
            "mmcblk0p2",
            "mmcblk1p10",
        ] {
            assert!(looks_like_partition(name), "{name}");
        }
        for name in [
            "sda",
            "nvme0n1",
            "mmcblk0",
            "sr0",
            "mtdblock3",
            "ubiblock0_1",
            "mmcblk0boot0",
            "1p",
        ] {
            assert!(!looks_like_partition(name), "{name}");
        }
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text =
            "   8       0 sda 1 2 3\n\u{1F600}\n\n   8       0 sdb 1 2 3 4 5 6 7 8 9 10 11\n";
        assert_eq!(whole_disks(text), ["sdb"]);
    }

    #[test]
    fn rates_per_whole_disk() {
        let dir = std::env::temp_dir().join(format!("vstats-diskio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths {
            procfs: dir.clone(),
            sysfs: dir.join("no-sys"),
            ..Paths::default()
        };
        let write = |sda: u64, sda1: u64, sdb: u64| {
            let line = |name: &str, sectors: u64| {
                format!("8 0 {name} 0 0 {sectors} 0 0 0 {sectors} 0 0 0 0\n")
            };
            let text = [line("sda", sda), line("sda1", sda1), line("sdb", sdb)].concat();
            std::fs::write(dir.join("diskstats"), text).unwrap();
        };
        write(1000, 1000, 1000);
        let mut buf = String::new();
        let mut collector = DiskIoCollector::new(&paths, &mut buf);
        // sdb's counter went backwards (device re-created): 0, not huge.
        write(3000, 3000, 10);
        collector.at -= std::time::Duration::from_secs(2);
        let io = collector.sample(&paths, &mut buf).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            (io.read_rate - 512_000.0).abs() < 1000.0,
            "{}",
            io.read_rate
        );
        assert_eq!(io.read_rate, io.write_rate);
    }
}
