//! `load_average`: `/proc/loadavg`.
//!
//! Hand-parsed rather than with procfs-core's `LoadAverage`, which copies
//! the file into a string and parses the loads as `f32`: three float
//! parses cost more than the rest of the line, every second, and the
//! kernel prints two decimals, which are read here exactly.

use super::{Text, digits};
use crate::protocol::LoadAverage;

/// `0.76 0.77 0.78 1/234 5678`: the loads over 1, 5 and 15 minutes, then
/// the running and all scheduling entities and the last PID, which must be
/// there but are not used.
pub(crate) fn parse(text: &[u8]) -> Option<LoadAverage> {
    let mut text = Text::new(text);
    let mut line = text.line()?;
    let [one, five, fifteen] = [(); 3].map(|()| line.hundredths());
    let entities = line.next()?;
    let slash = entities.iter().position(|&b| b == b'/')?;
    let counts = [&entities[..slash], &entities[slash + 1..]].map(digits);
    for count in counts.into_iter().chain([line.number()]) {
        u32::try_from(count?).ok()?;
    }
    // Hundredths over 100 in f64 are the two decimals as written: 0.21,
    // not 0.20999999344348907 as an f32 would serialize.
    let load = |hundredths: Option<u64>| Some(hundredths? as f64 / 100.0);
    Some(LoadAverage {
        one: load(one)?,
        five: load(five)?,
        fifteen: load(fifteen)?,
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

    // What procfs-core's f32, rounded to two decimals, gave for every load
    // the kernel prints up to 1,000.
    #[test]
    fn loads_are_the_two_decimals_the_kernel_prints() {
        for hundredths in 0..100_000u64 {
            let text = format!(
                "{}.{:02} 0.00 0.00 1/1 1\n",
                hundredths / 100,
                hundredths % 100
            );
            let f32: f32 = text.split(' ').next().unwrap().parse().unwrap();
            let rounded = (f64::from(f32) * 100.0).round() / 100.0;
            assert_eq!(parse(text.as_bytes()).unwrap().one, rounded, "{text}");
        }
    }

    #[test]
    fn garbage_loadavg() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"0.76 0.77"), None);
        assert_eq!(parse(b"a b c 1/2 3"), None);
        assert_eq!(parse(b"0.76 0.77 0.78 1/234"), None);
        assert_eq!(parse(b"0.76 0.77 0.78 1234 5"), None);
        assert_eq!(parse(b"0.76 0.77 0.78 1/x 5"), None);
        assert_eq!(parse(b"0.76 0.77 0.78 1/2 4294967296"), None);
        assert_eq!(parse(b"-0.76 0.77 0.78 1/2 3"), None);
    }
}
