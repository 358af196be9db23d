//! The long history the database keeps (`store.rs` writes and reads it):
//! each server's samples rolled up into steps of a minute, a quarter hour
//! and an hour, every step holding the mean and the maximum of each series
//! and the bytes the network moved, plus a total of those bytes per day.
//!
//! Pure, like `history.rs`, whose compact code ([`Point`]) a step's mean
//! and maximum are stored in: what a minute holds, how finer steps combine
//! into coarser ones, which steps a request reads and how they are grouped
//! into at most [`MAX_POINTS`] points, and the JSON and CSV they are served
//! as. The caller passes the time in.

use super::history::{self, GAP, History, Point, Reading, SERIES};
use super::shared::ConnId;
use std::fmt::Write as _;
use std::time::Duration;

/// A step of the database, and the table it is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Minutes,
    Quarters,
    Hours,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Minutes, Tier::Quarters, Tier::Hours];

    pub const fn step_secs(self) -> u64 {
        match self {
            Tier::Minutes => 60,
            Tier::Quarters => 900,
            Tier::Hours => 3600,
        }
    }

    pub const fn table(self) -> &'static str {
        match self {
            Tier::Minutes => "minutes",
            Tier::Quarters => "quarters",
            Tier::Hours => "hours",
        }
    }
}

pub const DAY_SECS: u64 = 86_400;

/// How long each tier is kept, and the days of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub minutes: Duration,
    pub quarters: Duration,
    pub hours: Duration,
    pub days: Duration,
}

impl Default for Retention {
    /// A day in minutes, a month in quarter hours, a year in hours: 1,440
    /// + 2,976 + 8,784 steps a server, and two years of daily traffic.
    fn default() -> Retention {
        Retention {
            minutes: Duration::from_secs(DAY_SECS),
            quarters: Duration::from_secs(31 * DAY_SECS),
            hours: Duration::from_secs(366 * DAY_SECS),
            days: Duration::from_secs(731 * DAY_SECS),
        }
    }
}

impl Retention {
    pub fn of(&self, tier: Tier) -> Duration {
        match tier {
            Tier::Minutes => self.minutes,
            Tier::Quarters => self.quarters,
            Tier::Hours => self.hours,
        }
    }

    /// The longest a request may reach back.
    pub fn longest(&self) -> Duration {
        self.minutes.max(self.quarters).max(self.hours)
    }
}

/// One step of one server, as stored: the unix time it starts at, the mean
/// and the maximum of each series, and the bytes received and sent in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub time: u64,
    pub mean: Point,
    pub max: Point,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A finished minute of a server, for the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub server: String,
    pub step: Step,
}

/// What the engine has the database do ([`super::engine::Effect::Store`]).
#[derive(Debug, PartialEq)]
pub enum Job {
    /// The minutes finished since the last batch (a batch a minute).
    Minutes(Vec<Row>),
    /// The histories of a `NAME.history` file, once: a database that has
    /// imported one before skips it (see [`minutes_of_saved`]).
    Import(Vec<(String, Box<History>)>),
    /// A server removed from the registry: its rows are deleted.
    Forget(String),
    /// At start, the servers registered: the rows of any other (removed
    /// while the relay was stopped) are deleted.
    Keep(Vec<String>),
}

/// A read of the database for a request, planned by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub id: ConnId,
    pub server: String,
    pub tier: Tier,
    pub plan: Plan,
    pub csv: bool,
    pub range: &'static str,
    pub last_seen: Option<String>,
}

/// A read's result, for [`super::engine::Engine::handle_history_answer`]:
/// the body (JSON or CSV), or why the database could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: ConnId,
    pub body: Result<String, String>,
}

