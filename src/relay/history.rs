//! Each server's recent past, for charts: ten series, kept in two tiers of
//! fixed size (the last hour in 10 s steps, the last day in 5 min steps),
//! compacted to 15 bytes a step, so a server costs 9,720 bytes of points
//! however long it runs.
//!
//! Steps are aligned to wall-clock time (a step is `unix seconds / step
//! length`), so a history saved by one run of the relay lines up with the
//! samples of the next. Pure: the caller passes the time in.

use crate::protocol::{Metrics, ServerHistory};

/// The series, in the order of [`Reading::values`] and of the JSON.
pub const SERIES: [&str; 10] = [
    "cpu",
    "memory",
    "swap",
    "disk",
    "net_rx",
    "net_tx",
    "disk_read",
    "disk_write",
    "load1",
    "temperature",
];
/// Indexes into [`SERIES`]: the first four are percentages.
const PERCENTS: usize = 4;
const LOAD: usize = 8;
const TEMPERATURE: usize = 9;
const ALL_SERIES: [usize; SERIES.len()] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// One sample's values of the series; `None` where the sample lacks one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub values: [Option<f64>; SERIES.len()],
    /// The network's byte counters since boot (received, sent), from which
    /// the database's traffic totals are counted.
    pub bytes: Option<(u64, u64)>,
}

impl Reading {
    pub fn of(sample: &Metrics) -> Reading {
        let memory = sample.memory.as_ref();
        let root = sample.disks.iter().find(|disk| disk.mount == "/");
        let hottest = sample
            .temperatures
            .iter()
            .map(|t| t.celsius)
            .filter(|c| c.is_finite())
            .reduce(f64::max);
        Reading {
            values: [
                sample.cpu.as_ref().map(|cpu| cpu.usage),
                memory.filter(|m| m.total > 0).map(|m| m.usage_percent),
                memory
                    .filter(|m| m.swap_total > 0)
                    .map(|m| 100.0 * m.swap_used as f64 / m.swap_total as f64),
                root.map(|disk| disk.usage_percent),
                sample.network.as_ref().map(|n| n.rx),
                sample.network.as_ref().map(|n| n.tx),
                sample.disk_io.as_ref().map(|io| io.read_rate),
                sample.disk_io.as_ref().map(|io| io.write_rate),
                sample.load_average.as_ref().map(|load| load.one),
                hottest,
            ],
            bytes: sample.network.as_ref().map(|n| (n.rx_total, n.tx_total)),
        }
    }
}

/// A tier's shape: how long a step is and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub step_secs: u64,
    pub steps: usize,
}

/// The last hour, in 10 s steps.
pub const HOUR: Span = Span {
    step_secs: 10,
    steps: 360,
};
/// The last 24 hours, in 5 min steps.
pub const DAY: Span = Span {
    step_secs: 300,
    steps: 288,
};

/// Bytes one step takes: the four percentages one byte each (half a
/// percent apart), the four byte rates and the load two bytes each (a
/// logarithmic code, 0.07 % apart), the temperature one byte (whole °C).
pub const POINT_BYTES: usize = PERCENTS + 2 * 5 + 1;
pub type Point = [u8; POINT_BYTES];

/// "Missing" in a one-byte temperature: -128 °C.
const NO_TEMPERATURE: u8 = 0x80;

/// A step with no sample at all (the server was offline): every series
/// missing.
pub const GAP: Point = {
    let mut point = [0xff; POINT_BYTES];
    point[POINT_BYTES - 1] = NO_TEMPERATURE;
    point
};

/// Where series `index` sits in a point, and its width in bytes.
pub fn layout(index: usize) -> (usize, usize) {
    match index {
        i if i < PERCENTS => (i, 1),
        TEMPERATURE => (POINT_BYTES - 1, 1),
        i => (PERCENTS + 2 * (i - PERCENTS), 2),
    }
}

pub fn encode(index: usize, value: Option<f64>, point: &mut Point) {
    let (at, width) = layout(index);
    let Some(value) = value.filter(|v| v.is_finite()) else {
        point[at..at + width].copy_from_slice(&GAP[at..at + width]);
        return;
    };
    match index {
        i if i < PERCENTS => point[at] = (value.clamp(0.0, 100.0) * 2.0).round() as u8,
        TEMPERATURE => point[at] = (value.round().clamp(-127.0, 127.0) as i8) as u8,
        _ => {
            // log2(1 + v) in 1/1024ths: 0 stays 0, and 2^63 B/s still fits.
            let code = ((value.max(0.0) + 1.0).log2() * 1024.0).round();
            let code = code.min(f64::from(u16::MAX - 1)) as u16;
            point[at..at + 2].copy_from_slice(&code.to_le_bytes());
        }
    }
}

