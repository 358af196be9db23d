//! When to notify: a server offline for `--notify-after`, back online after
//! that, or a threshold rule (`disk>=90 for 5m`) holding for its duration.
//! Pure: the engine passes the time and each server's online state and
//! readings in, and gets back what changed; [`super::notify`] delivers.
//!
//! Each server has a [`Watch`]:
//! - **Seen.** A server never seen by this relay (added, its agent not
//!   yet installed) is not watched. Once seen, going offline starts a
//!   clock; if it is still offline when `--notify-after` has passed, that is
//!   notified, and only then is its return notified too, so a flap shorter
//!   than `--notify-after` sends nothing.
//! - **Rules,** evaluated on each sample, as Prometheus evaluates `for`: a
//!   rule fires once its condition has held in every sample for its
//!   duration, and resolves once it has not held for the same duration
//!   (so a value hovering at the threshold does not notify at each
//!   crossing). A sample without the metric (no swap, no sensor) changes
//!   nothing. Going offline restarts the clocks of rules not firing.
//!
//! What has been notified and not yet resolved is saved
//! ([`to_file`]/[`from_file`]) so that a restarted relay neither repeats an
//! `offline` nor forgets to send the `online` that closes it.

use super::history::{Reading, SERIES};
use super::notice::{Event, Notice};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// The rules in force unless `--alert` says otherwise.
pub const DEFAULT_RULES: [&str; 3] = ["disk>=90 for 5m", "memory>=90 for 5m", "cpu>=95 for 5m"];

/// After the relay starts, servers seen before it stopped have at least
/// this long to reconnect before they count as offline: an agent backs off
/// up to 30 s, plus its 10 s connect deadline.
pub const START_GRACE: Duration = Duration::from_secs(45);

/// The longest `for` a rule may have.
const LONGEST_HOLD: Duration = Duration::from_secs(7 * 86_400);

/// How a rule compares a value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtLeast,
    Above,
    AtMost,
    Below,
}

impl Comparison {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::AtLeast => value >= threshold,
            Comparison::Above => value > threshold,
            Comparison::AtMost => value <= threshold,
            Comparison::Below => value < threshold,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::AtLeast => ">=",
            Comparison::Above => ">",
            Comparison::AtMost => "<=",
            Comparison::Below => "<",
        }
    }

    fn words(self) -> (&'static str, &'static str) {
        match self {
            Comparison::AtLeast => ("at or above", "below"),
            Comparison::Above => ("above", "at or below"),
            Comparison::AtMost => ("at or below", "above"),
            Comparison::Below => ("below", "at or above"),
        }
    }
}

/// A threshold rule: `METRIC OP VALUE [for DURATION]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Index into [`SERIES`] (and so into [`Reading::values`]).
    metric: usize,
    comparison: Comparison,
    threshold: f64,
    hold: Duration,
    /// The rule written the one way [`Rule::parse`] prints it back: what
    /// notifications and the saved state name it by.
    text: String,
}

/// Why `--alert` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--alert: '{}': {} (a rule is like 'disk>=90 for 5m'; metrics: {})",
            self.rule,
            self.why,
            SERIES.join(", ")
        )
    }
}

impl std::error::Error for RuleError {}

