//! `load_average`: `/proc/loadavg`.

use super::read_bytes;
use crate::protocol::LoadAverage;
use procfs_core::FromRead;
use std::path::Path;

/// `loadavg`: `procfs/loadavg`.
pub(super) fn read(loadavg: &Path, buf: &mut Vec<u8>) -> Option<LoadAverage> {
    read_bytes(loadavg, buf).and_then(parse)
}

pub(super) fn parse(text: &[u8]) -> Option<LoadAverage> {
    let load = procfs_core::LoadAverage::from_read(text)
        .map_err(|err| log::debug!("loadavg: {err}"))
        .ok()?;
    // procfs-core parses f32; rounding to the two decimals the kernel
    // prints drops the float noise (0.21 would otherwise serialize as
    // 0.20999999344348907).
    let round2 = |x: f32| (f64::from(x) * 100.0).round() / 100.0;
    Some(LoadAverage {
        one: round2(load.one),
        five: round2(load.five),
        fifteen: round2(load.fifteen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg() {
        let load =
            parse(fixture!("x86_64-linux3x-laptop-node-exporter-2014/proc/loadavg").as_bytes())
                .unwrap();
        assert_eq!((load.one, load.five, load.fifteen), (0.21, 0.37, 0.39));
    }

    #[test]
    fn garbage_loadavg() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"0.76 0.77"), None);
        assert_eq!(parse(b"a b c 1/2 3"), None);
    }
}
