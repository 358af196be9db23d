//! `memory`: `/proc/meminfo`.
//!
//! Hand-parsed rather than with `procfs_core::Meminfo`, which panics on a
//! garbled line (it slices the key at `len - 1` bytes, inside a multi-byte
//! character; and multiplies kB without overflow checks), rejects a file
//! missing any of a dozen fields this sample does not use, and builds a
//! `HashMap` of ~50 owned keys every second.

use super::{Text, read_scanned};
use crate::protocol::{Memory, percent};
use std::path::Path;

/// `meminfo`: `procfs/meminfo`.
pub(super) fn read(meminfo: &Path, buf: &mut Vec<u8>) -> Option<Memory> {
    read_scanned(meminfo, buf, scan).and_then(memory)
}

/// `meminfo` from its whole text.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) fn parse(text: &[u8]) -> Option<Memory> {
    memory(scan(text).0)
}

/// The bytes of `MemTotal`, `MemFree`, `MemAvailable`, `Buffers`, `Cached`,
/// `SwapTotal` and `SwapFree`, in this order.
type Fields = [Option<u64>; 7];

/// The [`Fields`] in `text`, and whether it had them all.
fn scan(text: &[u8]) -> (Fields, bool) {
    let mut found: Fields = [None; 7];
    let mut text = Text::new(text);
    while let Some(mut line) = text.line() {
        let Some(key) = line.until(b':') else {
            continue;
        };
        let index = match key {
            b"MemTotal" => 0,
            b"MemFree" => 1,
            b"MemAvailable" => 2,
            b"Buffers" => 3,
            b"Cached" => 4,
            b"SwapTotal" => 5,
            b"SwapFree" => 6,
            _ => continue,
        };
        found[index] = line.number().map(|kib| kib.saturating_mul(1024));
        // These come first; the forty-odd lines after them need no look.
        if found.iter().all(Option::is_some) {
            return (found, true);
        }
    }
    (found, false)
}

fn memory(fields: Fields) -> Option<Memory> {
    let [
        total,
        free,
        available,
        buffers,
        cached,
        swap_total,
        swap_free,
    ] = fields;
    let Some(total) = total else {
        log::debug!("meminfo: no MemTotal");
        return None;
    };
    // Kernels before 3.14 have no MemAvailable; this is what free(1) did then.
    let available = match available {
        Some(available) => available,
        None => free?
            .saturating_add(buffers.unwrap_or(0))
            .saturating_add(cached.unwrap_or(0)),
    }
    .min(total);
    let swap_total = swap_total.unwrap_or(0);
    let used = total - available;
    Some(Memory {
        total,
        used,
        available,
        usage_percent: percent(used, total),
        swap_total,
        swap_used: swap_total.saturating_sub(swap_free.unwrap_or(swap_total)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    #[test]
    fn used_is_total_minus_available() {
        let memory =
            parse(fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/meminfo").as_bytes())
                .unwrap();
        assert_eq!(memory.total, 8164548 * KIB);
        assert_eq!(memory.available, 1950080 * KIB);
        assert_eq!(memory.used, (8164548 - 1950080) * KIB);
        assert_eq!(memory.usage_percent, 76.1);
        assert_eq!((memory.swap_total, memory.swap_used), (0, 0));
    }

    #[test]
    fn swap_used_is_total_minus_free() {
        let memory = parse(fixture!("x86_64-desktop-hankb/proc/meminfo").as_bytes()).unwrap();
        assert_eq!(memory.swap_total, 19162064 * KIB);
        assert_eq!(memory.swap_used, (19162064 - 18450896) * KIB);
        let memory =
            parse(b"MemTotal: 100 kB\nMemAvailable: 50 kB\nSwapTotal: 10 kB\nSwapFree: 4 kB\n")
                .unwrap();
        assert_eq!(memory.swap_used, 6 * KIB);
    }

    // Kernels before 3.14: the 2014 node_exporter laptop, the Lantiq
    // DWR-956 (2.6, and no final newline) and an ARM OpenWrt from sysinfo#164.
    #[test]
    fn old_kernels_without_memavailable() {
        let memory =
            parse(fixture!("x86_64-linux3x-laptop-node-exporter-2014/proc/meminfo").as_bytes())
                .unwrap();
        assert_eq!(memory.available, (225472 + 22040 + 930888) * KIB);
        let text = fixture!("lantiq-ar10-dlink-dwr956-linux2.6/proc/meminfo");
        assert!(!text.ends_with('\n'));
        let memory = parse(text.as_bytes()).unwrap();
        assert_eq!(memory.total, 122976 * KIB);
        assert_eq!(memory.available, (73424 + 5000 + 15792) * KIB);
        let memory =
            parse(fixture!("openwrt-arm-3.x-no-memavailable-sysinfo164/proc/meminfo").as_bytes())
                .unwrap();
        assert_eq!(memory.available, (80288 + 7652 + 21700) * KIB);
    }

    // MikroTik hEX S (MT7621), kernel 6.1-rc2: `SecPageTables:\t       0 kB`
    // has a tab after the colon.
    #[test]
    fn mt7621_sec_page_tables_tab() {
        let text = fixture!("openwrt-mt7621-mikrotik-rb760igs-6.1rc2/proc/meminfo");
        assert!(text.contains("SecPageTables:\t"));
        let memory = parse(text.as_bytes()).unwrap();
        assert_eq!(
            (memory.total, memory.available),
            (249744 * KIB, 187364 * KIB)
        );
    }

    #[test]
    fn recent_router_and_pi_kernels() {
        for text in [
            fixture!("openwrt-24.10-ramips-128m-issue19544/proc/meminfo"),
            fixture!("rpi3bplus-raspios12-aarch64/proc/meminfo"),
            fixture!("rpi-512mb-armhf-brandywine/proc/meminfo"),
        ] {
            let memory = parse(text.as_bytes()).unwrap();
            assert!(memory.total > 0 && memory.used < memory.total);
        }
    }

    #[test]
    fn truncated_or_garbage_meminfo() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"MemTotal: 1000 kB\n"), None);
        assert_eq!(parse(b"MemFree: 1000 kB\nMemAvailable: 10 kB\n"), None);
        assert_eq!(parse(b"MemTotal: x kB\nMemAvailable: 1 kB\n"), None);
        // procfs-core's Meminfo panics on both of these.
        assert_eq!(parse("Mem\u{20ac} 5\n".as_bytes()), None);
        let huge =
            parse(b"MemTotal: 18014398509481984 kB\nMemAvailable: 99999999999999999 kB\n").unwrap();
        assert_eq!((huge.total, huge.used), (u64::MAX, 0));
        // Available above total (a torn read) never makes used negative.
        let memory = parse(b"MemTotal: 10 kB\nMemAvailable: 20 kB\n").unwrap();
        assert_eq!((memory.used, memory.usage_percent), (0, 0.0));
    }
}
