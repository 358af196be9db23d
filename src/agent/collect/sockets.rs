//! `sockets`: in-use TCP and UDP sockets from `/proc/net/sockstat` (IPv4)
//! and `/proc/net/sockstat6` (IPv6, absent on kernels without it).

use super::{Text, read_scanned};
use crate::protocol::Sockets;
use std::path::Path;

/// `sockstat` and `sockstat6`: `procfs/net/sockstat` and `procfs/net/sockstat6`.
pub(super) fn read(sockstat: &Path, sockstat6: &Path, buf: &mut Vec<u8>) -> Option<Sockets> {
    let v4 = read_scanned(sockstat, buf, scan).and_then(sockets)?;
    let v6 = read_scanned(sockstat6, buf, scan).and_then(sockets);
    Some(both(v4, v6))
}

/// The counts of `sockstat`, plus those of `sockstat6` when there is one.
pub(crate) fn both(mut total: Sockets, v6: Option<Sockets>) -> Sockets {
    if let Some(v6) = v6 {
        // The counts are whatever the files say: a sum past u64 would
        // panic in a debug build (and wrap in a release one).
        total.tcp = total.tcp.saturating_add(v6.tcp);
        total.udp = total.udp.saturating_add(v6.udp);
    }
    total
}

/// `sockstat` (or `sockstat6`) from its whole text.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) fn parse(text: &[u8]) -> Option<Sockets> {
    sockets(scan(text).0)
}

/// The TCP and UDP sockets in use in `text`, and whether it had both.
/// `TCP: inuse 13 orphan 0 ...`, `UDP6: inuse 3`; UDP-Lite is not UDP.
fn scan(text: &[u8]) -> ((Option<u64>, Option<u64>), bool) {
    let (mut tcp, mut udp) = (None, None);
    let mut text = Text::new(text);
    while let Some(mut line) = text.line() {
        let Some(protocol) = line.until(b':') else {
            continue;
        };
        let count = match protocol {
            b"TCP" | b"TCP6" => &mut tcp,
            b"UDP" | b"UDP6" => &mut udp,
            _ => continue,
        };
        if line.next() == Some(b"inuse") {
            *count = line.number();
        }
        if tcp.is_some() && udp.is_some() {
            return ((tcp, udp), true);
        }
    }
    ((tcp, udp), false)
}

fn sockets((tcp, udp): (Option<u64>, Option<u64>)) -> Option<Sockets> {
    if tcp.is_none() && udp.is_none() {
        log::debug!("sockstat: no TCP or UDP line");
        return None;
    }
    Some(Sockets {
        tcp: tcp.unwrap_or(0),
        udp: udp.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6() {
        let v4 = parse(
            fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/net/sockstat").as_bytes(),
        );
        let v6 = parse(
            fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/net/sockstat6").as_bytes(),
        );
        assert_eq!(v4, Some(Sockets { tcp: 13, udp: 5 }));
        assert_eq!(v6, Some(Sockets { tcp: 15, udp: 3 }));
    }

    // fuzz/regressions/proc_files/sockstat-sum-overflow
    #[test]
    fn ipv4_and_ipv6_counts_past_u64_saturate() {
        let v4 = parse(b"TCP: inuse 18446744073709551615\nUDP: inuse 1\n").unwrap();
        let v6 = parse(b"TCP6: inuse 1\nUDP6: inuse 2\n");
        assert_eq!(
            both(v4, v6),
            Sockets {
                tcp: u64::MAX,
                udp: 3
            }
        );
    }

    #[test]
    fn garbage_sockstat() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"UDPLITE: inuse 4\nTCP inuse 3\n"), None);
        assert_eq!(
            parse(b"TCP: inuse x\nUDP: inuse 2\n"),
            Some(Sockets { tcp: 0, udp: 2 })
        );
    }
}