pub fn decode(index: usize, point: &Point) -> Option<f64> {
    // Byte by byte, not as slices against GAP: a year's read decodes
    // 175,000 of these, and the size-tuned build calls memcmp for each.
    let code = code(index, point)?;
    Some(match index {
        i if i < PERCENTS => f64::from(code) / 2.0,
        TEMPERATURE => f64::from(code),
        _ => {
            let value = (f64::from(code) / 1024.0).exp2() - 1.0;
            // Back to what the agent's rounding allows: whole B/s, load to
            // 2 decimals.
            if index == LOAD {
                (value * 100.0).round() / 100.0
            } else {
                value.round()
            }
        }
    })
}

/// Series `index`'s code in `point`, `None` for a gap. Codes order as
/// their values do.
fn code(index: usize, point: &Point) -> Option<i32> {
    let (at, _) = layout(index);
    match index {
        i if i < PERCENTS => (point[at] != 0xff).then(|| i32::from(point[at])),
        TEMPERATURE => (point[at] != NO_TEMPERATURE).then(|| i32::from(point[at] as i8)),
        _ => {
            let code = u16::from_le_bytes([point[at], point[at + 1]]);
            (code != u16::MAX).then_some(i32::from(code))
        }
    }
}

/// A point holding each series' value (`None`: a gap).
pub fn point_of(values: &[Option<f64>; SERIES.len()]) -> Point {
    let mut point = GAP;
    for (index, value) in values.iter().enumerate() {
        encode(index, *value, &mut point);
    }
    point
}

/// Keeps in `kept` each series' larger value of the two points, compared
/// in their code (which orders as the values do; a gap is smaller than
/// any value).
pub fn keep_larger(kept: &mut Point, other: &Point) {
    for index in 0..SERIES.len() {
        if code(index, other) > code(index, kept) {
            let (at, width) = layout(index);
            kept[at..at + width].copy_from_slice(&other[at..at + width]);
        }
    }
}

/// A mean of decoded values to what a reader needs: whole B/s for rates,
/// hundredths for percentages and load, tenths of a degree.
pub fn rounded(index: usize, value: f64) -> f64 {
    let scale = match index {
        TEMPERATURE => 10.0,
        i if i < PERCENTS || i == LOAD => 100.0,
        _ => 1.0,
    };
    (value * scale).round() / scale
}

/// The samples of the step in progress: sums for means, the maximum for
/// temperature.
#[derive(Debug, Clone, Default, PartialEq)]
struct Accumulator {
    step: u64,
    sums: [f64; SERIES.len()],
    counts: [u16; SERIES.len()],
}

impl Accumulator {
    /// Step `step` again, from its saved point: each value counts as one
    /// sample (the point keeps no count).
    fn resumed(step: u64, point: &Point) -> Accumulator {
        let mut open = Accumulator {
            step,
            ..Accumulator::default()
        };
        let mut saved = Reading::default();
        for (index, value) in saved.values.iter_mut().enumerate() {
            *value = decode(index, point);
        }
        open.add(&saved);
        open
    }

    fn add(&mut self, reading: &Reading) {
        for (index, value) in reading.values.iter().enumerate() {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let count = &mut self.counts[index];
            let sum = &mut self.sums[index];
            *sum = match (index, *count) {
                (_, 0) => value,
                (TEMPERATURE, _) => sum.max(value),
                _ => *sum + value,
            };
            *count = count.saturating_add(1);
        }
    }

    fn point(&self) -> Point {
        let mut point = GAP;
        for index in 0..SERIES.len() {
            let value = match (index, self.counts[index]) {
                (_, 0) => None,
                (TEMPERATURE, _) => Some(self.sums[index]),
                (_, count) => Some(self.sums[index] / f64::from(count)),
            };
            encode(index, value, &mut point);
        }
        point
    }
}

/// One tier: a ring of finished steps, and the step in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    span: Span,
    /// Empty until the first sample, then always the whole span: step `k`
    /// sits at `k % steps`, so a server's cost is fixed from its first
    /// sample on.
    points: Vec<Point>,
    /// The step number of the newest finished step.
    newest: Option<u64>,
    open: Option<Accumulator>,
}

impl Tier {
    fn new(span: Span) -> Tier {
        Tier {
            span,
            points: Vec::new(),
            newest: None,
            open: None,
        }
    }

