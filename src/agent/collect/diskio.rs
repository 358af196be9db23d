//! `disk_io`: read and write rates over whole disks, from `/proc/diskstats`.
//!
//! Hand-parsed rather than with procfs-core's `DiskStat::from_line`, which
//! parses all seventeen counters and allocates the name on every line,
//! every second (some 3,000 instructions a line, and snap loop devices alone
//! can be dozens of lines); this needs three fields.
//!
//! Each disk's I/O is counted once. Partitions are not counted (their disk
//! is), nor RAM, loop and zram devices, nor devices stacked on disks that
//! are counted already (device-mapper, md, ZFS zvols).
//!
//! A namespace reached through native NVMe multipath is listed several
//! times: once per path (`nvme0c0n1`, `nvme0c1n1`: namespace 1 of
//! subsystem 0 through controllers 0 and 1, hidden in `/sys/block`), and
//! once as their head `nvme0n1`, the device that is used. The paths always
//! count the I/O each carried. Before Linux 6.2 the head counts nothing
//! (netdata#9560: every head all zeros, the paths busy); from 6.2 it counts
//! the same I/O again when its `queue/iostats` is on. So the paths are
//! counted, and a namespace only when no path of it is listed, as on a
//! single-controller drive, which has no paths.

use super::{Line, Paths, Previous, Text, millis, rate, read_bytes};
use crate::protocol::DiskIo;
use std::path::PathBuf;
use std::time::Instant;

/// diskstats counts 512-byte sectors whatever the device's sector size.
const SECTOR: u64 = 512;

/// Bytes read and written since boot by one device, and how they count.
struct Device {
    role: Role,
    read: u64,
    written: u64,
    /// Bytes per second read and written over the last interval.
    rates: (f64, f64),
}

/// How a device's I/O enters `disk_io`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Role {
    /// A whole disk: counted.
    Disk,
    /// One path of an NVMe multipath namespace (`nvme0c0n1`): counted.
    NvmePath,
    /// An NVMe namespace (`nvme0n1`): counted unless `has_paths`, when it is
    /// the multipath head of paths that are listed, and counted.
    NvmeNamespace { has_paths: bool },
    /// A partition, or not storage of its own: not counted.
    Skip,
}

impl Role {
    fn counts(self) -> bool {
        matches!(
            self,
            Role::Disk | Role::NvmePath | Role::NvmeNamespace { has_paths: false }
        )
    }
}

pub(crate) struct DiskIoCollector {
    /// `procfs/diskstats`.
    diskstats: PathBuf,
    /// `sysfs/block`, when there is one to ask which devices are disks.
    sys_block: Option<PathBuf>,
    devices: Previous<Device>,
    at: Instant,
}

impl DiskIoCollector {
    /// Takes the baseline reading.
    pub(super) fn new(paths: &Paths, buf: &mut Vec<u8>) -> DiskIoCollector {
        let sys_block = Some(paths.sysfs.join("block")).filter(|dir| dir.is_dir());
        let mut collector = DiskIoCollector {
            diskstats: paths.procfs.join("diskstats"),
            sys_block,
            devices: Previous::new(),
            at: Instant::now(),
        };
        collector.sample(buf);
        collector
    }

    /// A collector of text handed to [`DiskIoCollector::account`], that
    /// reads no file and asks no sysfs, as on a host without one (for tests
    /// and fuzzing).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn detached() -> DiskIoCollector {
        DiskIoCollector {
            diskstats: PathBuf::new(),
            sys_block: None,
            devices: Previous::new(),
            at: Instant::now(),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>) -> Option<DiskIo> {
        let text = read_bytes(&self.diskstats, buf)?;
        let elapsed_ms = millis(self.at.elapsed());
        self.at = Instant::now();
        Some(self.account(text, elapsed_ms))
    }

