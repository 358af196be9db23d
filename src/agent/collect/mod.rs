//! Collectors: one file per source, each a pure parser plus a thin reader.
//!
//! Every path is rooted at [`Paths`], so tests and `--once` can point the
//! agent at a captured fixture tree instead of the live `/proc`. What cannot
//! be read is left out of the sample and logged at debug level; nothing here
//! fails or panics on odd input.

/// A fixture file's text, compiled in so parser tests stay pure.
#[cfg(test)]
macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $path
        ))
    };
}

mod cpu;
mod diskio;
mod disks;
mod load;
mod memory;
mod network;
mod os;
mod processes;
mod sockets;
mod thermal;
mod uptime;

use crate::protocol::{self, Metrics};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the agent finds the host's `/proc`, `/sys` and `/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Paths {
    /// `/proc`, `/sys` and `/` of a host whose root is mounted at `root`
    /// (a container's view of its host, or a captured fixture tree).
    pub fn under(root: &Path) -> Paths {
        Paths {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root.to_owned(),
        }
    }
}

/// The paths of a fixture tree in `tests/fixtures/`.
#[cfg(test)]
fn fixture_paths(machine: &str) -> Paths {
    Paths::under(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(machine),
    )
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

/// Takes samples; keeps the previous counters so rates need one reading.
pub struct Collector {
    paths: Paths,
    /// Every file is read into this one buffer, so steady state does not
    /// allocate a string per file.
    buf: String,
    files: Files,
    hostname: os::Hostname,
    os: protocol::Os,
    cpu: cpu::CpuCollector,
    disks: disks::DiskCollector,
    disk_io: diskio::DiskIoCollector,
    network: network::NetworkCollector,
    sensors: Vec<thermal::Sensor>,
    processes: processes::ProcessCounter,
}

impl Collector {
    /// Reads the static facts and takes the baseline reading, so the first
    /// [`Collector::sample`] already carries real rates.
    pub fn new(paths: Paths, counted_interfaces: Option<Vec<String>>) -> Collector {
        let mut buf = String::with_capacity(16 * 1024);
        Collector {
            hostname: os::Hostname::new(&paths, &mut buf),
            os: os::read(&paths, &mut buf),
            cpu: cpu::CpuCollector::new(&paths, &mut buf),
            disks: disks::DiskCollector::new(&paths, &mut buf),
            disk_io: diskio::DiskIoCollector::new(&paths, &mut buf),
            network: network::NetworkCollector::new(&paths, &mut buf, counted_interfaces),
            sensors: thermal::discover(&paths, &mut buf),
            processes: processes::ProcessCounter::default(),
            files: Files::new(&paths),
            paths,
            buf,
        }
    }

    /// One full sample. Never fails: what cannot be read is left out.
    pub fn sample(&mut self) -> Metrics {
        let (paths, files, buf) = (&self.paths, &self.files, &mut self.buf);
        Metrics {
            timestamp: protocol::rfc3339(SystemTime::now()),
            hostname: self.hostname.sample(paths, buf).to_owned(),
            os: self.os.clone(),
            cpu: self.cpu.sample(buf),
            memory: memory::read(&files.meminfo, buf),
            disks: self.disks.sample(paths, buf),
            disk_io: self.disk_io.sample(buf),
            network: self.network.sample(buf),
            uptime: uptime::read(&files.uptime, buf),
            load_average: load::read(&files.loadavg, buf),
            temperatures: thermal::read(&self.sensors, buf),
            sockets: sockets::read(&files.sockstat, &files.sockstat6, buf),
            processes: self.processes.sample(&paths.procfs),
        }
    }
}

/// The files that collectors without state of their own read every sample,
/// joined once: joining costs two allocations and a copy, some 800
/// instructions a file, every second. The collectors with state keep their
/// own.
struct Files {
    meminfo: PathBuf,
    uptime: PathBuf,
    loadavg: PathBuf,
    sockstat: PathBuf,
    sockstat6: PathBuf,
}

impl Files {
    fn new(paths: &Paths) -> Files {
        let procfs = |file| paths.procfs.join(file);
        Files {
            meminfo: procfs("meminfo"),
            uptime: procfs("uptime"),
            loadavg: procfs("loadavg"),
            sockstat: procfs("net/sockstat"),
            sockstat6: procfs("net/sockstat6"),
        }
    }
}

/// Reads a whole file into the reused `buf`; logs why when it cannot.
fn read_file<'b>(path: &Path, buf: &'b mut String) -> Option<&'b str> {
    buf.clear();
    match File::open(path).and_then(|mut file| file.read_to_string(buf)) {
        Ok(_) => Some(buf),
        Err(err) => {
            log::debug!("{}: {err}", path.display());
            None
        }
    }
}