impl Rule {
    /// `disk>=90 for 5m`, `cpu >= 95% for 10m`, `net_rx>10M for 1m`,
    /// `temperature>=80`, `load1>4 for 15m`. Spaces around the comparison
    /// are optional. Percentages may end in `%`; rates (bytes a second)
    /// may end in `k`, `M` or `G` (powers of 1000). Without `for`, a single
    /// sample fires it.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let refuse = |why: &str| RuleError {
            rule: text.to_owned(),
            why: why.to_owned(),
        };
        let (condition, hold) = match text.split_once(" for ") {
            Some((condition, hold)) => {
                let hold = humantime::parse_duration(hold.trim())
                    .map_err(|_| refuse("the time after 'for' is not like 30s, 5m or 1h"))?;
                if hold > LONGEST_HOLD {
                    return Err(refuse("'for' may be at most 7 days"));
                }
                (condition, hold)
            }
            None => (text, Duration::ZERO),
        };
        let at = condition
            .find(['<', '>'])
            .ok_or_else(|| refuse("no comparison (>=, >, <= or <)"))?;
        let (metric, rest) = condition.split_at(at);
        let metric = metric.trim();
        let metric = SERIES
            .iter()
            .position(|name| *name == metric)
            .ok_or_else(|| refuse(&format!("no metric named '{metric}'")))?;
        let (comparison, value) = match (rest.as_bytes()[0], rest.as_bytes().get(1)) {
            (b'>', Some(b'=')) => (Comparison::AtLeast, &rest[2..]),
            (b'<', Some(b'=')) => (Comparison::AtMost, &rest[2..]),
            (b'>', _) => (Comparison::Above, &rest[1..]),
            _ => (Comparison::Below, &rest[1..]),
        };
        let value = value.trim();
        let unit = Unit::of(metric);
        let (number, scale) = match value.char_indices().last() {
            Some((at, '%')) if unit == Unit::Percent => (&value[..at], 1.0),
            Some((at, 'k' | 'K')) if unit == Unit::Rate => (&value[..at], 1e3),
            Some((at, 'M')) if unit == Unit::Rate => (&value[..at], 1e6),
            Some((at, 'G')) if unit == Unit::Rate => (&value[..at], 1e9),
            _ => (value, 1.0),
        };
        let threshold = number
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| n * scale)
            .ok_or_else(|| refuse(&format!("'{value}' is not a number for {}", unit.noun())))?;
        let mut text = format!(
            "{}{}{}",
            SERIES[metric],
            comparison.symbol(),
            unit.threshold(threshold)
        );
        if !hold.is_zero() {
            text.push_str(&format!(" for {}", humantime::format_duration(hold)));
        }
        Ok(Rule {
            metric,
            comparison,
            threshold,
            hold,
            text,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// A sentence: `root disk usage is 93.5 %, at or above 90 % for 5m`.
    fn describe(&self, value: f64, resolved: bool) -> String {
        let unit = Unit::of(self.metric);
        let (holding, not_holding) = self.comparison.words();
        let threshold = unit.show(self.threshold);
        let value = unit.show(value);
        let what = WHAT[self.metric];
        let lasting = if self.hold.is_zero() {
            String::new()
        } else {
            format!(" for {}", humantime::format_duration(self.hold))
        };
        if resolved {
            format!("{what} is back to {value}, {not_holding} {threshold}{lasting}")
        } else {
            format!("{what} is {value}, {holding} {threshold}{lasting}")
        }
    }
}

/// Each series named for people, in [`SERIES`] order.
const WHAT: [&str; SERIES.len()] = [
    "CPU usage",
    "memory usage",
    "swap usage",
    "root disk usage",
    "network receive rate",
    "network transmit rate",
    "disk read rate",
    "disk write rate",
    "load (1 min)",
    "the hottest temperature",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Percent,
    Rate,
    Load,
    Celsius,
}

impl Unit {
    fn of(metric: usize) -> Unit {
        match SERIES[metric] {
            "cpu" | "memory" | "swap" | "disk" => Unit::Percent,
            "load1" => Unit::Load,
            "temperature" => Unit::Celsius,
            _ => Unit::Rate,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Unit::Percent => "a percentage",
            Unit::Rate => "bytes a second",
            Unit::Load => "a load",
            Unit::Celsius => "degrees Celsius",
        }
    }

    /// As a rule is written back: shortest number, rates in k/M/G.
    fn threshold(self, value: f64) -> String {
        if self == Unit::Rate {
            for (scale, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
                if value.abs() >= scale {
                    return format!("{}{suffix}", value / scale);
                }
            }
        }
        format!("{value}")
    }

    /// For people: `93.5 %`, `12.3 MB/s`, `4.20`, `81.0 °C`.
    fn show(self, value: f64) -> String {
        match self {
            Unit::Percent => format!("{} %", (value * 10.0).round() / 10.0),
            Unit::Load => format!("{value:.2}"),
            Unit::Celsius => format!("{value:.1} °C"),
            Unit::Rate => {
                for (scale, suffix) in [(1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")] {
                    if value.abs() >= scale {
                        return format!("{:.1} {suffix}", value / scale);
                    }
                }
                format!("{value:.0} B/s")
            }
        }
    }
}

/// Whether a server is watched for going offline, and how far along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Seen {
    /// Not seen by this relay yet: not watched.
    #[default]
    Unseen,
    Online,
    Offline {
        since: Instant,
        /// When it is notified, if still offline.
        due: Instant,
        notified: bool,
    },
}

/// A rule's progress on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct RuleWatch {
    /// Since when the condition has held in every sample (not firing), or
    /// has not held in any (firing).
    streak_since: Option<Instant>,
    firing: bool,
}