    /// Takes in one reading of diskstats, `elapsed_ms` after the previous one.
    pub(crate) fn account(&mut self, text: &[u8], elapsed_ms: u64) -> DiskIo {
        let mut listed = 0;
        let mut appeared = false;
        let mut text = Text::new(text);
        while let Some(mut line) = text.line() {
            let Some(name) = line.nth(2) else {
                log::debug!("diskstats: unparsable line \"{}\"", line.whole());
                continue;
            };
            // A device that does not count, listed in the same place last
            // time, keeps its place without its counters being read:
            // partitions and loop devices (dozens of them with snaps) can
            // be most of the lines.
            let unchanged_skip = self
                .devices
                .entries
                .get(listed)
                .is_some_and(|(known, device)| {
                    device.role == Role::Skip && known.as_bytes() == name
                });
            if unchanged_skip {
                listed += 1;
                continue;
            }
            let parsed = std::str::from_utf8(name).ok().zip(sectors(&mut line));
            let Some((name, (sectors_read, sectors_written))) = parsed else {
                log::debug!("diskstats: unparsable line \"{}\"", line.whole());
                continue;
            };
            let (read, written) = (
                sectors_read.saturating_mul(SECTOR),
                sectors_written.saturating_mul(SECTOR),
            );
            let sys_block = self.sys_block.as_ref();
            let (device, seen) = self.devices.entry(listed, name, || Device {
                role: role(name, sys_block.map(|dir| dir.join(name).exists())),
                read,
                written,
                rates: (0.0, 0.0),
            });
            listed += 1;
            appeared |= !seen;
            device.rates = match device.role {
                Role::Skip => (0.0, 0.0),
                _ if !seen => (0.0, 0.0),
                _ => (
                    rate(read, device.read, elapsed_ms),
                    rate(written, device.written, elapsed_ms),
                ),
            };
            (device.read, device.written) = (read, written);
        }
        // Which namespaces head listed paths changes only when devices come
        // or go, so it is not worked out again every sample.
        let forgot = self.devices.forget_after(listed);
        if appeared || forgot {
            mark_multipath_heads(&mut self.devices.entries);
        }
        let mut io = DiskIo::default();
        for (_, device) in &self.devices.entries {
            if device.role.counts() {
                io.read_rate += device.rates.0;
                io.write_rate += device.rates.1;
            }
        }
        io
    }
}

/// Marks each NVMe namespace of which a path is listed as well.
fn mark_multipath_heads(devices: &mut [(String, Device)]) {
    for index in 0..devices.len() {
        let (name, device) = &devices[index];
        let (Role::NvmeNamespace { .. }, Some(head)) = (device.role, NvmeName::parse(name)) else {
            continue;
        };
        let has_paths = devices.iter().any(|(name, device)| {
            device.role == Role::NvmePath
                && NvmeName::parse(name).is_some_and(|path| path.namespace_of(&head))
        });
        devices[index].1.role = Role::NvmeNamespace { has_paths };
    }
}

/// Name, sectors read and sectors written of each device line that has
/// them.
#[cfg(test)]
fn parse(text: &[u8]) -> impl Iterator<Item = (&str, u64, u64)> {
    let mut text = Text::new(text);
    std::iter::from_fn(move || {
        loop {
            let mut line = text.line()?;
            let name = line.nth(2).and_then(|name| std::str::from_utf8(name).ok());
            if let Some((name, (read, written))) = name.zip(sectors(&mut line)) {
                return Some((name, read, written));
            }
        }
    })
}

/// The sectors read and written, from the fields after the device's name;
/// the 14-, 18- and 20-field formats all start the same way.
fn sectors(fields: &mut Line) -> Option<(u64, u64)> {
    fields.skip(2)?;
    let read = fields.number()?;
    fields.skip(3)?;
    let written = fields.number()?;
    Some((read, written))
}

/// How a device's I/O counts, by name and by whether `/sys/block/NAME`
/// exists (partitions live below their disk there); by name alone when there
/// is no sysfs. RAM disks, loop devices and zram are not storage;
/// device-mapper and md devices, and ZFS zvols (`zd0`, `zd16`: a Proxmox
/// VM's disk), are stacked on disks already counted.
pub(super) fn role(name: &str, in_sys_block: Option<bool>) -> Role {
    const NOT_DISKS: [&str; 6] = ["ram", "loop", "zram", "dm-", "md", "zd"];
    if NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) {
        return Role::Skip;
    }
    let nvme = NvmeName::parse(name);
    if nvme.as_ref().is_some_and(|nvme| nvme.controller.is_some()) {
        // Hidden, but listed in /sys/block too.
        return Role::NvmePath;
    }
    if !in_sys_block.unwrap_or_else(|| !looks_like_partition(name)) {
        return Role::Skip;
    }
    match nvme {
        Some(_) => Role::NvmeNamespace { has_paths: false },
        None => Role::Disk,
    }
}