    fn record(&mut self, unix_secs: u64, reading: &Reading) {
        if self.points.is_empty() {
            self.points = vec![GAP; self.span.steps];
        }
        let step = unix_secs / self.span.step_secs;
        match &mut self.open {
            Some(open) if open.step == step => open.add(reading),
            // A clock that went back: the sample joins the open step rather
            // than rewrite the past.
            Some(open) if step < open.step => open.add(reading),
            _ => {
                self.close();
                let mut open = Accumulator {
                    step,
                    ..Accumulator::default()
                };
                open.add(reading);
                self.open = Some(open);
            }
        }
    }

    /// Moves the step in progress into the ring, with gaps for the steps
    /// that had no sample between it and the newest.
    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if self.newest.is_some_and(|newest| open.step <= newest) {
            return;
        }
        let steps = self.span.steps as u64;
        if let Some(newest) = self.newest {
            for step in newest + 1..open.step.min(newest + 1 + steps) {
                self.points[(step % steps) as usize] = GAP;
            }
        }
        self.points[(open.step % steps) as usize] = open.point();
        self.newest = Some(open.step);
    }

    /// The finished step `step`, if the ring still holds it.
    fn finished_step(&self, step: u64) -> Option<&Point> {
        let newest = self.newest?;
        let steps = self.span.steps as u64;
        (step <= newest && newest - step < steps)
            .then(|| self.points.get((step % steps) as usize))
            .flatten()
    }

    /// The span's steps up to the one `unix_secs` falls in, as the unix
    /// time of the first and a value per series per step (`None`: no
    /// sample in that step). The last step is the one in progress, its
    /// samples so far. Steps older than the ring, or after a long silence,
    /// come out as gaps, so a chart's time axis is always the whole span.
    pub fn view(&self, unix_secs: u64) -> View {
        self.last_steps(unix_secs, self.span.steps, &ALL_SERIES)
    }

    /// As [`Tier::view`], for the `count` steps up to the one `unix_secs`
    /// falls in.
    pub fn view_until(&self, unix_secs: u64, count: usize) -> View {
        self.last_steps(unix_secs, count, &ALL_SERIES)
    }

    /// As [`Tier::view`], for the last `count` steps and the series at
    /// `indexes` only.
    fn last_steps(&self, unix_secs: u64, count: usize, indexes: &[usize]) -> View {
        let step_secs = self.span.step_secs;
        let current = unix_secs / step_secs;
        let first = (current + 1).saturating_sub(count as u64);
        let open = self.open.as_ref().map(|open| (open.step, open.point()));
        let mut series = vec![Vec::with_capacity(count); indexes.len()];
        for step in first..=current {
            let point = match &open {
                Some((open, point)) if *open == step => point,
                _ => self.finished_step(step).unwrap_or(&GAP),
            };
            for (values, &index) in series.iter_mut().zip(indexes) {
                values.push(decode(index, point));
            }
        }
        View {
            start: first * step_secs,
            step: step_secs,
            series,
        }
    }

    /// Makes a loaded tier ready to record from `unix_secs` on. The step
    /// in progress was saved as if finished: it is taken up again, so the
    /// samples after a restart join it rather than being dropped as older
    /// than the newest step. Steps after it are forgotten: a history saved
    /// while the clock was ahead (and since set back) would otherwise hold
    /// a newest step in the future, and every sample until then would be
    /// recorded nowhere. Returns whether there were any.
    fn resume(&mut self, unix_secs: u64) -> bool {
        let current = unix_secs / self.span.step_secs;
        let Some(newest) = self.newest.filter(|newest| *newest >= current) else {
            return false;
        };
        let in_progress = self.finished_step(current).copied();
        let steps = self.span.steps as u64;
        for step in current.max(newest.saturating_sub(steps - 1))..=newest {
            self.points[(step % steps) as usize] = GAP;
        }
        self.newest = current.checked_sub(1);
        self.open = in_progress
            .filter(|point| *point != GAP)
            .map(|point| Accumulator::resumed(current, &point));
        newest > current
    }

    /// The steps that hold samples, oldest first: the unix time each
    /// starts at, and its point (the step in progress as if finished).
    pub fn kept_steps(&self) -> Vec<(u64, Point)> {
        let (newest, points) = self.finished();
        let (Some(newest), false) = (newest, points.is_empty()) else {
            return Vec::new();
        };
        let steps = self.span.steps as u64;
        (newest.saturating_sub(steps - 1)..=newest)
            .map(|step| (step, points[(step % steps) as usize]))
            .filter(|(_, point)| *point != GAP)
            .map(|(step, point)| (step * self.span.step_secs, point))
            .collect()
    }

    /// Heap bytes the points take once the ring is full.
    pub const fn full_bytes(span: Span) -> usize {
        span.steps * POINT_BYTES
    }
}

