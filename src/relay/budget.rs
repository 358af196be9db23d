//! A budget of connections that have shown no credential yet: a vStats
//! agent's WebSocket between its upgrade and its accepted `auth` frame
//! (docs/PROTOCOL.md, "vStats compatibility"). Anyone can open one, so
//! they are held to a few per source address and a fixed number in all,
//! whatever `--max-connections` allows. Pure bookkeeping: the engine takes
//! a place when it upgrades such a connection and gives it back when the
//! agent is admitted or the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;

/// Connections awaiting `auth` from one source address (an IPv6 /64 counts
/// as one address: a host gets a whole /64 to pick from).
pub const UNAUTHENTICATED_PER_ADDRESS: u32 = 16;
/// Connections awaiting `auth` in all.
pub const UNAUTHENTICATED_TOTAL: usize = 512;

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The source address holds [`UNAUTHENTICATED_PER_ADDRESS`] already.
    Address,
    /// [`UNAUTHENTICATED_TOTAL`] are held.
    Total,
}

#[derive(Debug)]
pub struct Budget {
    per_address: u32,
    total: usize,
    held: HashMap<IpAddr, u32>,
    held_total: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(UNAUTHENTICATED_PER_ADDRESS, UNAUTHENTICATED_TOTAL)
    }
}

impl Budget {
    pub fn new(per_address: u32, total: usize) -> Budget {
        Budget {
            per_address,
            total,
            held: HashMap::new(),
            held_total: 0,
        }
    }

    /// Takes a place for a connection from `peer`, if there is one.
    pub fn take(&mut self, peer: IpAddr) -> Result<(), Full> {
        if self.held_total >= self.total {
            return Err(Full::Total);
        }
        let held = self.held.entry(source(peer)).or_default();
        if *held >= self.per_address {
            return Err(Full::Address);
        }
        *held += 1;
        self.held_total += 1;
        Ok(())
    }

    /// Gives back a place [`Budget::take`] gave for `peer`.
    pub fn give_back(&mut self, peer: IpAddr) {
        let source = source(peer);
        if let Some(held) = self.held.get_mut(&source) {
            *held -= 1;
            self.held_total -= 1;
            if *held == 0 {
                // The map holds only addresses with a place: it cannot
                // grow with the addresses seen.
                self.held.remove(&source);
            }
        }
    }

    /// Places held in all.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held_total
    }
}

/// The address a budget is kept for: an IPv4 address (also when mapped
/// into IPv6), or an IPv6 address's /64.
fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let mut budget = Budget::new(2, 10);
        assert_eq!(budget.take(ip("192.0.2.1")), Ok(()));
        assert_eq!(budget.take(ip("192.0.2.1")), Ok(()));
        assert_eq!(budget.take(ip("192.0.2.1")), Err(Full::Address));
        // Another address is not held back by it.
        assert_eq!(budget.take(ip("192.0.2.2")), Ok(()));
        budget.give_back(ip("192.0.2.1"));
        assert_eq!(budget.take(ip("192.0.2.1")), Ok(()));
        assert_eq!(budget.held(), 3);
    }

    #[test]
    fn all_addresses_together_get_the_total_and_no_more() {
        let mut budget = Budget::new(2, 3);
        for last in 1..=3 {
            assert_eq!(budget.take(ip(&format!("192.0.2.{last}"))), Ok(()));
        }
        assert_eq!(budget.take(ip("192.0.2.9")), Err(Full::Total));
        budget.give_back(ip("192.0.2.2"));
        assert_eq!(budget.take(ip("192.0.2.9")), Ok(()));
    }

    #[test]
    fn an_ipv6_64_is_one_address_and_a_mapped_ipv4_its_own() {
        let mut budget = Budget::new(2, 10);
        assert_eq!(budget.take(ip("2001:db8:1:2::1")), Ok(()));
        assert_eq!(budget.take(ip("2001:db8:1:2:ffff::9")), Ok(()));
        assert_eq!(budget.take(ip("2001:db8:1:2::3")), Err(Full::Address));
        assert_eq!(budget.take(ip("2001:db8:1:3::1")), Ok(()));
        assert_eq!(budget.take(ip("::ffff:192.0.2.1")), Ok(()));
        assert_eq!(budget.take(ip("192.0.2.1")), Ok(()));
        assert_eq!(budget.take(ip("192.0.2.1")), Err(Full::Address));
    }

    #[test]
    fn giving_back_what_was_never_taken_changes_nothing_and_addresses_are_forgotten() {
        let mut budget = Budget::new(2, 10);
        budget.give_back(ip("192.0.2.1"));
        assert_eq!(budget.held(), 0);
        for n in 0..1000u32 {
            let peer = IpAddr::V4(n.into());
            budget.take(peer).unwrap();
            budget.give_back(peer);
        }
        assert_eq!((budget.held(), budget.held.len()), (0, 0));
    }

    #[test]
    fn the_protocol_document_and_readme_state_this_budget() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = |name: &str| {
            let text = std::fs::read_to_string(root.join(name)).unwrap();
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let phrase = format!(
            "at most {UNAUTHENTICATED_PER_ADDRESS} such sockets from one address (an IPv6 /64"
        );
        assert!(text("docs/PROTOCOL.md").contains(&phrase), "{phrase}");
        assert!(text("docs/PROTOCOL.md").contains(&format!("and {UNAUTHENTICATED_TOTAL} in all")));
        assert!(text("README.md").contains(&format!("and {UNAUTHENTICATED_TOTAL} in all")));
    }
}
