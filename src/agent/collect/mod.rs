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

pub(crate) mod cpu;
pub(crate) mod diskio;
pub(crate) mod disks;
pub(crate) mod load;
pub(crate) mod memory;
pub(crate) mod network;
pub(crate) mod os;
pub(crate) mod processes;
pub(crate) mod sockets;
pub(crate) mod thermal;
pub(crate) mod uptime;

use crate::agent::fit;
use crate::protocol::{self, Metrics};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// allocate a string per file (see [`fill`]).
    buf: Vec<u8>,
    files: Files,
    hostname: os::Hostname,
    os: protocol::Os,
    cpu: cpu::CpuCollector,
    disks: disks::DiskCollector,
    disk_io: diskio::DiskIoCollector,
    network: network::NetworkCollector,
    sensors: Vec<thermal::Sensor>,
    processes: processes::ProcessCounter,
    /// Lists were cut to the protocol's limits and the log said so: once.
    trim_logged: bool,
}

impl Collector {
    /// Reads the static facts and takes the baseline reading, so the first
    /// [`Collector::sample`] already carries real rates.
    pub fn new(paths: Paths, counted_interfaces: Option<Vec<String>>) -> Collector {
        let mut buf = vec![0; 16 * 1024];
        Collector {
            hostname: os::Hostname::new(&paths, &mut buf),
            os: os::read(&paths, &mut buf),
            cpu: cpu::CpuCollector::new(&paths, &mut buf),
            disks: disks::DiskCollector::new(&paths, &mut buf),
            disk_io: diskio::DiskIoCollector::new(&paths, &mut buf),
            network: network::NetworkCollector::new(&paths, &mut buf, counted_interfaces),
            sensors: thermal::discover(&paths, &mut buf),
            processes: processes::ProcessCounter::default(),
            trim_logged: false,
            files: Files::new(&paths),
            paths,
            buf,
        }
    }

    /// One full sample. Never fails: what cannot be read is left out.
    /// Its `timestamp` is left empty for whoever sends it whole to stamp:
    /// a patch carries none, so most samples need no clock text.
    /// Long lists are cut to [`fit::CAPS`], so that the sample keeps
    /// within the protocol's limits; the log says so once.
    pub fn sample(&mut self) -> Metrics {
        let mut sample = self.read_all();
        let trimmed = fit::fit(&mut sample, &fit::CAPS);
        if trimmed.any() && !self.trim_logged {
            self.trim_logged = true;
            log::warn!("{}", trimmed_text(&trimmed, &fit::CAPS));
        }
        sample
    }

    fn read_all(&mut self) -> Metrics {
        let (paths, files, buf) = (&self.paths, &self.files, &mut self.buf);
        Metrics {
            timestamp: String::new(),
            hostname: self.hostname.sample(paths, buf).to_owned(),
            os: self.os.clone(),
            cpu: self.cpu.sample(buf),
            memory: memory::read(&files.meminfo, buf),
            disks: self.disks.sample(paths, buf),
            disk_io: self.disk_io.sample(buf),
            network: self.network.sample(buf),
            uptime: read_parsed(&files.uptime, buf, uptime::parse),
            load_average: read_parsed(&files.loadavg, buf, load::parse),
            temperatures: thermal::read(&self.sensors, buf),
            sockets: sockets::read(&files.sockstat, &files.sockstat6, buf),
            processes: self.processes.sample(&paths.procfs),
        }
    }
}

