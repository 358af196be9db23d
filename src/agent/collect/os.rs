//! `hostname` and `os`. The os facts are read once, when the collector
//! starts; the hostname is read then and again whenever the kernel says it
//! changed.
//!
//! Kernel facts come from procfs (so a fixture tree can supply them) and
//! fall back to uname(2); the distribution from `/etc/openwrt_release`, else
//! os-release(5).

use super::{Paths, flagged, open_and_read, read_file};
use crate::protocol::Os;
use nix::sys::utsname::{UtsName, uname};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;

/// The kernel hostname, kept up to date for one poll(2) a sample.
///
/// Reading `sys/kernel/hostname` every sample would cost an open, a read
/// and a close: a path walk in the kernel, and in user space a path to
/// build, a UTF-8 check and a copy. uname(2) is one syscall but cannot be
/// rooted at a fixture tree. Instead the file stays open and is polled like
/// `mounts`: since Linux 3.1 the kernel flags it POLLPRI (with POLLERR)
/// whenever a hostname is set, by sethostname(2) or by a write to the file.
/// The poll is one syscall with a zero timeout that allocates nothing; the
/// file is read again only when flagged, so the name is never more than one
/// sample stale. The flag is shared by all UTS namespaces (a container
/// naming itself wakes every reader, which then reads its own name again),
/// and a fixture tree's regular file never flags: there the name is read
/// once.
pub(super) struct Hostname {
    /// `procfs/sys/kernel/hostname`, open since it was last read; `None`
    /// when procfs has no such file: then uname(2) is asked every sample.
    file: Option<File>,
    name: String,
}

impl Hostname {
    pub(super) fn new(paths: &Paths, buf: &mut Vec<u8>) -> Hostname {
        let mut hostname = Hostname {
            file: None,
            name: String::new(),
        };
        hostname.reload(paths, buf);
        hostname
    }

    /// The hostname now: read again only if the kernel flagged a change.
    pub(super) fn sample(&mut self, paths: &Paths, buf: &mut Vec<u8>) -> &str {
        if self.changed() {
            self.reload(paths, buf);
        }
        &self.name
    }

    fn changed(&self) -> bool {
        match &self.file {
            Some(file) => flagged(file),
            None => uname().is_ok_and(|uts| uts.nodename().as_bytes() != self.name.as_bytes()),
        }
    }

    fn reload(&mut self, paths: &Paths, buf: &mut Vec<u8>) {
        let read = open_and_read(&paths.procfs.join("sys/kernel/hostname"), buf);
        let name = match read.as_ref().and_then(|(_, text)| parse_hostname(text)) {
            Some(name) => name.to_owned(),
            None => from_uname(UtsName::nodename),
        };
        self.file = read.map(|(file, _)| file);
        if name != self.name {
            log::debug!("hostname: {name:?}");
            self.name = name;
        }
    }
}

/// The name in `sys/kernel/hostname`, or `None` if the file holds none.
pub(crate) fn parse_hostname(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|name| !name.is_empty())
}