/// What [`Alerts`] knows of one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    presence: Seen,
    /// One per rule, in the order of [`Alerts::rules`]; empty until the
    /// first sample.
    rules: Vec<RuleWatch>,
}

impl Watch {
    /// Whether anything notified is still open: what [`to_file`] saves.
    fn is_open(&self) -> bool {
        matches!(self.presence, Seen::Offline { notified: true, .. })
            || self.rules.iter().any(|rule| rule.firing)
    }

    /// When [`Alerts::presence`] is due to notify this server offline, if
    /// it is offline and not notified yet: the time to look again. (The
    /// rules need no timer: a sample is what moves them.)
    pub fn due(&self) -> Option<Instant> {
        match self.presence {
            Seen::Offline {
                due,
                notified: false,
                ..
            } => Some(due),
            _ => None,
        }
    }
}

/// A change worth a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Offline this long, past `--notify-after`.
    Offline(Duration),
    /// Back after being offline this long (its going offline was notified).
    Online(Duration),
    /// Rule `rule` (an index into [`Alerts::rules`]) fired or resolved.
    Threshold {
        rule: usize,
        value: f64,
        resolved: bool,
    },
}

/// The rules and `--notify-after`, and whether what is open changed since
/// the state was last saved.
#[derive(Debug)]
pub struct Alerts {
    rules: Vec<Rule>,
    notify_after: Duration,
    /// Something notified opened or closed: the saved state is stale.
    pub dirty: bool,
}

impl Alerts {
    pub fn new(rules: Vec<Rule>, notify_after: Duration) -> Alerts {
        Alerts {
            rules,
            notify_after,
            dirty: false,
        }
    }

    /// The server's online state now, checked on every tick: a state
    /// that lasts less than a tick is not seen, which is the point.
    pub fn presence(&mut self, watch: &mut Watch, online: bool, now: Instant) -> Option<Change> {
        match (watch.presence, online) {
            (Seen::Unseen, false) | (Seen::Online, true) => None,
            (Seen::Unseen, true) => {
                watch.presence = Seen::Online;
                None
            }
            (
                Seen::Offline {
                    since, notified, ..
                },
                true,
            ) => {
                watch.presence = Seen::Online;
                notified.then(|| {
                    self.dirty = true;
                    Change::Online(now.saturating_duration_since(since))
                })
            }
            (Seen::Online, false) => {
                watch.presence = Seen::Offline {
                    since: now,
                    due: now + self.notify_after,
                    notified: false,
                };
                for rule in watch.rules.iter_mut().filter(|rule| !rule.firing) {
                    rule.streak_since = None;
                }
                // Due at once with `--notify-after 0`.
                self.presence(watch, false, now)
            }
            (Seen::Offline { since, due, .. }, false) => {
                let Seen::Offline { notified, .. } = &mut watch.presence else {
                    return None;
                };
                if *notified || now < due {
                    return None;
                }
                *notified = true;
                self.dirty = true;
                Some(Change::Offline(now.saturating_duration_since(since)))
            }
        }
    }

    /// A sample's reading: the rules that fired or resolved with it.
    pub fn reading(&mut self, watch: &mut Watch, reading: &Reading, now: Instant) -> Vec<Change> {
        watch.rules.resize(self.rules.len(), RuleWatch::default());
        let mut changes = Vec::new();
        for (index, (rule, state)) in self.rules.iter().zip(&mut watch.rules).enumerate() {
            let Some(value) = reading.values[rule.metric] else {
                continue;
            };
            // Firing, the streak that counts is of samples not holding.
            if rule.comparison.holds(value, rule.threshold) == state.firing {
                state.streak_since = None;
                continue;
            }
            let since = *state.streak_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= rule.hold {
                state.firing = !state.firing;
                state.streak_since = None;
                self.dirty = true;
                changes.push(Change::Threshold {
                    rule: index,
                    value,
                    resolved: !state.firing,
                });
            }
        }
        changes
    }