/// What the log says, once, of lists cut to `caps`.
fn trimmed_text(trimmed: &fit::Trimmed, caps: &fit::Caps) -> String {
    let mut parts = Vec::new();
    for (left_out, cap, what) in [
        (
            trimmed.interfaces,
            caps.interfaces,
            "network interfaces (counted ones kept first)",
        ),
        (
            trimmed.disks,
            caps.disks,
            "filesystems (the one at / kept first)",
        ),
        (
            trimmed.temperatures,
            caps.temperatures,
            "temperature sensors",
        ),
    ] {
        if left_out > 0 {
            parts.push(format!("{cap} of {} {what}", cap + left_out));
        }
    }
    format!(
        "this host has more than one sample may carry: each sample lists {}, to keep \
         within the protocol's limits",
        parts.join(", ")
    )
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

fn open(path: &Path) -> Option<File> {
    File::open(path)
        .map_err(|err| log::debug!("{}: {err}", path.display()))
        .ok()
}

/// Reads `file` into `buf` one read(2) at a time, until the end or until
/// `enough` says that what came so far will do; gives the length read.
///
/// `buf` is zeroed once and kept at its largest, so reads go straight into
/// it. Not `read_to_string`: for a procfs file, whose size is 0, it asks
/// for the size (statx and lseek) before reading, and then checks that
/// the text is UTF-8; together more than parsing the bytes costs.
fn fill(
    file: &mut File,
    buf: &mut Vec<u8>,
    mut enough: impl FnMut(&[u8]) -> bool,
) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((2 * len).max(4096), 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(read) => {
                len += read;
                if enough(&buf[..len]) {
                    return Ok(len);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Reads a whole file into the reused `buf`; logs why when it cannot.
fn read_bytes<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    let len = fill(&mut open(path)?, buf, |_| false)
        .map_err(|err| log::debug!("{}: {err}", path.display()))
        .ok()?;
    Some(&buf[..len])
}

/// Reads a whole text file into the reused `buf`; logs why when it cannot,
/// or when the file is not UTF-8.
/// A one-line file read and parsed whole; says why at debug level when it
/// will not parse.
fn read_parsed<T>(path: &Path, buf: &mut Vec<u8>, parse: fn(&[u8]) -> Option<T>) -> Option<T> {
    let parsed = parse(read_bytes(path, buf)?);
    if parsed.is_none() {
        log::debug!("{}: unparsable", path.display());
    }
    parsed
}

fn read_file<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    utf8(path, read_bytes(path, buf)?)
}

/// What was read from `path` as text; logs when it is not UTF-8.
fn utf8<'b>(path: &Path, bytes: &'b [u8]) -> Option<&'b str> {
    std::str::from_utf8(bytes)
        .map_err(|err| log::debug!("{}: {err}", path.display()))
        .ok()
}

/// Reads `path` and hands its complete lines to `scan` after each read(2),
/// until `scan` says they are enough (the rest of the file cannot change
/// what it made of them) or the file ends; at the end `scan` gets the
/// whole file, a last line without a newline too. Gives what `scan` made
/// of the lines last.
///
/// So a file whose wanted lines come first is not read to its end: of
/// `/proc/stat` only the `cpu` lines, not the `intr` line with a counter
/// per interrupt, and no read(2) that returns nothing.
fn read_scanned<T>(path: &Path, buf: &mut Vec<u8>, scan: impl Fn(&[u8]) -> (T, bool)) -> Option<T> {
    let (mut last, mut enough) = (None, false);
    let len = fill(&mut open(path)?, buf, |text| {
        let lines = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |end| end + 1);
        let (value, done) = scan(&text[..lines]);
        (last, enough) = (Some((value, lines)), done);
        done
    })
    .map_err(|err| log::debug!("{}: {err}", path.display()))
    .ok()?;
    match last {
        Some((value, lines)) if enough || lines == len => Some(value),
        _ => Some(scan(&buf[..len]).0),
    }
}

/// Reads a whole text file into the reused `buf` and keeps it open, for
/// [`flagged`] to ask the kernel whether it changed since.
fn open_and_read<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<(File, &'b str)> {
    let mut file = open(path)?;
    let len = fill(&mut file, buf, |_| false)
        .map_err(|err| log::debug!("{}: {err}", path.display()))
        .ok()?;
    Some((file, utf8(path, &buf[..len])?))
}

/// The text of a procfs file, a line at a time and each line a field at a
/// time, as `str::lines` and `str::split_ascii_whitespace` would split it
/// (the kernel writes no `\r`), but over bytes and looking at each byte
/// once: the files read every sample are ASCII, so they need no UTF-8
/// check, and splitting them into lines first would scan every line twice,
/// and the `intr` line of `/proc/stat`, longer than all the `cpu` lines
/// before it, for nothing.
struct Text<'a> {
    rest: &'a [u8],
    /// Whether `rest` starts inside a line handed out already.
    in_line: bool,
}

