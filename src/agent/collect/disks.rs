//! `disks`: real filesystems from `/proc/mounts`, sized with statvfs(3).
//!
//! Mounted ZFS datasets are listed one by one, as `df` shows them: a
//! Proxmox host has one per container volume (`rpool/data/subvol-101-disk-0`)
//! besides `rpool`, `rpool/ROOT/pve-1` on `/` and `rpool/data`. ZFS's statvfs
//! gives a dataset's `used` as the bytes it references itself (not its
//! snapshots, not its child datasets) and its total as that plus the bytes
//! it may still take: the pool's free space, less if a quota caps it (a
//! container volume's refquota, its disk size). So the datasets of one pool
//! share the pool's free space, each total counting it again: their totals
//! do not add up to the pool's size.
//!
//! Hand-parsed rather than with procfs-core's `MountEntry`, which leaves
//! `\040` (a space) escaped in mount points, so statvfs would miss them, and
//! builds a `HashMap` of mount options for every line.

use super::{Paths, flagged, open_and_read};
use crate::protocol::{Disk, percent};
use nix::sys::statvfs::statvfs;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
pub(crate) struct Mount {
    device: String,
    mount: String,
    fs_type: String,
}

pub(super) struct DiskCollector {
    /// `procfs/mounts`, kept open: the kernel flags it POLLPRI when anything
    /// is mounted or unmounted (proc(5)), so an unchanged table, hundreds
    /// of lines on a container host, is not parsed again every second.
    table: Option<File>,
    /// Each mount, and its mount point under `rootfs`, joined when the
    /// table is read rather than every sample.
    mounts: Vec<(Mount, PathBuf)>,
}

impl DiskCollector {
    pub(super) fn new(paths: &Paths, buf: &mut Vec<u8>) -> DiskCollector {
        let mut collector = DiskCollector {
            table: None,
            mounts: Vec::new(),
        };
        collector.reload(paths, buf);
        collector
    }

    pub(super) fn sample(&mut self, paths: &Paths, buf: &mut Vec<u8>) -> Vec<Disk> {
        if self.table_changed() {
            self.reload(paths, buf);
        }
        self.mounts
            .iter()
            .filter_map(|(mount, path)| measure(path, mount))
            .collect()
    }

    fn table_changed(&self) -> bool {
        self.table.as_ref().is_none_or(flagged)
    }

    fn reload(&mut self, paths: &Paths, buf: &mut Vec<u8>) {
        let read = open_and_read(&paths.procfs.join("mounts"), buf);
        self.mounts = parse_mounts(read.as_ref().map_or("", |(_, text)| text))
            .into_iter()
            .map(|mount| {
                // Joining an absolute path would replace the root, not go
                // under it.
                let path = paths.rootfs.join(mount.mount.trim_start_matches('/'));
                (mount, path)
            })
            .collect();
        self.table = read.map(|(table, _)| table);
    }
}

/// The size of `mount`, mounted at `path`.
fn measure(path: &Path, mount: &Mount) -> Option<Disk> {
    let stat = statvfs(path)
        .map_err(|err| log::debug!("statvfs {}: {err}", path.display()))
        .ok()?;
    // c_ulong and fsblkcnt_t are u32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (fragment, blocks, free) = (
        u64::from(stat.fragment_size()),
        u64::from(stat.blocks()),
        u64::from(stat.blocks_free()),
    );
    let total = blocks.saturating_mul(fragment);
    let used = blocks.saturating_sub(free).saturating_mul(fragment);
    Some(Disk {
        name: mount.device.clone(),
        mount: mount.mount.clone(),
        fs_type: mount.fs_type.clone(),
        total,
        used,
        usage_percent: percent(used, total),
    })
}

/// The mounts that hold real data, each device once (the first mount wins,
/// so bind mounts and btrfs subvolumes are not counted again).
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split(' ').map(unescape);
        let (Some(device), Some(mount), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            log::debug!("mounts: short line {line:?}");
            continue;
        };
        if is_real(&device, &mount, &fs_type) && !mounts.iter().any(|m| m.device == device) {
            mounts.push(Mount {
                device: device.into_owned(),
                mount: mount.into_owned(),
                fs_type: fs_type.into_owned(),
            });
        }
    }
    mounts
}