/// A uname(2) field, or "" when uname fails.
fn from_uname(field: fn(&UtsName) -> &OsStr) -> String {
    uname()
        .map_err(|err| log::debug!("uname: {err}"))
        .map(|uts| field(&uts).to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `os`: read once, when the collector starts.
pub(super) fn read(paths: &Paths, buf: &mut Vec<u8>) -> Os {
    let kernel = read_file(&paths.procfs.join("sys/kernel/osrelease"), buf)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map_or_else(|| from_uname(UtsName::release), str::to_owned);
    let distribution = read_file(&paths.rootfs.join("etc/openwrt_release"), buf)
        .and_then(parse_openwrt_release)
        .or_else(|| {
            ["etc/os-release", "usr/lib/os-release"]
                .iter()
                .find_map(|file| {
                    read_file(&paths.rootfs.join(file), buf).and_then(parse_os_release)
                })
        });
    let (name, version) =
        distribution.unwrap_or_else(|| (from_uname(UtsName::sysname), String::new()));
    Os {
        name,
        version,
        kernel,
        arch: from_uname(UtsName::machine),
    }
}

/// os-release(5) `NAME` and `VERSION_ID`.
pub(crate) fn parse_os_release(text: &str) -> Option<(String, String)> {
    name_and_version(text, "NAME", "VERSION_ID")
}

/// OpenWrt's `DISTRIB_ID` and `DISTRIB_RELEASE` (`OpenWrt`, `23.05.3`).
pub(crate) fn parse_openwrt_release(text: &str) -> Option<(String, String)> {
    name_and_version(text, "DISTRIB_ID", "DISTRIB_RELEASE")
}

fn name_and_version(text: &str, name: &str, version: &str) -> Option<(String, String)> {
    let name = shell_value(text, name)?;
    let version = shell_value(text, version).unwrap_or_default();
    Some((name.to_owned(), version.to_owned()))
}

/// The value of `KEY=value`, `KEY="value"` or `KEY='value'`; the last
/// assignment wins, as in a shell.
fn shell_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let value = text
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))?;
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|&quote| value.strip_prefix(quote)?.strip_suffix(quote))
        .unwrap_or(value);
    Some(unquoted).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::collect::fixture_paths;

    fn owned(name: &str, version: &str) -> Option<(String, String)> {
        Some((name.to_owned(), version.to_owned()))
    }

    #[test]
    fn os_release() {
        let text = fixture!("rpi4-raspbian10-armv7l/etc/os-release");
        assert_eq!(parse_os_release(text), owned("Raspbian GNU/Linux", "10"));
        assert_eq!(
            parse_os_release("NAME=Arch\nVERSION_ID=\n"),
            owned("Arch", "")
        );
    }

    // OpenWrt 19.07.2 writes single quotes.
    #[test]
    fn openwrt_release_single_quoted() {
        let text = fixture!("openwrt-19.07.2-ar71xx-nand-rootfs/etc/openwrt_release");
        assert_eq!(parse_openwrt_release(text), owned("OpenWrt", "19.07.2"));
    }

    // Barrier Breaker 14.07 (vendor MT7620 build, openwrt-frp#32) writes
    // double quotes and a codename as the release.
    #[test]
    fn openwrt_release_double_quoted() {
        let text = fixture!("openwrt-14.07-mt7620-issue-frp32/etc/openwrt_release");
        assert_eq!(
            parse_openwrt_release(text),
            owned("OpenWrt", "Barrier Breaker")
        );
        assert_eq!(
            parse_openwrt_release("DISTRIB_ID=OpenWrt\n"),
            owned("OpenWrt", "")
        );
    }

    #[test]
    fn garbage_release_files() {
        assert_eq!(parse_os_release(""), None);
        assert_eq!(parse_os_release("NAME\nNAME=\"\"\nPRETTY_NAME=x\n"), None);
        assert_eq!(
            shell_value("NAME=\"unterminated\n", "NAME"),
            Some("\"unterminated")
        );
        assert_eq!(shell_value("NAMEX=1\n", "NAME"), None);
    }

    // OpenWrt ships /etc/os-release as a symlink to ../usr/lib/os-release;
    // openwrt_release is preferred when both exist.
    #[test]
    fn openwrt_rootfs_with_os_release_symlink() {
        let paths = fixture_paths("openwrt-19.07.2-ar71xx-nand-rootfs");
        let link = paths.rootfs.join("etc/os-release");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        let mut buf = Vec::new();
        assert_eq!(
            read_file(&link, &mut buf).and_then(parse_os_release),
            owned("OpenWrt", "19.07.2")
        );
        let os = read(&paths, &mut buf);
        let mut hostname = Hostname::new(&paths, &mut buf);
        assert_eq!(
            (
                hostname.sample(&paths, &mut buf),
                os.name.as_str(),
                os.version.as_str()
            ),
            ("OpenWrt", "OpenWrt", "19.07.2")
        );
    }

    #[test]
    fn without_release_files_the_name_is_the_kernel() {
        let paths = fixture_paths("x86_64-desktop-hankb");
        let mut buf = Vec::new();
        let os = read(&paths, &mut buf);
        assert_eq!(Hostname::new(&paths, &mut buf).name, "desktop");
        assert_eq!(
            (os.name.as_str(), os.version.as_str(), os.kernel.as_str()),
            ("Linux", "", "unknown")
        );
        assert!(!os.arch.is_empty());
    }

    #[test]
    fn hostname_text() {
        assert_eq!(parse_hostname("pve\n"), Some("pve"));
        assert_eq!(parse_hostname("OpenWrt"), Some("OpenWrt"));
        assert_eq!(parse_hostname(""), None);
        assert_eq!(parse_hostname(" \n"), None);
    }

    // A fixture tree's file never flags a change, so it is read once; the
    // file is read again when the kernel flags it.
    #[test]
    fn hostname_is_read_again_only_when_flagged() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let file = paths.procfs.join("sys/kernel/hostname");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "before\n").unwrap();
        let mut buf = Vec::new();
        let mut hostname = Hostname::new(&paths, &mut buf);
        std::fs::write(&file, "after\n").unwrap();
        assert!(hostname.file.is_some() && !hostname.changed());
        assert_eq!(hostname.sample(&paths, &mut buf), "before");
        hostname.reload(&paths, &mut buf);
        assert_eq!(hostname.sample(&paths, &mut buf), "after");
    }

    #[test]
    fn without_procfs_the_name_comes_from_uname() {
        let paths = Paths {
            procfs: "/nonexistent/vstats".into(),
            ..Paths::default()
        };
        let mut buf = Vec::new();
        let mut hostname = Hostname::new(&paths, &mut buf);
        assert!(hostname.file.is_none() && !hostname.changed());
        let nodename = uname().unwrap().nodename().to_string_lossy().into_owned();
        assert_eq!(hostname.sample(&paths, &mut buf), nodename);
    }

    // The live host: renaming it is seen at the next sample. The rename
    // happens in a UTS namespace of this test's own thread, so the machine
    // keeps its name; that takes CAP_SYS_ADMIN, so without it the test
    // only checks that an unchanged name is not flagged.
    #[test]
    fn hostname_follows_sethostname() {
        std::thread::spawn(|| {
            let paths = Paths::default();
            let mut buf = Vec::new();
            let mut hostname = Hostname::new(&paths, &mut buf);
            let before = hostname.sample(&paths, &mut buf).to_owned();
            assert!(hostname.file.is_some());
            assert_eq!(before, uname().unwrap().nodename().to_string_lossy());
            if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS) {
                eprintln!("hostname_follows_sethostname: rename skipped: unshare: {err}");
                return;
            }
            let renamed = "vstats-renamed-host";
            nix::unistd::sethostname(renamed).unwrap();
            assert_eq!(hostname.sample(&paths, &mut buf), renamed);
            assert!(!hostname.changed());
        })
        .join()
        .unwrap();
    }
}