impl<'a> Text<'a> {
    fn new(text: &'a [u8]) -> Text<'a> {
        Text {
            rest: text,
            in_line: false,
        }
    }

    /// The next line; what was left of the one before is skipped.
    fn line(&mut self) -> Option<Line<'_, 'a>> {
        if self.in_line {
            let end = self.rest.iter().position(|&b| b == b'\n');
            self.rest = end.map_or(&[], |end| &self.rest[end + 1..]);
        }
        if self.rest.is_empty() {
            return None;
        }
        self.in_line = true;
        Some(Line {
            start: self.rest,
            text: self,
        })
    }
}

/// A line of a [`Text`]; as an iterator, its fields left.
struct Line<'t, 'a> {
    /// The text from the start of the line on.
    start: &'a [u8],
    text: &'t mut Text<'a>,
}

impl<'a> Line<'_, 'a> {
    /// Takes `prefix`, which holds no newline, off the start of what is
    /// left of the line, if there.
    fn strip_prefix(&mut self, prefix: &[u8]) -> bool {
        match self.text.rest.strip_prefix(prefix) {
            Some(rest) => {
                self.text.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Skips the ASCII digits that start what is left of the line.
    fn skip_digits(&mut self) {
        let rest = self.text.rest;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.text.rest = &rest[digits..];
    }

    /// What is left of the line up to the first `delimiter`, which is
    /// taken too; `None` if the line has none.
    fn until(&mut self, delimiter: u8) -> Option<&'a [u8]> {
        let rest = self.text.rest;
        let end = rest
            .iter()
            .position(|&b| b == delimiter || b == b'\n')
            .unwrap_or(rest.len());
        if rest.get(end) != Some(&delimiter) {
            self.text.rest = &rest[end..];
            return None;
        }
        self.text.rest = &rest[end + 1..];
        Some(&rest[..end])
    }

    /// Skips `n` fields; `None` if the line has fewer.
    fn skip(&mut self, n: usize) -> Option<()> {
        for _ in 0..n {
            self.next()?;
        }
        Some(())
    }

    /// Skips the whitespace before the next field, if any, and gives what
    /// is left of the line from there.
    fn skip_blanks(&mut self) -> &'a [u8] {
        let rest = self.text.rest;
        let blanks = rest
            .iter()
            .take_while(|&&b| b.is_ascii_whitespace() && b != b'\n')
            .count();
        self.text.rest = &rest[blanks..];
        self.text.rest
    }

    /// Whether the line has no fields left.
    fn ended(&mut self) -> bool {
        self.skip_blanks().first().is_none_or(|&b| b == b'\n')
    }

    /// The next field as a counter, as `str::parse::<u64>` reads it, but
    /// without its UTF-8 check and generic paths, and looking at each byte
    /// once: there are some sixty counters a sample. `None` when there is no
    /// next field or it is not a counter.
    fn number(&mut self) -> Option<u64> {
        let field = self.skip_blanks();
        let digits = field.strip_prefix(b"+").unwrap_or(field);
        let mut n = 0u64;
        let mut len = 0;
        for &b in digits {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                if !b.is_ascii_whitespace() {
                    return None;
                }
                break;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(digit))?;
            len += 1;
        }
        self.text.rest = &digits[len..];
        (len > 0).then_some(n)
    }

    /// The next field as a decimal (`2578790.61`) in hundredths, as the
    /// kernel prints times and loads, with two places; more are cut.
    /// `None` for any other form: a sign, an exponent, `nan`.
    fn hundredths(&mut self) -> Option<u64> {
        let field = self.next()?;
        let dot = field.iter().position(|&b| b == b'.').unwrap_or(field.len());
        let fraction = field.get(dot + 1..).unwrap_or_default();
        if !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let cents = fraction.iter().chain(b"00").take(2);
        let cents = cents.fold(0, |n, digit| n * 10 + u64::from(digit - b'0'));
        digits(&field[..dot])?.checked_mul(100)?.checked_add(cents)
    }

    /// The whole line, for a log message.
    fn whole(&self) -> std::slice::EscapeAscii<'a> {
        let end = self.start.iter().position(|&b| b == b'\n');
        self.start[..end.unwrap_or(self.start.len())].escape_ascii()
    }
}

