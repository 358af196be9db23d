//! `sockets`: in-use TCP and UDP sockets from `/proc/net/sockstat` (IPv4)
//! and `/proc/net/sockstat6` (IPv6, absent on kernels without it).

use super::read_file;
use crate::protocol::Sockets;
use std::path::Path;

/// `sockstat` and `sockstat6`: `procfs/net/sockstat` and `procfs/net/sockstat6`.
pub(super) fn read(sockstat: &Path, sockstat6: &Path, buf: &mut String) -> Option<Sockets> {
    let mut sockets = read_file(sockstat, buf).and_then(parse)?;
    if let Some(v6) = read_file(sockstat6, buf).and_then(parse) {
        sockets.tcp += v6.tcp;
        sockets.udp += v6.udp;
    }
    Some(sockets)
}

/// `TCP: inuse 13 orphan 0 ...`, `UDP6: inuse 3`; UDP-Lite is not UDP.
pub(super) fn parse(text: &str) -> Option<Sockets> {
    let (mut tcp, mut udp) = (None, None);
    for line in text.lines() {
        let Some((protocol, fields)) = line.split_once(':') else {
            continue;
        };
        let count = match protocol {
            "TCP" | "TCP6" => &mut tcp,
            "UDP" | "UDP6" => &mut udp,
            _ => continue,
        };
        let mut fields = fields.split_ascii_whitespace();
        if fields.next() == Some("inuse") {
            *count = fields.next().and_then(|n| n.parse().ok());
        }
        if tcp.is_some() && udp.is_some() {
            break;
        }
    }
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
        let v4 = parse(fixture!(
            "x86_64-rhcos-4.18-openshift-vm-sosreport/proc/net/sockstat"
        ));
        let v6 = parse(fixture!(
            "x86_64-rhcos-4.18-openshift-vm-sosreport/proc/net/sockstat6"
        ));
        assert_eq!(v4, Some(Sockets { tcp: 13, udp: 5 }));
        assert_eq!(v6, Some(Sockets { tcp: 15, udp: 3 }));
    }

    #[test]
    fn garbage_sockstat() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("UDPLITE: inuse 4\nTCP inuse 3\n"), None);
        assert_eq!(
            parse("TCP: inuse x\nUDP: inuse 2\n"),
            Some(Sockets { tcp: 0, udp: 2 })
        );
    }
}
