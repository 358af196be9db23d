//! `uptime`: whole seconds since boot, from `/proc/uptime`.
//!
//! Hand-parsed rather than with procfs-core's `Uptime`, which copies the
//! file into a string and parses both numbers as floats: a float parse
//! costs more than the whole line here, every second, for whole seconds.

use super::Text;

/// `2578790.61 1999230.98`: the seconds since boot, and the idle seconds
/// of all CPUs, which must be there but are not used.
pub(crate) fn parse(text: &[u8]) -> Option<u64> {
    let mut text = Text::new(text);
    let mut line = text.line()?;
    let uptime = line.hundredths()?;
    line.hundredths()?;
    Some(uptime / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime() {
        assert_eq!(parse(b"2578790.61 1999230.98\n"), Some(2578790));
        assert_eq!(parse(b"0.99 0.00\n"), Some(0));
    }

    // procfs-core's float parse read `nan` and `-1` as seconds (then 0);
    // no kernel prints them, and what cannot be read is left out.
    #[test]
    fn garbage_uptime() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"12.5"), None);
        assert_eq!(parse(b"x y"), None);
        assert_eq!(parse(b"12.5 x"), None);
        assert_eq!(parse(b"nan 1\n"), None);
        assert_eq!(parse(b"-1.00 1.00\n"), None);
    }
}
