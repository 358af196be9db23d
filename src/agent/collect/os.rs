//! `hostname` and `os`: read once, when the collector starts.
//!
//! Kernel facts come from procfs (so a fixture tree can supply them) and
//! fall back to uname(2); the distribution from `/etc/openwrt_release`, else
//! os-release(5).

use super::{Paths, read_file};
use crate::protocol::Os;
use nix::sys::utsname::{UtsName, uname};
use std::ffi::OsStr;

pub(super) fn read(paths: &Paths, buf: &mut String) -> (String, Os) {
    let uname = uname().map_err(|err| log::debug!("uname: {err}")).ok();
    let from_uname = |field: fn(&UtsName) -> &OsStr| {
        uname
            .as_ref()
            .map(|uname| field(uname).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut kernel_fact = |file: &str, fallback: fn(&UtsName) -> &OsStr| {
        read_file(&paths.procfs.join("sys/kernel").join(file), buf)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map_or_else(|| from_uname(fallback), str::to_owned)
    };
    let hostname = kernel_fact("hostname", UtsName::nodename);
    let kernel = kernel_fact("osrelease", UtsName::release);
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
    let os = Os {
        name,
        version,
        kernel,
        arch: from_uname(UtsName::machine),
    };
    (hostname, os)
}

/// os-release(5) `NAME` and `VERSION_ID`.
pub(super) fn parse_os_release(text: &str) -> Option<(String, String)> {
    name_and_version(text, "NAME", "VERSION_ID")
}

/// OpenWrt's `DISTRIB_ID` and `DISTRIB_RELEASE` (`OpenWrt`, `23.05.3`).
pub(super) fn parse_openwrt_release(text: &str) -> Option<(String, String)> {
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
        let mut buf = String::new();
        assert_eq!(
            read_file(&link, &mut buf).and_then(parse_os_release),
            owned("OpenWrt", "19.07.2")
        );
        let (hostname, os) = read(&paths, &mut buf);
        assert_eq!(
            (hostname.as_str(), os.name.as_str(), os.version.as_str()),
            ("OpenWrt", "OpenWrt", "19.07.2")
        );
    }

    #[test]
    fn without_release_files_the_name_is_the_kernel() {
        let mut buf = String::new();
        let (hostname, os) = read(&fixture_paths("x86_64-desktop-hankb"), &mut buf);
        assert_eq!(hostname, "desktop");
        assert_eq!(
            (os.name.as_str(), os.version.as_str(), os.kernel.as_str()),
            ("Linux", "", "unknown")
        );
        assert!(!os.arch.is_empty());
    }
}