/// What [`Tier::view`] returns: `series[i][k]` is series `SERIES[i]` in the
/// step starting at `start + k * step` (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub start: u64,
    pub step: u64,
    pub series: Vec<Vec<Option<f64>>>,
}

/// One server's history: both tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub hour: Tier,
    pub day: Tier,
}

impl Default for History {
    fn default() -> History {
        History {
            hour: Tier::new(HOUR),
            day: Tier::new(DAY),
        }
    }
}

impl History {
    pub fn record(&mut self, unix_secs: u64, reading: &Reading) {
        self.hour.record(unix_secs, reading);
        self.day.record(unix_secs, reading);
    }

    /// Records the hour only: the database keeps the day, and finer.
    pub fn record_hour(&mut self, unix_secs: u64, reading: &Reading) {
        self.hour.record(unix_secs, reading);
    }

    /// Forgets the day tier (kept by the database from now on), and its
    /// memory.
    pub fn drop_day(&mut self) {
        self.day = Tier::new(DAY);
    }

    /// Makes a loaded history ready to record from `unix_secs` on (see
    /// [`Tier::resume`]); whether it held steps from the future.
    pub fn resume(&mut self, unix_secs: u64) -> bool {
        let hour = self.hour.resume(unix_secs);
        self.day.resume(unix_secs) | hour
    }
}

/// The JSON of `GET /api/servers/{id}/history`: `start` and `step` in unix
/// seconds, and per series a value for each step, `null` where there was
/// no sample; with when the agent was last heard from (RFC 3339), which a
/// detail view shows beside the charts.
pub fn to_json(
    id: &str,
    last_seen: Option<String>,
    history: Option<&History>,
    span: Span,
    unix_secs: u64,
) -> String {
    struct Series<'a>(&'a View);
    impl serde::Serialize for Series<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(SERIES.len()))?;
            for (name, values) in SERIES.iter().zip(&self.0.series) {
                map.serialize_entry(name, values)?;
            }
            map.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        last_seen: Option<String>,
        range: &'static str,
        start: u64,
        step: u64,
        series: Series<'a>,
    }
    let empty = Tier::new(span);
    let tier = match history {
        Some(history) if span == DAY => &history.day,
        Some(history) => &history.hour,
        None => &empty,
    };
    let view = tier.view(unix_secs);
    let body = Body {
        id,
        last_seen,
        range: if span == DAY { "24h" } else { "1h" },
        start: view.start,
        step: view.step,
        series: Series(&view),
    };
    // Plain structs and finite numbers always serialize.
    crate::protocol::to_json(&body).unwrap_or_default()
}

/// What a dashboard's snapshot carries of each server: the series its card
/// draws, over the last hour, in [`SPARKLINE_POINTS`] points of
/// [`SPARKLINE_STEP`] seconds (one per point a card draws).
pub const SPARKLINES: [&str; 3] = ["cpu", "net_rx", "net_tx"];
pub const SPARKLINE_POINTS: usize = 120;
/// Three steps of the hour tier, averaged.
pub const SPARKLINE_STEP: u64 = 30;

/// The sparklines of [`SPARKLINES`] as of `unix_secs`: the last point is
/// the 30 s in progress, the mean of its steps so far.
pub fn sparklines(server_id: &str, history: &History, unix_secs: u64) -> ServerHistory {
    let indexes = SPARKLINES.map(|name| SERIES.iter().position(|s| *s == name).unwrap_or(0));
    let per_point = (SPARKLINE_STEP / HOUR.step_secs) as usize;
    let current = unix_secs / SPARKLINE_STEP;
    // Through the end of the current point: its later steps are gaps yet.
    let end = (current + 1) * SPARKLINE_STEP - 1;
    let view = history
        .hour
        .last_steps(end, SPARKLINE_POINTS * per_point, &indexes);
    let series = SPARKLINES
        .iter()
        .zip(view.series)
        .map(|(name, values)| {
            let points = values.chunks(per_point).map(|steps| {
                let (sum, count) = steps
                    .iter()
                    .flatten()
                    .fold((0.0, 0.0), |(sum, count), value| (sum + value, count + 1.0));
                // To what a card shows: a tenth of a percent, whole B/s.
                let scale = if *name == "cpu" { 10.0 } else { 1.0 };
                (count > 0.0).then(|| (sum / count * scale).round() / scale)
            });
            (name.to_string(), points.collect())
        })
        .collect();
    ServerHistory {
        server_id: server_id.to_owned(),
        start: view.start,
        step: SPARKLINE_STEP,
        series,
    }
}