/// The minute in progress of one server.
#[derive(Debug, Clone, Default)]
struct Minute {
    start: u64,
    sums: [f64; SERIES.len()],
    maxes: [f64; SERIES.len()],
    counts: [u32; SERIES.len()],
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Minute {
    fn add(&mut self, reading: &Reading) {
        for (index, value) in reading.values.iter().enumerate() {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            if self.counts[index] == 0 {
                self.sums[index] = value;
                self.maxes[index] = value;
            } else {
                self.sums[index] += value;
                self.maxes[index] = self.maxes[index].max(value);
            }
            self.counts[index] += 1;
        }
    }

    fn step(&self) -> Step {
        let present = |index: usize| self.counts[index] > 0;
        let means = std::array::from_fn(|index| {
            present(index).then(|| self.sums[index] / f64::from(self.counts[index]))
        });
        let maxes = std::array::from_fn(|index| present(index).then_some(self.maxes[index]));
        Step {
            time: self.start,
            mean: history::point_of(&means),
            max: history::point_of(&maxes),
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
        }
    }
}

/// What one server's samples add up to, a minute at a time.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    open: Option<Box<Minute>>,
    /// The byte counters of the connection's last sample: traffic is
    /// what they moved since.
    counters: Option<(u64, u64)>,
}

impl Rollup {
    /// Adds a sample at `unix_secs`; the minute before it, if it finished.
    pub fn record(&mut self, unix_secs: u64, reading: &Reading) -> Option<Step> {
        let start = unix_secs - unix_secs % 60;
        let finished = match &self.open {
            // A clock that went back: the sample joins the open minute.
            Some(open) if start <= open.start => None,
            _ => self.open.take(),
        };
        let open = self.open.get_or_insert_with(|| {
            Box::new(Minute {
                start,
                ..Minute::default()
            })
        });
        open.add(reading);
        if let Some((rx, tx)) = reading.bytes {
            if let Some((last_rx, last_tx)) = self.counters {
                // A counter that went back was reset (a 32-bit counter
                // wrapped, an interface came back): what it shows now is
                // what it has counted since.
                open.rx_bytes += rx.checked_sub(last_rx).unwrap_or(rx);
                open.tx_bytes += tx.checked_sub(last_tx).unwrap_or(tx);
            }
            self.counters = Some((rx, tx));
        }
        finished.map(|minute| minute.step())
    }

    /// A new connection: its counters do not continue the last one's (the
    /// host may have rebooted), so the bytes of the time between are not
    /// known.
    pub fn reconnected(&mut self) {
        self.counters = None;
    }

    /// The open minute, if it started before `unix_secs`: the sweep at
    /// each minute's end, for servers that fell silent.
    pub fn finish_before(&mut self, unix_secs: u64) -> Option<Step> {
        let start = unix_secs - unix_secs % 60;
        self.open
            .take_if(|open| open.start < start)
            .map(|minute| minute.step())
    }

    /// The open minute as it is: at shutdown, so that a stop loses nothing.
    pub fn finish(&mut self) -> Option<Step> {
        self.open.take().map(|minute| minute.step())
    }
}