/// Block devices, flash filesystems, OpenWrt's overlay root (whose upper
/// layer is the writable flash) and ZFS datasets; never the read-only
/// squashfs image, nor a ZFS snapshot (`pool/dataset@name`, mounted
/// read-only under `.zfs/snapshot/` while someone browses it), nor a plain
/// FUSE mount, whose `/dev/fuse` is its daemon's channel rather than a disk
/// (Proxmox's cluster filesystem on `/etc/pve`; `fuseblk` names its disk),
/// nor the dataset per image layer of Docker's ZFS storage driver
/// (hundreds of them under `/var/lib/docker/zfs/graph/`).
fn is_real(device: &str, mount: &str, fs_type: &str) -> bool {
    match fs_type {
        "squashfs" | "fuse" => false,
        "ubifs" | "jffs2" => true,
        "overlay" => mount == "/",
        "zfs" => !device.contains('@') && !mount.starts_with("/var/lib/docker/"),
        _ => device.starts_with("/dev/"),
    }
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let code = rest
            .get(1..4)
            .and_then(|digits| u8::from_str_radix(digits, 8).ok())
            .filter(u8::is_ascii);
        match code {
            Some(code) => {
                out.push(char::from(code));
                rest = &rest[4..];
            }
            None => {
                out.push('\\');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> Vec<String> {
        parse_mounts(text)
            .iter()
            .map(|m| format!("{} {} {}", m.device, m.mount, m.fs_type))
            .collect()
    }

    // TP-Link on OpenWrt: squashfs /rom, jffs2 /overlay, the overlay root
    // (mounted ro, as on a full overlay), tmpfs and pseudo filesystems.
    #[test]
    fn openwrt_overlay_root_and_jffs2_but_not_squashfs() {
        assert_eq!(
            mounts(fixture!("openwrt-tplink-jffs2-overlay-ro/proc/mounts")),
            [
                "/dev/mtdblock10 /overlay jffs2",
                "overlayfs:/overlay / overlay"
            ]
        );
    }

    #[test]
    fn openwrt_ubifs_overlay() {
        let text = "/dev/root /rom squashfs ro,relatime,errors=continue 0 0\n\
                    ubi0_1 /overlay ubifs rw,noatime,assert=read-only,ubi=0,vol=1 0 0\n\
                    overlayfs:/overlay / overlay rw,noatime,lowerdir=/,upperdir=/overlay/upper,workdir=/overlay/work,xino=off 0 0\n";
        assert_eq!(
            mounts(text),
            ["ubi0_1 /overlay ubifs", "overlayfs:/overlay / overlay"]
        );
    }

    // sosreport from an OpenShift node, taken inside a container: the host
    // root is bind-mounted at /host and /dev/sda3 appears seven times.
    #[test]
    fn container_view_lists_each_device_once() {
        assert_eq!(
            mounts(fixture!(
                "x86_64-rhcos-4.18-openshift-vm-sosreport/proc/mounts"
            )),
            [
                "overlay / overlay",
                "/dev/sda3 /host xfs",
                "/dev/sda2 /host/boot ext4",
                "/dev/sda1 /host/boot/efi vfat"
            ]
        );
    }

    #[test]
    fn desktop_without_pseudo_filesystems() {
        assert_eq!(
            mounts(fixture!(
                "x86_64-linux3x-8cpu-node-exporter-2015/proc/mounts"
            )),
            ["/dev/dm-2 / ext4", "/dev/sda3 /boot ext2"]
        );
    }

    #[test]
    fn btrfs_subvolumes_and_snap_squashfs() {
        let text = "/dev/nvme0n1p2 / btrfs rw,subvol=/@ 0 0\n\
                    /dev/nvme0n1p2 /home btrfs rw,subvol=/@home 0 0\n\
                    /dev/loop3 /snap/core/17200 squashfs ro,nodev,relatime 0 0\n\
                    /dev/nvme0n1p1 /boot/efi vfat rw 0 0\n";
        assert_eq!(
            mounts(text),
            ["/dev/nvme0n1p2 / btrfs", "/dev/nvme0n1p1 /boot/efi vfat"]
        );
    }

    // Proxmox VE on ZFS (synthetic tree, see tests/fixtures/SOURCES.md):
    // every mounted dataset, by dataset name; not the snapshot that a
    // backup left mounted, nor the cluster filesystem on /etc/pve, NFS
    // storage, lxcfs or tmpfs.
    #[test]
    fn proxmox_zfs_datasets() {
        assert_eq!(
            mounts(fixture!("x86_64-proxmox-ve8-zfs-synthetic/proc/mounts")),
            [
                "rpool/ROOT/pve-1 / zfs",
                "rpool /rpool zfs",
                "rpool/ROOT /rpool/ROOT zfs",
                "rpool/data /rpool/data zfs",
                "rpool/var-lib-vz /var/lib/vz zfs",
                "rpool/data/subvol-101-disk-0 /rpool/data/subvol-101-disk-0 zfs",
                "rpool/data/subvol-102-disk-0 /rpool/data/subvol-102-disk-0 zfs",
                "rpool/data/subvol-104-disk-1 /rpool/data/subvol-104-disk-1 zfs",
            ]
        );
    }

    // Inside a Proxmox container on ZFS, the root is its volume.
    #[test]
    fn docker_image_layers_on_zfs_are_not_disks() {
        let text = "rpool/ROOT/pve-1 / zfs rw,relatime,xattr,noacl 0 0\n\
                    rpool/docker/3f9a1c0e2b7d /var/lib/docker/zfs/graph/3f9a1c0e2b7d zfs rw,relatime 0 0\n\
                    rpool/docker /var/lib/docker zfs rw,relatime 0 0\n";
        assert_eq!(
            mounts(text),
            ["rpool/ROOT/pve-1 / zfs", "rpool/docker /var/lib/docker zfs"]
        );
    }

    #[test]
    fn zfs_root_of_a_container() {
        let text = "rpool/data/subvol-101-disk-0 / zfs rw,relatime,xattr,posixacl,casesensitive 0 0\n\
                    none /dev tmpfs rw,relatime,size=492k,mode=755,uid=100000,gid=100000,inode64 0 0\n";
        assert_eq!(mounts(text), ["rpool/data/subvol-101-disk-0 / zfs"]);
    }

    // ntfs-3g mounts through FUSE as fuseblk, naming its partition.
    #[test]
    fn fuse_channel_is_not_a_disk_but_fuseblk_is() {
        let text = "/dev/fuse /etc/pve fuse rw,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions,allow_other 0 0\n\
                    /dev/sdb1 /media/usb fuseblk rw,nosuid,nodev,relatime,user_id=0,group_id=0,allow_other,blksize=4096 0 0\n";
        assert_eq!(mounts(text), ["/dev/sdb1 /media/usb fuseblk"]);
    }

    #[test]
    fn octal_escapes_in_mount_points() {
        let text = "/dev/sdb1 /media/My\\040Disk\\134x ext4 rw 0 0\n";
        assert_eq!(mounts(text), ["/dev/sdb1 /media/My Disk\\x ext4"]);
        assert_eq!(unescape("a\\0"), "a\\0");
        assert_eq!(unescape("\\777\\"), "\\777\\");
    }

    #[test]
    fn garbage_mounts() {
        assert!(mounts("").is_empty());
        assert!(mounts("/dev/sda1\n\u{1F600} \\\\ x\n/dev/sda1 /\n").is_empty());
    }

    #[test]
    fn mount_table_is_reread_only_when_it_changes() {
        let mut buf = Vec::new();
        let live = DiskCollector::new(&Paths::default(), &mut buf);
        assert!(live.table.is_some());
        assert!(!live.table_changed());
        let missing = Paths {
            procfs: "/nonexistent/vstats".into(),
            ..Paths::default()
        };
        let mut collector = DiskCollector::new(&missing, &mut buf);
        assert!(collector.table_changed());
        assert!(collector.sample(&missing, &mut buf).is_empty());
    }

    #[test]
    fn statvfs_failure_skips_the_mount() {
        let mount = |path: &str| Mount {
            device: "/dev/sda1".into(),
            mount: path.into(),
            fs_type: "ext4".into(),
        };
        assert_eq!(measure(Path::new("/nonexistent/vstats"), &mount("/")), None);
        let disk = measure(Path::new("/"), &mount("/")).unwrap();
        assert!(disk.total > 0 && disk.used <= disk.total);
    }
}