/// Where history is saved: beside the state file, `NAME.history` for
/// `NAME.json`.
pub fn file_beside(state: &std::path::Path) -> std::path::PathBuf {
    state.with_extension("history")
}

/// Why a history file was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// Not a history file of this format, or cut short, or altered.
    Corrupt(&'static str),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Corrupt(why) => write!(f, "not a valid history file: {why}"),
        }
    }
}

const MAGIC: &[u8; 8] = b"VSTATSH1";
const NO_STEP: u64 = u64::MAX;

impl Tier {
    /// The ring with the step in progress as if finished, and the step
    /// number of the newest.
    fn finished(&self) -> (Option<u64>, Vec<Point>) {
        let mut tier = self.clone();
        tier.close();
        (tier.newest, tier.points)
    }

    fn restored(span: Span, newest: Option<u64>, points: Vec<Point>) -> Tier {
        Tier {
            points,
            newest,
            ..Tier::new(span)
        }
    }
}

/// The bytes of a history file: each server's id and both tiers, then a
/// checksum of all that, so a torn or altered file is refused whole.
pub fn to_file<'a>(servers: impl IntoIterator<Item = (&'a str, &'a History)>) -> Vec<u8> {
    let servers: Vec<_> = servers.into_iter().collect();
    // Sized once: a full fleet's file is about 10 KB a server.
    let full = 2 * 8 + 2 * 2 + Tier::full_bytes(HOUR) + Tier::full_bytes(DAY);
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + servers.len() * (full + 2 + 16) + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(servers.len() as u32).to_le_bytes());
    for (id, history) in servers {
        let id = &id.as_bytes()[..id.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        for tier in [&history.hour, &history.day] {
            let (newest, points) = tier.finished();
            out.extend_from_slice(&newest.unwrap_or(NO_STEP).to_le_bytes());
            out.extend_from_slice(&(points.len() as u16).to_le_bytes());
            out.extend_from_slice(points.as_flattened());
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// FNV-1a over 8-byte words: it catches a torn or altered file at memory
/// speed (SHA-256 of a 10,000-server history took 250 ms of the loop).
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut words = bytes.chunks_exact(8);
    let mut hash = (&mut words).fold(0xcbf2_9ce4_8422_2325_u64, |hash, word| {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        (hash ^ word).wrapping_mul(PRIME)
    });
    for &byte in words.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    hash
}

/// Reads what [`to_file`] wrote. Anything else is an error: a partial
/// history is never loaded.
pub fn from_file(bytes: &[u8]) -> Result<Vec<(String, History)>, FileError> {
    let corrupt = FileError::Corrupt;
    let body_len = bytes.len().checked_sub(8).ok_or(corrupt("too short"))?;
    let (body, sum) = bytes.split_at(body_len);
    if checksum(body).to_le_bytes() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let mut reader = Reader(body);
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(corrupt("unknown format"));
    }
    let count = u32::from_le_bytes(reader.array()?);
    let mut servers = Vec::new();
    for _ in 0..count {
        let id_len = u16::from_le_bytes(reader.array()?);
        let id = std::str::from_utf8(reader.take(usize::from(id_len))?)
            .map_err(|_| corrupt("a server id is not UTF-8"))?
            .to_owned();
        let mut tiers = [HOUR, DAY].into_iter().map(|span| {
            let newest = match u64::from_le_bytes(reader.array()?) {
                NO_STEP => None,
                step => Some(step),
            };
            let points = usize::from(u16::from_le_bytes(reader.array()?));
            if (points != 0 && points != span.steps) || (newest.is_some() && points == 0) {
                return Err(corrupt("a tier of the wrong size"));
            }
            let points = (0..points)
                .map(|_| reader.array())
                .collect::<Result<Vec<Point>, _>>()?;
            Ok(Tier::restored(span, newest, points))
        });
        let hour = tiers.next().ok_or(corrupt("no hour"))??;
        let day = tiers.next().ok_or(corrupt("no day"))??;
        servers.push((id, History { hour, day }));
    }
    if !reader.0.is_empty() {
        return Err(corrupt("bytes after the last server"));
    }
    Ok(servers)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FileError> {
        if self.0.len() < n {
            return Err(FileError::Corrupt("cut short"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FileError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Cpu, Disk, DiskIo, LoadAverage, Memory, Network, Temperature};

    const CPU: usize = 0;
    const SWAP: usize = 2;

    /// A unix time on a day boundary, so steps of both tiers start at it.
    const T: u64 = 1_800_000_000 - 1_800_000_000 % 86_400;

    fn sample(cpu: f64) -> Metrics {
        Metrics {
            cpu: Some(Cpu {
                usage: cpu,
                ..Cpu::default()
            }),
            memory: Some(Memory {
                total: 1000,
                used: 250,
                usage_percent: 25.0,
                swap_total: 400,
                swap_used: 100,
                ..Memory::default()
            }),
            disks: vec![
                Disk {
                    mount: "/boot".into(),
                    usage_percent: 90.0,
                    ..Disk::default()
                },
                Disk {
                    mount: "/".into(),
                    usage_percent: 61.5,
                    ..Disk::default()
                },
            ],
            disk_io: Some(DiskIo {
                read_rate: 4096.0,
                write_rate: 0.0,
            }),
            network: Some(Network {
                rx: 125_000.0,
                tx: 1_250_000_000.0,
                ..Network::default()
            }),
            load_average: Some(LoadAverage {
                one: 0.42,
                ..LoadAverage::default()
            }),
            temperatures: vec![
                Temperature {
                    name: "a".into(),
                    celsius: 48.3,
                },
                Temperature {
                    name: "b".into(),
                    celsius: 61.6,
                },
            ],
            ..Metrics::default()
        }
    }

    fn values_at(view: &View, k: usize) -> Vec<Option<f64>> {
        view.series.iter().map(|series| series[k]).collect()
    }

    #[test]
    fn a_reading_takes_root_disk_hottest_sensor_and_swap_share() {
        let reading = Reading::of(&sample(12.5));
        assert_eq!(
            reading.values,
            [
                Some(12.5),
                Some(25.0),
                Some(25.0),
                Some(61.5),
                Some(125_000.0),
                Some(1_250_000_000.0),
                Some(4096.0),
                Some(0.0),
                Some(0.42),
                Some(61.6),
            ]
        );
        let bare = Reading::of(&Metrics::default());
        assert_eq!(bare.values, [None; SERIES.len()]);
    }

    #[test]
    fn a_step_keeps_the_mean_and_the_hottest_temperature() {
        let mut history = History::default();
        let mut cool = sample(10.0);
        cool.temperatures[1].celsius = 30.0;
        history.record(T + 1000, &Reading::of(&cool));
        history.record(T + 1005, &Reading::of(&sample(20.0)));
        let view = history.hour.view(T + 1009);
        let last = values_at(&view, HOUR.steps - 1);
        assert_eq!(view.start, T + 1010 - 3600);
        assert_eq!(last[CPU], Some(15.0));
        assert_eq!(last[TEMPERATURE], Some(62.0));
        assert_eq!(last[SWAP], Some(25.0));
    }

    #[test]
    fn values_survive_the_compact_code_within_their_resolution() {
        let mut point = GAP;
        for (index, value) in [
            (CPU, 33.3),
            (4, 125_000.0),
            (5, 1_250_000_000.0),
            (6, 1.0),
            (7, 0.0),
            (8, 2.71),
            (TEMPERATURE, -12.4),
        ] {
            encode(index, Some(value), &mut point);
            let back = decode(index, &point).unwrap();
            let tolerance = match index {
                CPU => 0.25,
                TEMPERATURE => 0.5,
                _ => value * 0.0004 + 0.01,
            };
            assert!(
                (back - value).abs() <= tolerance,
                "{index}: {value} -> {back}"
            );
        }
        assert_eq!(decode(1, &point), None);
    }

    #[test]
    fn the_larger_of_two_points_is_found_in_their_code() {
        let (mut kept, mut other) = (GAP, GAP);
        for (index, a, b) in [
            (CPU, Some(10.0), Some(90.0)),
            (1, Some(50.0), None),
            (4, Some(1e9), Some(3.0)),
            (5, None, Some(7.0)),
            (LOAD, Some(0.5), Some(2.25)),
            (TEMPERATURE, Some(-20.0), Some(-3.0)),
        ] {
            encode(index, a, &mut kept);
            encode(index, b, &mut other);
        }
        keep_larger(&mut kept, &other);
        let values: Vec<Option<f64>> = (0..SERIES.len()).map(|i| decode(i, &kept)).collect();
        assert_eq!(values[CPU], Some(90.0));
        assert_eq!(values[1], Some(50.0));
        assert!(values[4].unwrap() > 9.9e8);
        assert_eq!(values[5], Some(7.0));
        assert_eq!(values[LOAD], Some(2.25));
        assert_eq!(values[TEMPERATURE], Some(-3.0));
        assert_eq!(values[SWAP], None, "gaps stay gaps");
    }

    #[test]
    fn silent_steps_are_gaps_and_old_steps_fall_off() {
        let mut history = History::default();
        history.record(T, &Reading::of(&sample(50.0)));
        history.record(T + 30, &Reading::of(&sample(70.0)));
        let view = history.hour.view(T + 45);
        let n = HOUR.steps;
        // Steps 0 and 3 have samples, 1 and 2 none; step 4, in progress,
        // none yet.
        assert_eq!(view.series[CPU][n - 5], Some(50.0));
        assert_eq!(view.series[CPU][n - 4], None);
        assert_eq!(view.series[CPU][n - 3], None);
        assert_eq!(view.series[CPU][n - 2], Some(70.0));
        assert_eq!(view.series[CPU][n - 1], None);
        // Over an hour later nothing of it is in the hour, all in the day.
        let later = history.hour.view(T + 30 + 3700);
        assert!(later.series.iter().flatten().all(Option::is_none));
        // 3700 s is 12 steps of 5 min and a bit: the first is the 13th last.
        let day = history.day.view(T + 3700);
        assert_eq!(day.series[CPU][DAY.steps - 13], Some(60.0));
        assert_eq!(day.series[CPU][DAY.steps - 12], None);
    }

    #[test]
    fn the_ring_holds_its_span_and_no_more() {
        let mut history = History::default();
        for second in (0..2 * 3600).step_by(10) {
            history.record(
                T + second,
                &Reading::of(&sample((second / 10 % 100) as f64)),
            );
        }
        assert_eq!(history.hour.points.len(), HOUR.steps);
        assert_eq!(history.hour.points.capacity(), HOUR.steps);
        assert_eq!(history.day.points.capacity(), DAY.steps);
        let view = history.hour.view(T + 2 * 3600);
        assert_eq!(view.series[CPU].len(), HOUR.steps);
        // The last step with a sample is 7190 s: cpu 719 % 100 = 19; the
        // first shown is 7200 - 3590 s: 361 % 100 = 61.
        assert_eq!(view.series[CPU][HOUR.steps - 1], None);
        assert_eq!(view.series[CPU][HOUR.steps - 2], Some(19.0));
        assert_eq!(view.series[CPU][0], Some(61.0));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_rewrite_the_past() {
        let mut history = History::default();
        history.record(T + 100, &Reading::of(&sample(10.0)));
        history.record(T + 110, &Reading::of(&sample(20.0)));
        history.record(T + 95, &Reading::of(&sample(40.0)));
        let view = history.hour.view(T + 120);
        let n = HOUR.steps;
        assert_eq!(view.series[CPU][n - 3], Some(10.0));
        assert_eq!(view.series[CPU][n - 2], Some(30.0));
    }

    #[test]
    fn a_saved_history_loads_back_whole_with_the_step_in_progress() {
        let mut history = History::default();
        for second in (0..400).step_by(5) {
            history.record(T + second, &Reading::of(&sample(second as f64 / 10.0)));
        }
        let bytes = to_file([("a", &history), ("b", &History::default())]);
        let loaded = from_file(&bytes).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].0, "a");
        for at in [T + 400, T + 3000] {
            assert_eq!(loaded[0].1.hour.view(at), history.hour.view(at));
            assert_eq!(loaded[0].1.day.view(at), history.day.view(at));
        }
        assert_eq!(loaded[1].1.hour.view(T), History::default().hour.view(T));
    }

    #[test]
    fn a_history_saved_with_steps_from_the_future_records_again_once_they_are_dropped() {
        // Saved while the clock was a day ahead; loaded once it is right.
        let mut ahead = History::default();
        ahead.record(T + 86_400, &Reading::of(&sample(90.0)));
        ahead.record(T + 86_410, &Reading::of(&sample(90.0)));
        let mut loaded = from_file(&to_file([("a", &ahead)])).unwrap().remove(0).1;
        let mut kept = loaded.clone();
        assert!(loaded.resume(T + 100));
        for history in [&mut loaded, &mut kept] {
            history.record(T + 100, &Reading::of(&sample(10.0)));
            history.record(T + 110, &Reading::of(&sample(20.0)));
            history.record(T + 120, &Reading::of(&sample(30.0)));
        }
        let n = HOUR.steps;
        let view = loaded.hour.view(T + 125);
        assert_eq!(
            view.series[CPU][n - 3..],
            [Some(10.0), Some(20.0), Some(30.0)]
        );
        assert!(view.series[CPU][..n - 3].iter().all(Option::is_none));
        assert_eq!(
            loaded.day.view(T + 125).series[CPU][DAY.steps - 1],
            Some(20.0)
        );
        // Kept as saved, the history lost every step it finished: each was
        // older than its newest step.
        let view = kept.hour.view(T + 125);
        assert_eq!(view.series[CPU][n - 3..], [None, None, Some(30.0)]);
    }

    #[test]
    fn a_history_file_with_its_newest_step_at_the_end_of_time_resumes_in_bounded_work() {
        // A hostile or corrupt-but-summed file: the newest step as far as a
        // u64 goes. Resuming clears at most one ring, and records again.
        let mut far = History::default();
        far.record(u64::MAX - 1, &Reading::of(&sample(90.0)));
        let mut loaded = from_file(&to_file([("a", &far)])).unwrap().remove(0).1;
        assert!(loaded.resume(T));
        loaded.record(T, &Reading::of(&sample(10.0)));
        loaded.record(T + 10, &Reading::of(&sample(20.0)));
        let view = loaded.hour.view(T + 15);
        assert_eq!(view.series[CPU][HOUR.steps - 2..], [Some(10.0), Some(20.0)]);
        assert!(
            view.series[CPU][..HOUR.steps - 2]
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn a_restart_within_a_step_takes_that_step_up_again() {
        // T is a whole 5 min: a relay stopped 100 s into a day step and
        // back 50 s later, in the same step.
        let mut before = History::default();
        before.record(T + 90, &Reading::of(&sample(10.0)));
        before.record(T + 100, &Reading::of(&sample(20.0)));
        let mut loaded = from_file(&to_file([("a", &before)])).unwrap().remove(0).1;
        assert!(!loaded.resume(T + 150), "nothing from the future");
        loaded.record(T + 150, &Reading::of(&sample(60.0)));
        loaded.record(T + 301, &Reading::of(&sample(0.0)));
        // The day's step: the saved mean (15) and the new sample (60).
        let day = loaded.day.view(T + 301);
        assert_eq!(day.series[CPU][DAY.steps - 2], Some(37.5));
        // The hour's: the saved step stays, the new ones follow.
        let hour = loaded.hour.view(T + 155);
        let n = HOUR.steps;
        assert_eq!(hour.series[CPU][n - 7..n - 5], [Some(10.0), Some(20.0)]);
        assert_eq!(hour.series[CPU][n - 1], Some(60.0));
    }

    #[test]
    fn a_torn_or_altered_history_file_is_refused_whole() {
        let mut history = History::default();
        history.record(T, &Reading::of(&sample(1.0)));
        let bytes = to_file([("a", &history)]);
        assert!(from_file(&bytes[..bytes.len() - 1]).is_err());
        assert!(from_file(&[]).is_err());
        let mut altered = bytes.clone();
        altered[12] ^= 1;
        assert_eq!(
            from_file(&altered).unwrap_err(),
            FileError::Corrupt("checksum mismatch")
        );
    }

    #[test]
    fn a_full_history_fits_in_twelve_kilobytes() {
        let full = std::mem::size_of::<History>() + Tier::full_bytes(HOUR) + Tier::full_bytes(DAY);
        assert!(full <= 12 * 1024, "{full} bytes");
        assert_eq!(Tier::full_bytes(HOUR) + Tier::full_bytes(DAY), 9_720);
        println!("a full history: {full} bytes");
    }

    #[test]
    fn sparklines_are_the_last_hour_of_three_series_in_30_s_points() {
        let mut history = History::default();
        history.record(T + 3000, &Reading::of(&sample(10.0)));
        history.record(T + 3010, &Reading::of(&sample(20.0)));
        history.record(T + 3030, &Reading::of(&sample(50.0)));
        let lines = sparklines("a", &history, T + 3035);
        assert_eq!(lines.step, 30);
        assert_eq!(lines.start, T + 3030 + 30 - 3600);
        let names: Vec<&str> = lines.series.keys().map(String::as_str).collect();
        assert_eq!(names, ["cpu", "net_rx", "net_tx"]);
        let cpu = &lines.series["cpu"];
        assert_eq!(cpu.len(), SPARKLINE_POINTS);
        // 3000-3029: the mean of its steps with samples; 3030-: in progress.
        assert_eq!(cpu[SPARKLINE_POINTS - 2..], [Some(15.0), Some(50.0)]);
        assert_eq!(cpu[SPARKLINE_POINTS - 3], None);
        let rx = lines.series["net_rx"].last().unwrap().unwrap();
        assert!((rx - 125_000.0).abs() <= 125_000.0 * 0.0004, "{rx}");
    }

    #[test]
    fn a_server_costs_its_whole_history_from_its_first_sample() {
        let mut history = History::default();
        assert_eq!(
            history.hour.points.capacity() + history.day.points.capacity(),
            0
        );
        history.record(T, &Reading::of(&sample(1.0)));
        assert_eq!(history.hour.points.capacity(), HOUR.steps);
        assert_eq!(history.day.points.capacity(), DAY.steps);
    }
}