/// Steps being combined: the sums and counts of their means, the largest
/// of their maxima (compared in their code, which orders as the values
/// do: no decoding), and their bytes.
#[derive(Debug, Clone)]
struct Combined {
    sums: [f64; SERIES.len()],
    counts: [u32; SERIES.len()],
    peak: Point,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Default for Combined {
    fn default() -> Combined {
        Combined {
            sums: [0.0; SERIES.len()],
            counts: [0; SERIES.len()],
            peak: GAP,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }
}

impl Combined {
    fn add(&mut self, step: &Step) {
        for index in 0..SERIES.len() {
            if let Some(value) = history::decode(index, &step.mean) {
                self.sums[index] += value;
                self.counts[index] += 1;
            }
        }
        history::keep_larger(&mut self.peak, &step.max);
        self.rx_bytes = self.rx_bytes.saturating_add(step.rx_bytes);
        self.tx_bytes = self.tx_bytes.saturating_add(step.tx_bytes);
    }

    /// The mean of the means of each series.
    fn means(&self) -> [Option<f64>; SERIES.len()] {
        std::array::from_fn(|index| {
            (self.counts[index] > 0).then(|| self.sums[index] / f64::from(self.counts[index]))
        })
    }
}

/// Finer steps combined into one: the mean of their means, the maximum of
/// their maxima, the sum of their bytes. `time` is the coarser step's.
pub fn combine<'a>(time: u64, steps: impl IntoIterator<Item = &'a Step>) -> Step {
    let mut combined = Combined::default();
    for step in steps {
        combined.add(step);
    }
    Step {
        time,
        mean: history::point_of(&combined.means()),
        max: combined.peak,
        rx_bytes: combined.rx_bytes,
        tx_bytes: combined.tx_bytes,
    }
}

/// The steps of a day tier's 5 min points and an hour tier's 10 s points
/// of a `NAME.history` file, as minutes for the database: a 5 min point
/// becomes its five minutes (the file kept no maximum: it is the mean),
/// and the 10 s points of a minute combine into it (their maximum is the
/// largest 10 s mean). Where both have a minute, the hour's finer one wins.
pub fn minutes_of_saved(history: &History) -> Vec<Step> {
    let mut minutes = std::collections::BTreeMap::new();
    for (time, point) in history.day.kept_steps() {
        for minute in 0..5 {
            let step = Step {
                time: time + 60 * minute,
                mean: point,
                max: point,
                rx_bytes: 0,
                tx_bytes: 0,
            };
            minutes.insert(step.time, step);
        }
    }
    let mut tens: std::collections::BTreeMap<u64, Vec<Step>> = Default::default();
    for (time, point) in history.hour.kept_steps() {
        let step = Step {
            time,
            mean: point,
            max: point,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        tens.entry(time - time % 60).or_default().push(step);
    }
    for (time, steps) in tens {
        minutes.insert(time, combine(time, &steps));
    }
    minutes.into_values().collect()
}

/// The most points a request returns: its step is chosen for that.
pub const MAX_POINTS: u64 = 1000;

/// The named ranges, and their length.
pub const RANGES: [(&str, u64); 5] = [
    ("1h", 3600),
    ("24h", DAY_SECS),
    ("7d", 7 * DAY_SECS),
    ("30d", 30 * DAY_SECS),
    ("1y", 365 * DAY_SECS),
];

/// A history request, checked: the span it covers and how it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `1h`, `24h`, ... or `custom` for `from`/`to`.
    pub range: &'static str,
    pub from: u64,
    pub to: u64,
    pub csv: bool,
}

/// A request's parameters, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct Params<'a> {
    pub range: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub format: Option<&'a str>,
}

/// A request's parameters as its query string holds them, for [`Params`].
#[derive(Debug, Default)]
pub struct Asked([Option<String>; 4]);

impl Asked {
    /// `range`, `from`, `to` and `format`, each as `param` finds it.
    pub fn from_query(param: impl Fn(&str) -> Option<String>) -> Asked {
        Asked(["range", "from", "to", "format"].map(param))
    }

    pub fn params(&self) -> Params<'_> {
        let [range, from, to, format] = &self.0;
        Params {
            range: range.as_deref(),
            from: from.as_deref(),
            to: to.as_deref(),
            format: format.as_deref(),
        }
    }
}

/// Checks a request at `now` (unix seconds): the reason for a `400` if it
/// is wrong. `reach` is how far back history is kept.
pub fn parse_query(params: Params, now: u64, reach: Duration) -> Result<Query, String> {
    let csv = match params.format {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err("format must be json or csv".into()),
    };
    let seconds = |name: &str, text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("{name} must be a time in unix seconds, like {now}"))
    };
    let (range, from, to) = match (params.range, params.from, params.to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("give either range or from and to, not both".into());
        }
        (None, None, Some(_)) => return Err("to needs a from".into()),
        (None, Some(from), to) => {
            let from = seconds("from", from)?;
            let to = to.map_or(Ok(now), |to| seconds("to", to))?;
            ("custom", from, to.min(now))
        }
        (range, None, None) => {
            let name = range.unwrap_or("1h");
            let Some(&(name, length)) = RANGES.iter().find(|(known, _)| *known == name) else {
                return Err("range must be one of 1h, 24h, 7d, 30d, 1y".into());
            };
            (name, now.saturating_sub(length), now)
        }
    };
    if from > to {
        return Err("from is later than to".into());
    }
    let oldest = now.saturating_sub(reach.as_secs());
    if from < oldest {
        return Err(format!(
            "from is older than the history kept ({} days back)",
            reach.as_secs() / DAY_SECS
        ));
    }
    Ok(Query {
        range,
        from,
        to,
        csv,
    })
}