    /// The notification for a change of server `id`.
    pub fn notice(
        &self,
        change: &Change,
        (id, name, location): (&str, &str, &str),
        at: SystemTime,
    ) -> Notice {
        let server = if location.is_empty() {
            name.to_owned()
        } else {
            format!("{name} ({location})")
        };
        let seconds = |d: &Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
        let (event, message, rule) = match change {
            Change::Offline(lasted) => (
                Event::Offline,
                format!(
                    "{server} is offline: nothing heard from its agent for {}.",
                    seconds(lasted)
                ),
                None,
            ),
            Change::Online(lasted) => (
                Event::Online,
                format!("{server} is back online after {} offline.", seconds(lasted)),
                None,
            ),
            Change::Threshold {
                rule,
                value,
                resolved,
            } => {
                let rule = &self.rules[*rule];
                (
                    Event::Threshold,
                    format!("{server}: {}.", rule.describe(*value, *resolved)),
                    Some(rule),
                )
            }
        };
        let (value, resolved) = match change {
            Change::Threshold {
                value, resolved, ..
            } => (Some(*value), *resolved),
            _ => (None, false),
        };
        Notice {
            event,
            server_id: id.to_owned(),
            server_name: name.to_owned(),
            server_location: location.to_owned(),
            at,
            message,
            rule: rule.map(|rule| rule.text.clone()),
            value,
            resolved,
        }
    }

    /// At start, for a server seen before the relay stopped (it has a
    /// history) or notified offline then: offline until it reconnects, and
    /// notified if it has not within `--notify-after`, or [`START_GRACE`]
    /// if longer. `saved` is what [`from_file`] read for it; a notified
    /// offline keeps the time it began (`unix_secs` is the wall clock at
    /// `now`), so its end says how long it really lasted.
    pub fn restore(
        &self,
        watch: &mut Watch,
        seen: bool,
        saved: Option<&Saved>,
        now: Instant,
        unix_secs: u64,
    ) {
        let offline_since = saved.and_then(|saved| saved.offline_since);
        let notified = offline_since.is_some();
        if seen || notified {
            // A time ahead of the clock (set back since) counts from now.
            let since = offline_since
                .map(|at| Duration::from_secs(unix_secs.saturating_sub(at)))
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or(now);
            watch.presence = Seen::Offline {
                since,
                due: now + self.notify_after.max(START_GRACE),
                notified,
            };
        }
        let Some(saved) = saved else { return };
        watch.rules = self
            .rules
            .iter()
            .map(|rule| RuleWatch {
                streak_since: None,
                firing: saved.firing.contains(&rule.text),
            })
            .collect();
    }
}

/// What the alerts file holds of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// When it went offline (Unix seconds), if that was notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_since: Option<u64>,
    /// The rules firing on it, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firing: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    servers: HashMap<String, Saved>,
}

const FILE_VERSION: u32 = 1;

/// The alerts file beside the state file: `vstats-relay.alerts`.
pub fn file_beside(state: &std::path::Path) -> std::path::PathBuf {
    state.with_extension("alerts")
}