/// The numbers in an NVMe namespace's name, `nvme<subsystem>n<namespace>`,
/// or in one of its multipath paths', `nvme<subsystem>c<controller>n<namespace>`
/// (the kernel's `nvme%dn%d` and `nvme%dc%dn%d`).
#[derive(Debug, PartialEq)]
struct NvmeName<'a> {
    subsystem: &'a str,
    controller: Option<&'a str>,
    namespace: &'a str,
}

impl<'a> NvmeName<'a> {
    fn parse(name: &'a str) -> Option<NvmeName<'a>> {
        fn number(s: &str) -> Option<(&str, &str)> {
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            Some(s.split_at(end)).filter(|(digits, _)| !digits.is_empty())
        }
        let (subsystem, rest) = number(name.strip_prefix("nvme")?)?;
        let (controller, rest) = match rest.strip_prefix('c') {
            Some(rest) => number(rest).map(|(controller, rest)| (Some(controller), rest))?,
            None => (None, rest),
        };
        let (namespace, rest) = number(rest.strip_prefix('n')?)?;
        rest.is_empty().then_some(NvmeName {
            subsystem,
            controller,
            namespace,
        })
    }

    /// Whether this is a path of the namespace `head`.
    fn namespace_of(&self, head: &NvmeName) -> bool {
        self.controller.is_some()
            && head.controller.is_none()
            && (self.subsystem, self.namespace) == (head.subsystem, head.namespace)
    }
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

    fn collector() -> DiskIoCollector {
        DiskIoCollector::detached()
    }

    /// The devices whose I/O counts, once `text` is taken in.
    fn counted(text: &str) -> Vec<String> {
        let mut collector = collector();
        collector.account(text.as_bytes(), 1000);
        collector
            .devices
            .entries
            .iter()
            .filter(|(_, device)| device.role.counts())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Bytes per second read and written, from a reading `before` to one a
    /// second later, `after`.
    fn rates(before: &str, after: &str) -> (f64, f64) {
        let mut collector = collector();
        collector.account(before.as_bytes(), 1000);
        let io = collector.account(after.as_bytes(), 1000);
        (io.read_rate, io.write_rate)
    }

    // 14 fields (kernels before 4.18): the 2014 node_exporter laptop, with
    // dm-crypt/LVM on sda4 and an SD card reader.
    #[test]
    fn diskstats_14_fields() {
        let text = fixture!("x86_64-linux3x-laptop-node-exporter-2014/proc/diskstats");
        assert_eq!(counted(text), ["sda", "mmcblk0"]);
        assert_eq!(
            parse(text.as_bytes()).nth(24),
            Some(("sda", 1003346126, 505697032))
        );
    }

    // 18 fields (4.18 added discards): OpenShift VM with a CD drive.
    #[test]
    fn diskstats_18_fields() {
        let text = fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/diskstats");
        assert_eq!(counted(text), ["sr0", "sda"]);
        assert_eq!(
            parse(text.as_bytes()).nth(1),
            Some(("sda", 856916, 2253152))
        );
    }

    // 20 fields (5.5 added flushes).
    #[test]
    fn diskstats_20_fields() {
        let text = " 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n";
        assert_eq!(parse(text.as_bytes()).next(), Some(("nvme0n1", 3, 7)));
    }

    // netdata#9560, Samsung PM1733 drives with native NVMe multipath on a
    // 4.18-5.4 kernel: the hidden paths nvme0c0n1 and nvme1c1n1 carry the
    // I/O, their heads nvme0n1 and nvme1n1 are all zeros; nvme2n1 and
    // nvme3n1 have no paths and count their own.
    #[test]
    fn nvme_multipath_paths_count_not_their_heads() {
        let before = fixture!("x86_64-server-4x-nvme-pm1733-netdata9560/proc/diskstats");
        assert_eq!(
            counted(before),
            ["nvme1c1n1", "nvme0c0n1", "nvme3n1", "nvme2n1"]
        );
        // A second later: 2,000 sectors read through nvme0c0n1, 1,000
        // through nvme1c1n1, 1,000 from nvme3n1's third partition (which
        // its disk counts too); 3,000 written through nvme1c1n1.
        let mut after = before.to_owned();
        for (old, new) in [
            (
                "nvme1c1n1 15574215 6668274 1306035176",
                "nvme1c1n1 15574215 6668274 1306036176",
            ),
            ("59673486 1951481 1281792136", "59673486 1951481 1281795136"),
            (
                "nvme0c0n1 18224147 7326821 1473911640",
                "nvme0c0n1 18224147 7326821 1473913640",
            ),
            ("nvme3n1 7081160 0 9310247", "nvme3n1 7081160 0 9311247"),
            ("nvme3n1p3 53828 0 9186747", "nvme3n1p3 53828 0 9187747"),
        ] {
            assert!(after.contains(old), "{old}");
            after = after.replacen(old, new, 1);
        }
        assert_eq!(rates(before, &after), (4000.0 * 512.0, 3000.0 * 512.0));
    }

    // Linux 6.2+ lets a head count the I/O of its paths too, when its
    // queue/iostats is on (here nvme0n1's is, nvme1n1's is off): summing
    // heads and paths would count nvme0's I/O twice.
    #[test]
    fn nvme_heads_that_count_their_paths_io_are_not_added() {
        let line = |name: &str, sectors: u64| {
            format!("259 0 {name} 0 0 {sectors} 0 0 0 {sectors} 0 0 0 0 0 0 0 0 0 0\n")
        };
        let reading = |nvme0: u64, nvme1: u64| {
            [
                line("nvme0c0n1", nvme0 / 4),
                line("nvme0c1n1", nvme0 / 4 * 3),
                line("nvme1c2n1", nvme1),
                line("nvme0n1", nvme0),
                line("nvme0n1p1", nvme0),
                line("nvme1n1", 0),
            ]
            .concat()
        };
        let (before, after) = (reading(4000, 1000), reading(8000, 3000));
        assert_eq!(counted(&after), ["nvme0c0n1", "nvme0c1n1", "nvme1c2n1"]);
        assert_eq!(rates(&before, &after), (6000.0 * 512.0, 6000.0 * 512.0));
    }

    // A path that goes away (its controller lost) leaves its head a plain
    // namespace again, counted; a path coming back takes over again.
    #[test]
    fn nvme_heads_follow_their_paths() {
        let path = "0 0 nvme0c0n1 0 0 100 0 0 0 100 0 0 0 0\n";
        let head = "259 0 nvme0n1 0 0 100 0 0 0 100 0 0 0 0\n";
        let mut collector = collector();
        let names = |collector: &DiskIoCollector| -> Vec<String> {
            let entries = &collector.devices.entries;
            let counting = entries.iter().filter(|(_, device)| device.role.counts());
            counting.map(|(name, _)| name.clone()).collect()
        };
        collector.account([path, head].concat().as_bytes(), 1000);
        assert_eq!(names(&collector), ["nvme0c0n1"]);
        collector.account(head.as_bytes(), 1000);
        assert_eq!(names(&collector), ["nvme0n1"]);
        collector.account([path, head].concat().as_bytes(), 1000);
        assert_eq!(names(&collector), ["nvme0c0n1"]);
    }

    #[test]
    fn nvme_names() {
        let name = |subsystem, controller, namespace| {
            Some(NvmeName {
                subsystem,
                controller,
                namespace,
            })
        };
        assert_eq!(NvmeName::parse("nvme0n1"), name("0", None, "1"));
        assert_eq!(NvmeName::parse("nvme10c12n3"), name("10", Some("12"), "3"));
        for other in [
            "nvme0n1p1",
            "nvmec0n1",
            "nvme0c0n",
            "nvme0c0n1x",
            "nvme0",
            "nvme0cn1",
        ] {
            assert_eq!(NvmeName::parse(other), None, "{other}");
        }
        let path = NvmeName::parse("nvme1c3n2").unwrap();
        assert!(path.namespace_of(&NvmeName::parse("nvme1n2").unwrap()));
        for other in ["nvme1n1", "nvme2n2", "nvme1c3n2", "nvme12n2"] {
            assert!(
                !path.namespace_of(&NvmeName::parse(other).unwrap()),
                "{other}"
            );
        }
    }

    // A Proxmox host with VM disks on ZFS: zd0 and zd16 are zvols, whose
    // I/O is the pool's on sda and sdb; /sys/block lists them as disks.
    #[test]
    fn zfs_zvols_are_not_counted() {
        assert_eq!(role("zd0", Some(true)), Role::Skip);
        assert_eq!(role("zd16p1", None), Role::Skip);
        assert_eq!(role("sda", Some(true)), Role::Disk);
        let text = "   8       0 sda 1 0 64 0 1 0 64 0 0 0 0\n \
                    230       0 zd0 1 0 32 0 1 0 32 0 0 0 0\n \
                    230      16 zd16 1 0 32 0 1 0 32 0 0 0 0\n";
        assert_eq!(counted(text), ["sda"]);
    }

    #[test]
    fn sysfs_decides_when_present() {
        assert_eq!(role("mmcblk0", Some(true)), Role::Disk);
        assert_eq!(role("mmcblk0p1", Some(false)), Role::Skip);
        assert_eq!(role("sda", Some(false)), Role::Skip);
        assert_eq!(role("dm-0", Some(true)), Role::Skip);
        assert_eq!(role("zram0", Some(true)), Role::Skip);
        let namespace = Role::NvmeNamespace { has_paths: false };
        assert_eq!(role("nvme0n1", Some(true)), namespace);
        assert_eq!(role("nvme0n1p1", Some(false)), Role::Skip);
        assert_eq!(role("nvme0c0n1", Some(true)), Role::NvmePath);
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
        assert_eq!(counted(text), ["sdb"]);
    }

    // Once known, a loop device or a partition in the same place is passed
    // over without its counters being read: garbage there changes nothing.
    #[test]
    fn known_devices_that_do_not_count_are_passed_over() {
        let before = " 7 0 loop0 0 0 8 0 0 0 8 0 0 0 0\n \
                      8 0 sda 0 0 100 0 0 0 100 0 0 0 0\n \
                      8 1 sda1 0 0 100 0 0 0 100 0 0 0 0\n";
        let after = " 7 0 loop0 x\n \
                     8 0 sda 0 0 300 0 0 0 500 0 0 0 0\n \
                     8 1 sda1\n";
        let mut collector = collector();
        collector.account(before.as_bytes(), 1000);
        let io = collector.account(after.as_bytes(), 1000);
        assert_eq!(
            (io.read_rate, io.write_rate),
            (200.0 * 512.0, 400.0 * 512.0)
        );
        let names: Vec<_> = collector
            .devices
            .entries
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["loop0", "sda", "sda1"]);
    }

    #[test]
    fn rates_are_whole_bytes_per_second() {
        let reading =
            |sectors: u64| format!("8 0 sda 0 0 {sectors} 0 0 0 {} 0 0 0 0\n", sectors * 2);
        let mut collector = collector();
        collector.account(reading(0).as_bytes(), 1000);
        // 512 and 1,024 bytes in 3 s.
        let io = collector.account(reading(1).as_bytes(), 3000);
        assert_eq!((io.read_rate, io.write_rate), (171.0, 341.0));
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
        let mut buf = Vec::new();
        let mut collector = DiskIoCollector::new(&paths, &mut buf);
        // sdb's counter went backwards (device re-created): 0, not huge.
        write(3000, 3000, 10);
        collector.at -= std::time::Duration::from_secs(2);
        let io = collector.sample(&mut buf).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            (io.read_rate - 512_000.0).abs() < 1000.0,
            "{}",
            io.read_rate
        );
        assert_eq!(io.read_rate, io.write_rate);
    }
}