/// Where a request's steps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The last hour in memory, in 10 s steps.
    Memory,
    Database(Tier),
}

/// Which steps serve a request, and how many go in a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub source: Source,
    /// The seconds a point covers: a whole number of the source's steps.
    pub step: u64,
    /// The first point starts here, the last here (both multiples of
    /// `step`).
    pub first: u64,
    pub last: u64,
}

impl Plan {
    pub fn points(&self) -> usize {
        ((self.last - self.first) / self.step + 1) as usize
    }
}

/// The finest source that reaches back to `from` at `now`, and the step
/// that keeps the points at most [`MAX_POINTS`]. With `database` off, the
/// memory's hour is all there is (the caller serves `24h` from the day
/// tier itself).
pub fn plan(query: &Query, now: u64, retention: &Retention) -> Plan {
    let age = now.saturating_sub(query.from);
    let source = if age <= 3600 {
        Source::Memory
    } else {
        let tier = Tier::ALL
            .into_iter()
            .find(|tier| age <= retention.of(*tier).as_secs())
            .unwrap_or(Tier::Hours);
        Source::Database(tier)
    };
    let base = match source {
        Source::Memory => history::HOUR.step_secs,
        Source::Database(tier) => tier.step_secs(),
    };
    let span = query.to - query.from;
    let custom = query.range == "custom";
    // The points a step makes: a named range is its last whole steps; a
    // span from a time touches a step more at either end where it is not
    // aligned (the fuzzer found 1,002).
    let points = |step: u64| {
        if custom {
            query.to / step - query.from / step + 1
        } else {
            span / step
        }
    };
    let mut per_point = (span / base).div_ceil(MAX_POINTS).max(1);
    while points(base * per_point) > MAX_POINTS {
        per_point += 1;
    }
    let step = base * per_point;
    let last = query.to - query.to % step;
    // A named range is its last steps, the one in progress included (the
    // hour: 360 steps of 10 s); a span from a time, every step it touches.
    let first = if custom {
        query.from - query.from % step
    } else {
        last.saturating_sub((span / step).saturating_sub(1) * step)
    };
    Plan {
        source,
        step,
        first,
        last,
    }
}

/// What a request returns: per point, each series' mean and maximum
/// (`None`: no sample), and the bytes moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    pub start: u64,
    pub step: u64,
    pub means: Vec<[Option<f64>; SERIES.len()]>,
    /// Absent for the memory's 10 s steps, which keep no maximum.
    pub maxes: Option<Vec<[Option<f64>; SERIES.len()]>>,
    pub rx_bytes: Vec<u64>,
    pub tx_bytes: Vec<u64>,
}

/// The stored steps (oldest first, within the plan's span) grouped into
/// the plan's points.
pub fn group(plan: &Plan, steps: impl IntoIterator<Item = Step>) -> Points {
    let count = plan.points();
    // A year's 8,760 hours: their maxima are compared in code, not
    // decoded (`exp2` for each rate was most of a 1y read's time).
    let mut points = vec![Combined::default(); count];
    for step in steps {
        let index = step
            .time
            .checked_sub(plan.first)
            .map(|since| (since / plan.step) as usize);
        if let Some(point) = index.and_then(|index| points.get_mut(index)) {
            point.add(&step);
        }
    }
    Points {
        start: plan.first,
        step: plan.step,
        means: points
            .iter()
            .map(|point| {
                let means = point.means();
                std::array::from_fn(|series| {
                    means[series].map(|mean| history::rounded(series, mean))
                })
            })
            .collect(),
        maxes: Some(points.iter().map(|point| values(&point.peak)).collect()),
        rx_bytes: points.iter().map(|point| point.rx_bytes).collect(),
        tx_bytes: points.iter().map(|point| point.tx_bytes).collect(),
    }
}