/// The open alerts of every server that has one, as JSON. `unix_now` and
/// `now` together date the offline ones.
pub fn to_file<'a>(
    alerts: &Alerts,
    watches: impl IntoIterator<Item = (&'a str, &'a Watch)>,
    now: Instant,
    unix_now: u64,
) -> Vec<u8> {
    let servers = watches
        .into_iter()
        .filter(|(_, watch)| watch.is_open())
        .map(|(id, watch)| {
            let offline_since = match watch.presence {
                Seen::Offline {
                    since,
                    notified: true,
                    ..
                } => Some(unix_now.saturating_sub(now.saturating_duration_since(since).as_secs())),
                _ => None,
            };
            let firing = alerts
                .rules
                .iter()
                .zip(&watch.rules)
                .filter(|(_, state)| state.firing)
                .map(|(rule, _)| rule.text.clone())
                .collect();
            (
                id.to_owned(),
                Saved {
                    offline_since,
                    firing,
                },
            )
        })
        .collect();
    let file = File {
        version: FILE_VERSION,
        servers,
    };
    let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Reads what [`to_file`] wrote.
pub fn from_file(bytes: &[u8]) -> Result<HashMap<String, Saved>, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FILE_VERSION {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(file.servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn alerts(rules: &[&str], notify_after: u64) -> Alerts {
        let rules = rules.iter().map(|r| Rule::parse(r).unwrap()).collect();
        Alerts::new(rules, Duration::from_secs(notify_after))
    }

    fn reading(metric: &str, value: f64) -> Reading {
        let mut reading = Reading::default();
        reading.values[SERIES.iter().position(|s| *s == metric).unwrap()] = Some(value);
        reading
    }

    /// Runs `online` at each of `seconds` after `start`; the changes seen.
    fn presences(
        alerts: &mut Alerts,
        watch: &mut Watch,
        start: Instant,
        steps: &[(u64, bool)],
    ) -> Vec<(u64, Change)> {
        steps
            .iter()
            .filter_map(|&(at, online)| {
                alerts
                    .presence(watch, online, start + Duration::from_secs(at))
                    .map(|change| (at, change))
            })
            .collect()
    }

    #[test]
    fn rules_parse_and_print_back_one_way() {
        for (text, printed) in [
            ("disk>=90 for 5m", "disk>=90 for 5m"),
            ("cpu >= 95% for 300s", "cpu>=95 for 5m"),
            ("net_rx>10M for 1m", "net_rx>10M for 1m"),
            ("net_tx > 1500k", "net_tx>1.5M"),
            ("temperature>=80", "temperature>=80"),
            ("load1<=0.5 for 1h 30m", "load1<=0.5 for 1h 30m"),
            ("swap<1", "swap<1"),
        ] {
            let rule = Rule::parse(text).unwrap();
            assert_eq!(rule.text(), printed, "{text}");
            assert_eq!(Rule::parse(printed).unwrap(), rule, "{text}");
        }
        let rule = Rule::parse("net_rx>10M for 1m").unwrap();
        assert_eq!(rule.threshold, 10e6);
        assert_eq!(rule.hold, 60 * SECOND);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, why) in [
            ("disk 90", "no comparison"),
            ("rootfs>=90", "no metric named 'rootfs'"),
            ("disk>=ninety", "not a number for a percentage"),
            ("disk>=90M", "not a number for a percentage"),
            ("net_rx>=10%", "not a number for bytes a second"),
            ("disk>=NaN", "not a number"),
            ("disk>=90 for soon", "not like 30s"),
            ("disk>=90 for 30d", "at most 7 days"),
            ("", "no comparison"),
        ] {
            let error = Rule::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.starts_with("--alert: "), "{error}");
        }
    }

    #[test]
    fn a_flap_shorter_than_notify_after_sends_nothing() {
        let mut alerts = alerts(&[], 60);
        let mut watch = Watch::default();
        let start = Instant::now();
        let changes = presences(
            &mut alerts,
            &mut watch,
            start,
            &[(0, true), (10, false), (69, false), (69, true), (200, true)],
        );
        assert_eq!(changes, []);
        assert!(!alerts.dirty);
    }

    #[test]
    fn offline_is_notified_once_after_notify_after_and_online_closes_it() {
        let mut alerts = alerts(&[], 60);
        let mut watch = Watch::default();
        let start = Instant::now();
        let changes = presences(
            &mut alerts,
            &mut watch,
            start,
            &[
                (0, true),
                (10, false),
                (69, false),
                (70, false),
                (71, false),
                (400, false),
                (430, true),
                (431, true),
            ],
        );
        assert_eq!(
            changes,
            [
                (70, Change::Offline(60 * SECOND)),
                (430, Change::Online(420 * SECOND))
            ]
        );
        assert!(alerts.dirty);
    }

    #[test]
    fn a_server_never_seen_is_not_watched() {
        let mut alerts = alerts(&[], 0);
        let mut watch = Watch::default();
        let changes = presences(
            &mut alerts,
            &mut watch,
            Instant::now(),
            &[(0, false), (1000, false)],
        );
        assert_eq!(changes, []);
    }

    #[test]
    fn notify_after_zero_notifies_at_the_next_check() {
        let mut alerts = alerts(&[], 0);
        let mut watch = Watch::default();
        let changes = presences(
            &mut alerts,
            &mut watch,
            Instant::now(),
            &[(0, true), (1, false), (2, false), (3, true)],
        );
        assert_eq!(
            changes,
            [
                (1, Change::Offline(Duration::ZERO)),
                (3, Change::Online(2 * SECOND))
            ]
        );
    }

    #[test]
    fn a_rule_fires_after_holding_its_duration_and_resolves_after_not_holding_as_long() {
        let mut alerts = alerts(&["cpu>=95 for 5m"], 60);
        let mut watch = Watch::default();
        let start = Instant::now();
        let mut fired = Vec::new();
        // Holds from 0 s with one dip at 100 s, so the streak starts again at
        // 101 s; while firing, one sample back over at 550 s restarts the
        // streak of samples under.
        for second in 0..=900 {
            let cpu = match second {
                100 => 50.0,
                0..=500 => 99.0,
                550 => 99.0, // one sample back over while firing
                _ => 20.0,
            };
            let now = start + Duration::from_secs(second);
            for change in alerts.reading(&mut watch, &reading("cpu", cpu), now) {
                fired.push((second, change));
            }
        }
        assert_eq!(
            fired,
            [
                (
                    401,
                    Change::Threshold {
                        rule: 0,
                        value: 99.0,
                        resolved: false
                    }
                ),
                (
                    851,
                    Change::Threshold {
                        rule: 0,
                        value: 20.0,
                        resolved: true
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_sample_without_the_metric_changes_nothing() {
        let mut alerts = alerts(&["swap>=50 for 10s"], 60);
        let mut watch = Watch::default();
        let start = Instant::now();
        assert_eq!(
            alerts.reading(&mut watch, &reading("swap", 80.0), start),
            []
        );
        assert_eq!(
            alerts.reading(&mut watch, &reading("cpu", 1.0), start + 5 * SECOND),
            []
        );
        let fired = alerts.reading(&mut watch, &reading("swap", 80.0), start + 10 * SECOND);
        assert_eq!(fired.len(), 1);
    }

    #[test]
    fn going_offline_restarts_the_clock_of_a_rule_not_firing() {
        let mut alerts = alerts(&["memory>=90 for 60s"], 60);
        let mut watch = Watch::default();
        let start = Instant::now();
        alerts.presence(&mut watch, true, start);
        alerts.reading(&mut watch, &reading("memory", 95.0), start);
        alerts.presence(&mut watch, false, start + 30 * SECOND);
        alerts.presence(&mut watch, true, start + 40 * SECOND);
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(
            alerts.reading(&mut watch, &reading("memory", 95.0), at(61)),
            []
        );
        assert_eq!(
            alerts
                .reading(&mut watch, &reading("memory", 95.0), at(121))
                .len(),
            1
        );
    }

    #[test]
    fn notices_read_as_sentences() {
        let alerts = alerts(&["disk>=90 for 5m", "net_rx>10M"], 60);
        let at = SystemTime::UNIX_EPOCH;
        let server = ("a1", "pi", "上海");
        let notice = alerts.notice(
            &Change::Offline(61_500 * Duration::from_millis(1)),
            server,
            at,
        );
        assert_eq!(notice.event, Event::Offline);
        assert_eq!(
            notice.message,
            "pi (上海) is offline: nothing heard from its agent for 1m 1s."
        );
        let notice = alerts.notice(&Change::Online(3600 * SECOND), ("a1", "pi", ""), at);
        assert_eq!(notice.message, "pi is back online after 1h offline.");
        let fired = Change::Threshold {
            rule: 0,
            value: 93.46,
            resolved: false,
        };
        let notice = alerts.notice(&fired, server, at);
        assert_eq!(
            notice.message,
            "pi (上海): root disk usage is 93.5 %, at or above 90 % for 5m."
        );
        assert_eq!(notice.rule.as_deref(), Some("disk>=90 for 5m"));
        assert_eq!((notice.value, notice.resolved), (Some(93.46), false));
        let resolved = Change::Threshold {
            rule: 1,
            value: 2.5e6,
            resolved: true,
        };
        let notice = alerts.notice(&resolved, server, at);
        assert_eq!(
            notice.message,
            "pi (上海): network receive rate is back to 2.5 MB/s, at or below 10.0 MB/s."
        );
        assert!(notice.resolved);
    }

    #[test]
    fn what_is_open_survives_a_restart() {
        let mut before = alerts(&["disk>=90 for 5m", "cpu>=95"], 60);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let (mut offline, mut full, mut fine) =
            (Watch::default(), Watch::default(), Watch::default());
        before.presence(&mut offline, true, at(0));
        before.presence(&mut offline, false, at(0));
        before.presence(&mut offline, false, at(60));
        before.reading(&mut full, &reading("disk", 95.0), at(0));
        before.reading(&mut full, &reading("disk", 95.0), at(300));
        before.presence(&mut fine, true, at(0));
        let bytes = to_file(
            &before,
            [("off", &offline), ("full", &full), ("fine", &fine)],
            at(100),
            1_000_000,
        );
        let saved = from_file(&bytes).unwrap();
        assert_eq!(saved.len(), 2, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(saved["off"].offline_since, Some(1_000_000 - 100));
        assert_eq!(saved["full"].firing, ["disk>=90 for 5m"]);

        // A new relay: the notified offline is not repeated, and its end is sent.
        let mut after = alerts(&["cpu>=95", "disk>=90 for 5m"], 60);
        let restart = at(1000);
        let mut offline = Watch::default();
        after.restore(&mut offline, true, saved.get("off"), restart, 1_000_900);
        let later = |s: u64| restart + Duration::from_secs(s);
        assert_eq!(after.presence(&mut offline, false, later(3600)), None);
        assert!(matches!(
            after.presence(&mut offline, true, later(3601)),
            Some(Change::Online(_))
        ));
        // The firing rule is matched by its text, whatever its position now.
        let mut full = Watch::default();
        after.restore(&mut full, true, saved.get("full"), restart, 1_000_900);
        let resolved = after.reading(&mut full, &reading("disk", 50.0), later(0));
        assert_eq!(resolved, []);
        let resolved = after.reading(&mut full, &reading("disk", 50.0), later(300));
        assert_eq!(
            resolved,
            [Change::Threshold {
                rule: 1,
                value: 50.0,
                resolved: true
            }]
        );
        assert!(from_file(b"{\"version\":2,\"servers\":{}}").is_err());
        assert!(from_file(b"not json").is_err());
    }

    #[test]
    fn after_a_start_a_server_seen_before_has_the_grace_to_reconnect() {
        let mut alerts = alerts(&[], 10);
        let start = Instant::now();
        let later = |s: u64| start + Duration::from_secs(s);
        let (mut seen, mut never) = (Watch::default(), Watch::default());
        alerts.restore(&mut seen, true, None, start, 1_000_000);
        alerts.restore(&mut never, false, None, start, 1_000_000);
        assert_eq!(alerts.presence(&mut seen, false, later(44)), None);
        assert_eq!(
            alerts.presence(&mut seen, false, later(45)),
            Some(Change::Offline(45 * SECOND))
        );
        assert_eq!(alerts.presence(&mut never, false, later(4500)), None);
        // One that reconnects in time is never notified.
        let mut back = Watch::default();
        alerts.restore(&mut back, true, None, start, 1_000_000);
        assert_eq!(alerts.presence(&mut back, true, later(20)), None);
        assert_eq!(alerts.presence(&mut back, true, later(100)), None);
    }

    #[test]
    fn a_restored_offline_counts_from_when_it_began_not_from_the_restart() {
        let mut alerts = alerts(&[], 10);
        let restart = Instant::now() + Duration::from_secs(1000);
        let later = |s: u64| restart + Duration::from_secs(s);
        // Offline (and notified) 20 s before the relay restarted, back 4 s
        // after: 24 s offline, not 4.
        let saved = Saved {
            offline_since: Some(1_000_000 - 20),
            firing: Vec::new(),
        };
        let mut watch = Watch::default();
        alerts.restore(&mut watch, true, Some(&saved), restart, 1_000_000);
        assert_eq!(
            alerts.presence(&mut watch, true, later(4)),
            Some(Change::Online(24 * SECOND))
        );
        let notice = alerts.notice(
            &Change::Online(24 * SECOND),
            ("id", "pi", ""),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(notice.message, "pi is back online after 24s offline.");
        // A saved time ahead of the clock (set back since) counts from the
        // restart, never from the future.
        let ahead = Saved {
            offline_since: Some(1_000_000 + 3600),
            firing: Vec::new(),
        };
        let mut watch = Watch::default();
        alerts.restore(&mut watch, true, Some(&ahead), restart, 1_000_000);
        assert_eq!(
            alerts.presence(&mut watch, true, later(4)),
            Some(Change::Online(4 * SECOND))
        );
    }

    #[test]
    fn a_saved_offline_from_before_the_monotonic_clock_began_counts_from_the_restart() {
        // An alerts file saying "offline since 1970": further back than an
        // Instant can go. Neither a panic nor a wrapped duration.
        let mut alerts = alerts(&[], 10);
        let restart = Instant::now();
        let saved = Saved {
            offline_since: Some(0),
            firing: Vec::new(),
        };
        let mut watch = Watch::default();
        alerts.restore(&mut watch, true, Some(&saved), restart, u64::MAX);
        let back = alerts.presence(&mut watch, true, restart + 4 * SECOND);
        assert!(
            matches!(back, Some(Change::Online(lasted)) if lasted >= 4 * SECOND),
            "{back:?}"
        );
    }
}