/// Reads a whole file into the reused `buf` and keeps it open, for
/// [`flagged`] to ask the kernel whether it changed since.
fn open_and_read(path: &Path, buf: &mut String) -> Option<File> {
    buf.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_string(buf).map(|_| file))
        .map_err(|err| log::debug!("{}: {err}", path.display()))
        .ok()
}

/// Whether the kernel flagged a procfs file kept open since it was read:
/// it raises POLLPRI (with POLLERR) on `mounts` when anything is mounted or
/// unmounted (proc(5)), and on `sys/kernel/hostname` when the name is set.
/// One poll(2) with a zero timeout: no path walk, no read, no allocation.
/// Regular files (a fixture tree) never flag. A failed poll counts as a
/// change, so the caller reads the file again rather than go stale.
fn flagged(file: &File) -> bool {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|events| events.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        Err(err) => {
            log::debug!("poll: {err}");
            true
        }
    }
}

/// The previous reading of each device or interface, in the order the
/// kernel lists them, so that in steady state each lookup hits at once and
/// nothing is allocated.
struct Previous<T> {
    entries: Vec<(String, T)>,
}

impl<T> Previous<T> {
    fn new() -> Self {
        Previous {
            entries: Vec::new(),
        }
    }

    /// The entry for `name`, the `index`-th listed this time, and whether it
    /// was seen before; a new name gets `first()`.
    fn entry(&mut self, index: usize, name: &str, first: impl FnOnce() -> T) -> (&mut T, bool) {
        let index = index.min(self.entries.len());
        let seen = self.entries[index..]
            .iter()
            .position(|(known, _)| known == name);
        match seen {
            Some(offset) => self.entries.swap(index, index + offset),
            None => self.entries.insert(index, (name.to_owned(), first())),
        }
        (&mut self.entries[index].1, seen.is_some())
    }

    /// Forgets the names not listed this time, which all sit after the
    /// `listed` that were; says whether there were any.
    fn forget_after(&mut self, listed: usize) -> bool {
        let forgot = self.entries.len() > listed;
        self.entries.truncate(listed);
        forgot
    }
}

/// Bytes a second between two readings of a counter `elapsed_ms` apart,
/// whole, as the relay derives them from patches (`protocol::per_second`);
/// one that went backwards (wrapped, or its device was re-created) gives 0
/// for the interval rather than a huge number.
fn rate(now: u64, prev: u64, elapsed_ms: u64) -> f64 {
    now.checked_sub(prev)
        .map_or(0.0, |delta| protocol::per_second(delta, elapsed_ms))
}

/// Whole milliseconds, which is what [`rate`] and the protocol count in.
fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_of_a_counter_that_went_backwards_is_zero() {
        assert_eq!(rate(100, 200, 1000), 0.0);
        assert_eq!(rate(300, 100, 2000), 100.0);
        assert_eq!(rate(300, 100, 0), 0.0);
    }

    #[test]
    fn rates_are_whole_bytes_per_second() {
        assert_eq!(rate(1000, 0, 3000), 333.0);
        assert_eq!(rate(2000, 0, 3000), 667.0);
        assert_eq!(rate(1500, 0, 1001), 1499.0);
    }

    #[test]
    fn previous_follows_the_kernel_order() {
        let mut previous = Previous::new();
        for (index, name) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(previous.entry(index, name, || 1), (&mut 1, false));
        }
        // b went away, d appeared, c moved first.
        for (index, name) in ["c", "a", "d"].into_iter().enumerate() {
            let (value, seen) = previous.entry(index, name, || 2);
            assert_eq!(
                (*value, seen),
                (if name == "d" { 2 } else { 1 }, name != "d")
            );
        }
        assert!(previous.forget_after(3));
        assert!(!previous.forget_after(3));
        let names: Vec<_> = previous
            .entries
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["c", "a", "d"]);
    }

    #[test]
    fn a_missing_file_reads_as_none() {
        let mut buf = String::from("stale");
        assert_eq!(read_file(Path::new("/nonexistent/vstats"), &mut buf), None);
    }
}