fn values(point: &Point) -> [Option<f64>; SERIES.len()] {
    std::array::from_fn(|index| history::decode(index, point))
}

/// The JSON of a long history: that of `history::to_json`, with `max`
/// beside `series` and the bytes moved per point.
pub fn to_json(id: &str, last_seen: Option<String>, range: &str, points: &Points) -> String {
    struct Columns<'a>(&'a [[Option<f64>; SERIES.len()]]);
    impl serde::Serialize for Columns<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(SERIES.len()))?;
            for (index, name) in SERIES.iter().enumerate() {
                let column: Vec<Option<f64>> = self.0.iter().map(|row| row[index]).collect();
                map.serialize_entry(name, &column)?;
            }
            map.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Bytes<'a> {
        rx: &'a [u64],
        tx: &'a [u64],
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        last_seen: Option<String>,
        range: &'a str,
        start: u64,
        step: u64,
        series: Columns<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<Columns<'a>>,
        bytes: Bytes<'a>,
    }
    let body = Body {
        id,
        last_seen,
        range,
        start: points.start,
        step: points.step,
        series: Columns(&points.means),
        max: points.maxes.as_deref().map(Columns),
        bytes: Bytes {
            rx: &points.rx_bytes,
            tx: &points.tx_bytes,
        },
    };
    // Plain structs and finite numbers always serialize.
    crate::protocol::to_json(&body).unwrap_or_default()
}

/// The CSV export: a header, then a line per point with its time (RFC
/// 3339 and unix seconds), each series' mean and maximum, and the bytes.
/// An empty cell is a point without samples.
pub fn to_csv(points: &Points) -> String {
    let mut out = String::from("time,unix");
    for name in SERIES {
        let _ = write!(out, ",{name},{name}_max");
    }
    out.push_str(",rx_bytes,tx_bytes\n");
    let cell = |out: &mut String, value: Option<f64>| {
        out.push(',');
        if let Some(value) = value {
            let _ = write!(out, "{value}");
        }
    };
    for (index, means) in points.means.iter().enumerate() {
        let time = points.start + index as u64 * points.step;
        let stamp = std::time::UNIX_EPOCH + Duration::from_secs(time);
        let _ = write!(out, "{},{time}", crate::protocol::rfc3339(stamp));
        let maxes = points.maxes.as_ref().map(|maxes| maxes[index]);
        for (series, mean) in means.iter().enumerate() {
            cell(&mut out, *mean);
            cell(&mut out, maxes.and_then(|maxes| maxes[series]));
        }
        let _ = writeln!(
            out,
            ",{},{}",
            points.rx_bytes[index], points.tx_bytes[index]
        );
    }
    out
}

