//! `uptime`: whole seconds since boot, from `/proc/uptime`.

use super::read_bytes;
use procfs_core::{FromRead, Uptime};
use std::path::Path;

/// `uptime`: `procfs/uptime`.
pub(super) fn read(uptime: &Path, buf: &mut Vec<u8>) -> Option<u64> {
    read_bytes(uptime, buf).and_then(parse)
}

pub(super) fn parse(text: &[u8]) -> Option<u64> {
    let uptime = Uptime::from_read(text)
        .map_err(|err| log::debug!("uptime: {err}"))
        .ok()?;
    // Saturating: NaN and negatives become 0.
    Some(uptime.uptime as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime() {
        assert_eq!(parse(b"2578790.61 1999230.98\n"), Some(2578790));
        assert_eq!(parse(b"nan 1\n"), Some(0));
    }

    #[test]
    fn garbage_uptime() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"12.5"), None);
        assert_eq!(parse(b"x y"), None);
    }
}