impl<'a> Iterator for Line<'_, 'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let field = self.skip_blanks();
        let end = field
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(field.len());
        self.text.rest = &field[end..];
        Some(&field[..end]).filter(|field| !field.is_empty())
    }
}

/// ASCII digits as a number; `None` if there are none, or anything else, or
/// too many.
fn digits(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        (digit <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
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
pub fn millis(elapsed: Duration) -> u64 {
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

    /// Each line's fields, as `str::lines` and `split_ascii_whitespace`
    /// would give them.
    fn split(text: &str) -> Vec<Vec<&str>> {
        let mut text = Text::new(text.as_bytes());
        let mut lines = Vec::new();
        while let Some(line) = text.line() {
            let fields = line.map(|field| std::str::from_utf8(field).unwrap());
            lines.push(fields.collect());
        }
        lines
    }

    #[test]
    fn text_splits_as_str_lines_and_split_ascii_whitespace() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\n\n",
            "\n\na  b\t c \n  \n d\x0ce\r\n",
            "  7       0 loop0 0 0 0 0 0 0\n  8  0 sda 1 2 3 4\n",
            fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/stat"),
            fixture!("lantiq-ar10-dlink-dwr956-linux2.6/proc/net/dev"),
        ] {
            let expected: Vec<Vec<_>> = text
                .lines()
                .map(|line| line.split_ascii_whitespace().collect())
                .collect();
            assert_eq!(split(text), expected, "{text:?}");
        }
    }

    #[test]
    fn a_line_left_half_read_is_skipped() {
        let mut text = Text::new(b"cpu0 1 2 3\nintr 4 5\nctxt: 6\nno colon\n");
        let mut line = text.line().unwrap();
        assert!(line.strip_prefix(b"cpu") && !line.strip_prefix(b"cpu"));
        line.skip_digits();
        assert_eq!(line.next(), Some(&b"1"[..]));
        assert_eq!(text.line().unwrap().next(), Some(&b"intr"[..]));
        let mut line = text.line().unwrap();
        assert_eq!(line.until(b':'), Some(&b"ctxt"[..]));
        assert_eq!(line.whole().to_string(), "ctxt: 6");
        let mut line = text.line().unwrap();
        assert_eq!(line.until(b':'), None);
        assert_eq!(line.next(), None);
        assert!(text.line().is_none());
    }

    #[test]
    fn decimals_read_in_hundredths() {
        let hundredths = |field: &str| Text::new(field.as_bytes()).line()?.hundredths();
        for (field, expected) in [
            ("2578790.61", Some(257879061)),
            ("0.05", Some(5)),
            ("7", Some(700)),
            ("7.", Some(700)),
            ("1.5", Some(150)),
            ("1.239", Some(123)),
            ("184467440737095516.15", Some(u64::MAX)),
            ("184467440737095516.16", None),
            (".5", None),
            ("-1.00", None),
            ("+1.00", None),
            ("1e3", None),
            ("nan", None),
            ("1.2.3", None),
            ("", None),
        ] {
            assert_eq!(hundredths(field), expected, "{field:?}");
        }
    }

    // Before the end of the file `scan` sees whole lines only, so a counter
    // cut by a read(2) is never taken; at the end it sees a last line that
    // has no newline.
    #[test]
    fn read_scanned_sees_whole_lines_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("text");
        std::fs::write(&file, "a 1\nb 2\nc 3").unwrap();
        let mut buf = Vec::new();
        let lines = |text: &[u8]| {
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        };
        let all = read_scanned(&file, &mut buf, |text| (lines(text), false));
        assert_eq!(all, Some(3));
        let until_b = read_scanned(&file, &mut buf, |text| (lines(text), text.contains(&b'b')));
        assert_eq!(until_b, Some(2));
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            read_scanned(&file, &mut buf, |text| (lines(text), false)),
            Some(0)
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            read_scanned(&missing, &mut buf, |text| (lines(text), false)),
            None
        );
    }

    #[test]
    fn a_missing_file_reads_as_none() {
        let mut buf = b"stale".to_vec();
        assert_eq!(read_file(Path::new("/nonexistent/vstats"), &mut buf), None);
        assert_eq!(read_bytes(Path::new("/nonexistent/vstats"), &mut buf), None);
    }
}