/// The 10 s steps of the memory's hour as points of the plan (its step a
/// multiple of 10 s).
pub fn memory_points(history: Option<&History>, plan: &Plan) -> Points {
    let hour = history::HOUR;
    let per_point = (plan.step / hour.step_secs) as usize;
    let end = plan.last + plan.step - 1;
    let count = plan.points() * per_point;
    let none = History::default();
    let view = history.unwrap_or(&none).hour.view_until(end, count);
    let mut points = Points {
        start: plan.first,
        step: plan.step,
        means: Vec::new(),
        maxes: None,
        rx_bytes: vec![0; plan.points()],
        tx_bytes: vec![0; plan.points()],
    };
    for point in 0..plan.points() {
        points.means.push(std::array::from_fn(|series| {
            let steps = &view.series[series][point * per_point..(point + 1) * per_point];
            let (sum, n) = steps
                .iter()
                .flatten()
                .fold((0.0, 0.0), |(sum, n), value| (sum + value, n + 1.0));
            (n > 0.0).then_some(sum / n)
        }));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000 - 1_800_000_000 % DAY_SECS;
    const CPU: usize = 0;

    fn reading(cpu: f64, bytes: Option<(u64, u64)>) -> Reading {
        let mut reading = Reading {
            bytes,
            ..Reading::default()
        };
        reading.values[CPU] = Some(cpu);
        reading
    }

    fn cpu(point: &Point) -> Option<f64> {
        history::decode(CPU, point)
    }

    #[test]
    fn a_minute_keeps_the_mean_the_maximum_and_the_bytes_its_counters_moved() {
        let mut rollup = Rollup::default();
        assert_eq!(rollup.record(T + 1, &reading(10.0, Some((1000, 50)))), None);
        assert_eq!(
            rollup.record(T + 20, &reading(30.0, Some((1600, 80)))),
            None
        );
        assert_eq!(
            rollup.record(T + 40, &reading(20.0, Some((1700, 90)))),
            None
        );
        let minute = rollup
            .record(T + 61, &reading(0.0, Some((1800, 95))))
            .unwrap();
        assert_eq!(minute.time, T);
        assert_eq!(cpu(&minute.mean), Some(20.0));
        assert_eq!(cpu(&minute.max), Some(30.0));
        // The first sample only sets the counters' base.
        assert_eq!((minute.rx_bytes, minute.tx_bytes), (700, 40));
        let next = rollup.finish().unwrap();
        assert_eq!((next.time, next.rx_bytes, next.tx_bytes), (T + 60, 100, 5));
    }

    #[test]
    fn a_reset_counter_counts_from_zero_and_a_new_connection_from_its_first_sample() {
        let mut rollup = Rollup::default();
        rollup.record(T, &reading(1.0, Some((5000, 5000))));
        rollup.record(T + 1, &reading(1.0, Some((300, 5100))));
        rollup.reconnected();
        rollup.record(T + 2, &reading(1.0, Some((9000, 9000))));
        rollup.record(T + 3, &reading(1.0, Some((9010, 9000))));
        let minute = rollup.finish().unwrap();
        assert_eq!((minute.rx_bytes, minute.tx_bytes), (300 + 10, 100));
    }

    #[test]
    fn the_sweep_finishes_only_minutes_that_are_over() {
        let mut rollup = Rollup::default();
        rollup.record(T + 5, &reading(1.0, None));
        assert_eq!(rollup.finish_before(T + 59), None);
        assert_eq!(rollup.finish_before(T + 60).map(|m| m.time), Some(T));
        assert_eq!(rollup.finish_before(T + 120), None);
    }

    #[test]
    fn a_clock_that_goes_back_joins_the_open_minute() {
        let mut rollup = Rollup::default();
        rollup.record(T + 70, &reading(10.0, None));
        assert_eq!(rollup.record(T + 30, &reading(30.0, None)), None);
        let minute = rollup.finish().unwrap();
        assert_eq!((minute.time, cpu(&minute.mean)), (T + 60, Some(20.0)));
    }

    #[test]
    fn a_spike_survives_every_rollup() {
        let mut rollup = Rollup::default();
        let mut minutes = Vec::new();
        for second in (0..3600).step_by(5) {
            let value = if second == 1805 { 100.0 } else { 2.0 };
            minutes.extend(rollup.record(T + second, &reading(value, None)));
        }
        minutes.extend(rollup.finish());
        assert_eq!(minutes.len(), 60);
        let quarters: Vec<Step> = minutes
            .chunks(15)
            .enumerate()
            .map(|(i, steps)| combine(T + 900 * i as u64, steps))
            .collect();
        let hour = combine(T, &quarters);
        assert_eq!(cpu(&hour.max), Some(100.0));
        // 719 samples of 2 and one of 100 in the hour, each minute's mean
        // weighed alike: (59 * 2 + (11 * 2 + 100) / 12) / 60.
        let mean = cpu(&hour.mean).unwrap();
        assert!((mean - 2.0).abs() <= 0.5, "{mean}");
    }

    #[test]
    fn combining_sums_bytes_and_skips_missing_values() {
        let a = Step {
            time: T,
            mean: GAP,
            max: GAP,
            rx_bytes: 10,
            tx_bytes: u64::MAX,
        };
        let mut b = a.clone();
        history::encode(CPU, Some(40.0), &mut b.mean);
        history::encode(CPU, Some(50.0), &mut b.max);
        let both = combine(T, [&a, &b]);
        assert_eq!((cpu(&both.mean), cpu(&both.max)), (Some(40.0), Some(50.0)));
        assert_eq!((both.rx_bytes, both.tx_bytes), (20, u64::MAX));
        assert_eq!(history::decode(1, &both.mean), None);
    }

    fn params<'a>(
        range: Option<&'a str>,
        from: Option<&'a str>,
        to: Option<&'a str>,
    ) -> Params<'a> {
        Params {
            range,
            from,
            to,
            format: None,
        }
    }

    #[test]
    fn requests_name_a_range_or_a_span_within_what_is_kept() {
        let now = T + 12_345;
        let reach = Retention::default().longest();
        let query = |p| parse_query(p, now, reach);
        let year = query(params(Some("1y"), None, None)).unwrap();
        assert_eq!(
            (year.range, year.from, year.to),
            ("1y", now - 365 * DAY_SECS, now)
        );
        assert_eq!(query(params(None, None, None)).unwrap().range, "1h");
        let (from, later) = ((T + 100).to_string(), (now + 999).to_string());
        let span = query(params(None, Some(&from), None)).unwrap();
        assert_eq!((span.range, span.from, span.to), ("custom", T + 100, now));
        let clamped = query(params(None, Some(&from), Some(&later))).unwrap();
        assert_eq!(clamped.to, now);
        let before = (T + 99).to_string();
        for (bad, why) in [
            (params(Some("2d"), None, None), "range must be one of"),
            (params(Some("1h"), Some("1"), None), "not both"),
            (params(None, None, Some("1")), "to needs a from"),
            (params(None, Some("x"), None), "from must be a time"),
            (params(None, Some("-1"), None), "from must be a time"),
            (params(None, Some(&from), Some("1e9")), "to must be a time"),
            (params(None, Some(&from), Some(&before)), "later than to"),
            (
                params(None, Some("1000"), None),
                "older than the history kept (366 days",
            ),
        ] {
            let error = query(bad).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        let csv = Params {
            format: Some("csv"),
            ..Params::default()
        };
        assert!(query(csv).unwrap().csv);
        let xml = Params {
            format: Some("xml"),
            ..Params::default()
        };
        assert!(query(xml).is_err());
    }

    #[test]
    fn each_range_reads_its_finest_tier_in_at_most_a_thousand_points() {
        let now = T + 7 * DAY_SECS + 1234;
        let retention = Retention::default();
        let reach = retention.longest();
        let mut seen = Vec::new();
        for (name, _) in RANGES {
            let query = parse_query(params(Some(name), None, None), now, reach).unwrap();
            let plan = plan(&query, now, &retention);
            assert!(plan.points() as u64 <= MAX_POINTS, "{name}: {plan:?}");
            assert_eq!(plan.first % plan.step, 0);
            assert!(plan.first <= query.from + plan.step && plan.last <= query.to);
            assert_eq!(plan.points() as u64, (query.to - query.from) / plan.step);
            seen.push((name, plan.source, plan.step));
        }
        assert_eq!(
            seen,
            [
                ("1h", Source::Memory, 10),
                ("24h", Source::Database(Tier::Minutes), 120),
                ("7d", Source::Database(Tier::Quarters), 900),
                ("30d", Source::Database(Tier::Quarters), 2700),
                ("1y", Source::Database(Tier::Hours), 32_400),
            ]
        );
    }

    #[test]
    fn a_span_that_straddles_its_steps_still_makes_at_most_a_thousand_points() {
        // 1,000 minutes and a second, from a second before a whole minute:
        // it touches 1,002 minutes (found by the fuzzer).
        let now = 1_800_000_000;
        let from = (now - 60_001).to_string();
        let query = parse_query(
            params(None, Some(&from), None),
            now,
            Retention::default().longest(),
        );
        let plan = plan(&query.unwrap(), now, &Retention::default());
        assert_eq!(plan.step, 120);
        assert!(plan.points() as u64 <= MAX_POINTS, "{plan:?}");
        assert!(plan.first <= now - 60_001);
    }

    #[test]
    fn grouped_points_are_the_mean_of_means_and_the_maximum_of_maxima() {
        let plan = Plan {
            source: Source::Database(Tier::Minutes),
            step: 120,
            first: T,
            last: T + 240,
        };
        let step = |time, value: f64, max: f64| {
            let mut step = Step {
                time,
                mean: GAP,
                max: GAP,
                rx_bytes: 1,
                tx_bytes: 2,
            };
            history::encode(CPU, Some(value), &mut step.mean);
            history::encode(CPU, Some(max), &mut step.max);
            step
        };
        let points = group(
            &plan,
            [
                step(T - 60, 99.0, 99.0),
                step(T, 10.0, 15.0),
                step(T + 60, 20.0, 40.0),
                step(T + 240, 5.0, 5.0),
            ],
        );
        assert_eq!(points.start, T);
        let cpu: Vec<_> = points.means.iter().map(|m| m[CPU]).collect();
        assert_eq!(cpu, [Some(15.0), None, Some(5.0)]);
        let max: Vec<_> = points
            .maxes
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m[CPU])
            .collect();
        assert_eq!(max, [Some(40.0), None, Some(5.0)]);
        assert_eq!(points.rx_bytes, [2, 0, 1]);
        let csv = to_csv(&points);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("time,unix,cpu,cpu_max,memory,memory_max,"));
        assert!(lines[0].ends_with(",temperature,temperature_max,rx_bytes,tx_bytes"));
        assert!(
            lines[1].starts_with(&format!("2027-01-15T00:00:00Z,{T},15,40,,")),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(",,0,0"));
        let json: serde_json::Value =
            serde_json::from_str(&to_json("a", None, "24h", &points)).unwrap();
        let column = |value: &serde_json::Value| -> Vec<Option<f64>> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(serde_json::Value::as_f64)
                .collect()
        };
        assert_eq!(
            column(&json["series"]["cpu"]),
            [Some(15.0), None, Some(5.0)]
        );
        assert_eq!(column(&json["max"]["cpu"]), [Some(40.0), None, Some(5.0)]);
        assert_eq!(json["bytes"]["tx"], serde_json::json!([4, 0, 2]));
        assert_eq!(json["step"], 120);
    }

    #[test]
    fn a_saved_history_becomes_minutes_with_the_hour_tier_winning() {
        let mut saved = History::default();
        saved.record(T, &reading(10.0, None));
        saved.record(T + 300, &reading(20.0, None));
        saved.record(T + 310, &reading(40.0, None));
        let minutes = minutes_of_saved(&saved);
        let times: Vec<u64> = minutes.iter().map(|m| m.time).collect();
        // The day's two 5 min steps as ten minutes; T..T+60 and T+300..
        // are the hour's too.
        assert_eq!(times, (0..10).map(|m| T + 60 * m).collect::<Vec<_>>());
        assert_eq!(cpu(&minutes[1].mean), Some(10.0));
        assert_eq!(cpu(&minutes[5].mean), Some(30.0));
        assert_eq!(cpu(&minutes[5].max), Some(40.0));
        assert_eq!(cpu(&minutes[6].mean), Some(30.0));
    }
}
