//! `processes`: the numeric entries of the procfs directory.
//!
//! Listing procfs costs some 600 instructions an entry (std allocates every
//! name twice): on a host with a few hundred processes, more than all the
//! other collectors together. The count moves slowly, so it is refreshed
//! every ten seconds rather than every sample.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

const REFRESH: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct ProcessCounter {
    count: Option<u64>,
    at: Option<Instant>,
}

impl ProcessCounter {
    pub(super) fn sample(&mut self, procfs: &Path) -> Option<u64> {
        if self.at.is_none_or(|at| at.elapsed() >= REFRESH) {
            self.count = count(procfs);
            self.at = Some(Instant::now());
        }
        self.count
    }
}

fn count(procfs: &Path) -> Option<u64> {
    let entries = procfs
        .read_dir()
        .map_err(|err| log::debug!("{}: {err}", procfs.display()))
        .ok()?;
    let pids = entries
        .filter_map(Result::ok)
        .filter(|entry| is_pid(entry.file_name().as_bytes()))
        .count();
    Some(pids as u64)
}

pub(crate) fn is_pid(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_numeric_names() {
        assert!(is_pid(b"1"));
        assert!(is_pid(b"23978"));
        for name in [&b""[..], b"self", b"thread-self", b"1a", b"sys"] {
            assert!(!is_pid(name));
        }
    }

    #[test]
    fn counts_live_processes_and_keeps_the_count_between_refreshes() {
        let mut counter = ProcessCounter::default();
        assert!(counter.sample(Path::new("/proc")).unwrap() >= 1);
        let kept = counter.count;
        assert_eq!(counter.sample(Path::new("/nonexistent/vstats")), kept);
        counter.at = counter.at.map(|at| at - REFRESH);
        assert_eq!(counter.sample(Path::new("/nonexistent/vstats")), None);
    }
}
