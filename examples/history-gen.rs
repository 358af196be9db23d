//! Made-up history for `vstats-relay`, driven by `scripts/bench-history.sh`:
//! a state file of `--servers` registered servers and, beside it (`NAME.db`
//! for `NAME.json`), the history database a relay would hold after
//! `--days` days of them, so that a benchmark or a picture needs no year of
//! waiting.
//!
//! Each server gets the tiers a relay keeps by default, ending at the last
//! whole step before now: minutes for the last day, quarter hours for the
//! last 31 days, hours for the last `--days` (each capped at `--days`), and
//! the days of traffic summed from the hours, as the relay sums them. Every
//! step has every row (no server is ever offline), so the size is what a
//! fleet that never sleeps costs.
//!
//! The figures are plausible rather than real. Each server has a profile
//! drawn from `--seed`: a time zone, a daily wave (weaker at weekends),
//! CPU, memory and traffic levels, a disk that fills and is cleaned up, a
//! nightly backup for some, swap and sensors for some. Each step's mean
//! has noise that shrinks with the step's length, and its maximum lies
//! above the mean by more the longer the step is, with occasional spikes
//! (CPU at 100 %, traffic several times its mean). The bytes moved are the
//! mean rates times the step.
//!
//! Rows are written server-major, `--chunk` servers a transaction per tier
//! (one call of `vstats::relay::fill_history_db` each), where a relay writes
//! a minute of every server at a time. The order hardly changes the size:
//! written time-major, 50 servers made a file 3 % smaller (SQLite's pages
//! about 88 % full either way).
//!
//! The run prints what it wrote and, as its last line, the same figures as
//! one JSON object (`rows`, `db_bytes`, `bytes_per_server`, `seconds`, ...).
//!
//! Usage: cargo run --release --example history-gen -- --state DIR/state.json
//!        [--servers N] [--days D] [--tokens FILE] [--chunk N] [--seed S]

use serde_json::json;
use std::f64::consts::TAU;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use vstats::relay::{HistoryTier, MadeUpStep, Reading, Registry};

const DAY: u64 = 86_400;
/// How far back the tiers reach by default (the relay's retention).
const MINUTES_DAYS: u64 = 1;
const QUARTERS_DAYS: u64 = 31;

struct Args {
    state: PathBuf,
    servers: usize,
    days: u64,
    tokens: Option<PathBuf>,
    chunk: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut state = None;
    let (mut servers, mut days, mut chunk, mut seed) = (1000, 366, 50, 1);
    let mut tokens = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("state") => state = Some(PathBuf::from(parser.value()?)),
            Long("servers") => servers = parser.value()?.parse()?,
            Long("days") => days = parser.value()?.parse()?,
            Long("tokens") => tokens = Some(PathBuf::from(parser.value()?)),
            Long("chunk") => chunk = parser.value()?.parse()?,
            Long("seed") => seed = parser.value()?.parse()?,
            Long("help") => {
                println!(
                    "usage: history-gen --state DIR/state.json [--servers N] [--days D] \
                     [--tokens FILE] [--chunk N] [--seed S]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let state = state.ok_or("--state is required")?;
    if servers == 0 || days == 0 || chunk == 0 {
        return Err("--servers, --days and --chunk must be above 0".into());
    }
    Ok(Args {
        state,
        servers,
        days,
        tokens,
        chunk,
        seed,
    })
}

/// splitmix64: a hash good enough to draw every figure from.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) for `(salt, time, what)`.
fn uniform(salt: u64, time: u64, what: u64) -> f64 {
    let bits = mix(salt ^ mix(time ^ mix(what)));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A draw in [-1, 1).
fn signed(salt: u64, time: u64, what: u64) -> f64 {
    2.0 * uniform(salt, time, what) - 1.0
}

/// `low` to `high`, evenly in the logarithm.
fn log_between(u: f64, low: f64, high: f64) -> f64 {
    (low.ln() + u * (high.ln() - low.ln())).exp()
}

/// What a server is like, for the whole run.
struct Profile {
    id: String,
    salt: u64,
    /// Seconds added to UTC for its daily wave.
    offset: u64,
    cpu_base: f64,
    cpu_wave: f64,
    cpu_noise: f64,
    mem_base: f64,
    mem_wave: f64,
    swap: Option<f64>,
    disk_start: f64,
    /// Percentage points a day, until a cleanup every `disk_cleanup` days.
    disk_growth: f64,
    disk_cleanup: u64,
    rx_base: f64,
    tx_ratio: f64,
    read_base: f64,
    write_base: f64,
    /// The hour (local) of a nightly backup that reads the disk hard.
    backup_hour: Option<u64>,
    cores: f64,
    temperature: Option<f64>,
    /// Spikes per minute-step, roughly.
    spikiness: f64,
}

impl Profile {
    fn new(id: String, seed: u64, index: u64) -> Profile {
        let salt = mix(seed ^ mix(index));
        let draw = |what: u64| uniform(salt, 0, what);
        // A third of the fleet mostly idle, the rest busy to varying degrees.
        let idle = draw(1) < 0.33;
        let cpu_base = if idle {
            1.0 + 4.0 * draw(2)
        } else {
            5.0 + 35.0 * draw(2)
        };
        Profile {
            id,
            salt,
            offset: (draw(3) * 24.0) as u64 * 3600,
            cpu_base,
            cpu_wave: if idle {
                3.0 * draw(4)
            } else {
                10.0 + 40.0 * draw(4)
            },
            cpu_noise: 1.0 + 6.0 * draw(5),
            mem_base: 20.0 + 60.0 * draw(6),
            mem_wave: 2.0 + 10.0 * draw(7),
            swap: (draw(8) < 0.6).then(|| 15.0 * draw(9) * draw(9)),
            disk_start: 15.0 + 50.0 * draw(10),
            disk_growth: 0.02 + 0.15 * draw(11),
            disk_cleanup: 30 + (draw(12) * 150.0) as u64,
            rx_base: log_between(draw(13), 2e3, 5e6),
            tx_ratio: log_between(draw(14), 0.1, 10.0),
            read_base: log_between(draw(15), 1e3, 2e6),
            write_base: log_between(draw(16), 5e3, 3e6),
            backup_hour: (draw(17) < 0.4).then(|| 1 + (draw(18) * 4.0) as u64),
            cores: [1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 16.0][(draw(19) * 7.0) as usize],
            temperature: (draw(20) < 0.6).then(|| 30.0 + 15.0 * draw(21)),
            spikiness: 0.001 + 0.01 * draw(22),
        }
    }

    /// The step of `secs` seconds that starts at `time`; `first` is the
    /// oldest time of the run (the disk's starting point).
    fn step(&self, time: u64, secs: u64, first: u64) -> MadeUpStep {
        let salt = self.salt;
        let u = |what: u64| uniform(salt, time, what);
        let n = |what: u64| signed(salt, time, what);
        let local = time + self.offset + secs / 2;
        let hour = (local % DAY) as f64 / 3600.0;
        // Quietest at 04:00, busiest at 16:00; weekends (1970-01-01 was a
        // Thursday) at 60 %.
        let weekday = (local / DAY + 4) % 7;
        let week = if weekday >= 5 { 0.6 } else { 1.0 };
        let wave = week * 0.5 * (1.0 - (TAU * (hour - 4.0) / 24.0).cos());
        // The mean of a longer step is smoother, its maximum further out.
        let smooth = (60.0 / secs as f64).powf(0.25);
        let reach = 1.0 + (secs as f64 / 60.0).ln();
        let spike_chance = (self.spikiness * (secs as f64 / 60.0).sqrt()).min(0.5);
        let spiked = |what: u64| u(what) < spike_chance;

        let cpu = (self.cpu_base + self.cpu_wave * wave + self.cpu_noise * smooth * n(1))
            .clamp(0.2, 100.0);
        let cpu_max = if spiked(2) {
            85.0 + 15.0 * u(3)
        } else {
            (cpu + self.cpu_noise * reach * u(3)).min(100.0)
        };

        let drift = 5.0 * (TAU * time as f64 / (14 * DAY) as f64 + self.salt as f64).sin();
        let memory =
            (self.mem_base + self.mem_wave * wave + drift + smooth * n(4)).clamp(1.0, 99.0);
        let memory_max = (memory + reach * 0.5 * u(5)).min(100.0);

        let swap = self
            .swap
            .map(|s| (s + 2.0 * (TAU * time as f64 / (9 * DAY) as f64).sin()).clamp(0.0, 100.0));
        let swap_max = swap.map(|s| (s + 0.3 * reach * u(6)).min(100.0));

        let days = time.saturating_sub(first) / DAY;
        let disk = (self.disk_start
            + self.disk_growth * (days % self.disk_cleanup) as f64
            + self.disk_growth * (time % DAY) as f64 / DAY as f64)
            .min(99.0);
        let disk_max = (disk + 0.05 * u(7)).min(100.0);

        let busy = 0.25 + wave;
        let rate = |base: f64, what: u64| base * busy * (0.4 * smooth * n(what)).exp();
        let peak = |mean: f64, what: u64| {
            if spiked(what) {
                mean * (3.0 + 7.0 * u(what + 1))
            } else {
                mean * (1.0 + 0.3 * reach * u(what + 1))
            }
        };
        let rx = rate(self.rx_base, 8);
        let tx = rate(self.rx_base * self.tx_ratio, 9);
        let backup = self.backup_hour.is_some_and(|h| (local % DAY) / 3600 == h);
        let read = rate(self.read_base, 10) * if backup { 30.0 } else { 1.0 };
        let write = rate(self.write_base, 11);

        let load = 0.02 + self.cores * cpu / 100.0 * (1.0 + 0.2 * smooth * n(12)).max(0.1);
        let load_max = if spiked(13) {
            load + self.cores * (0.5 + u(14))
        } else {
            load * (1.05 + 0.2 * reach * u(14))
        };

        let temperature = self
            .temperature
            .map(|t| t + 0.3 * cpu + 1.5 * smooth * n(15));
        let temperature_max = temperature.map(|t| t + (0.5 + reach) * u(16));

        let mean = Reading {
            values: [
                Some(cpu),
                Some(memory),
                swap,
                Some(disk),
                Some(rx),
                Some(tx),
                Some(read),
                Some(write),
                Some(load),
                temperature,
            ],
            ..Reading::default()
        };
        let max = Reading {
            values: [
                Some(cpu_max),
                Some(memory_max),
                swap_max,
                Some(disk_max),
                Some(peak(rx, 17)),
                Some(peak(tx, 19)),
                Some(peak(read, 21)),
                Some(peak(write, 23)),
                Some(load_max),
                temperature_max,
            ],
            ..Reading::default()
        };
        MadeUpStep {
            server: self.id.clone(),
            time,
            mean,
            max,
            rx_bytes: (rx * secs as f64) as u64,
            tx_bytes: (tx * secs as f64) as u64,
        }
    }
}

/// The steps of a tier: `count` of them, the last one the last whole step
/// before `now`.
fn times(now: u64, step: u64, count: u64) -> std::ops::RangeInclusive<u64> {
    let last = now - now % step - step;
    let first = last - (count - 1) * step;
    first..=last
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let db = vstats::relay::history_db_beside(&args.state);
    for path in [&args.state, &db] {
        if path.exists() {
            return Err(format!(
                "{} exists; this writes new files only",
                path.display()
            ));
        }
    }
    let started = Instant::now();
    let mut registry = Registry::empty();
    let mut ids = Vec::with_capacity(args.servers);
    let mut tokens = String::new();
    for i in 1..=args.servers {
        let (server, token) = registry
            .add(&format!("history-{i}"), "made up")
            .map_err(|e| e.to_string())?;
        ids.push(server.id);
        tokens.push_str(&token);
        tokens.push('\n');
    }
    registry
        .save(&args.state)
        .map_err(|e| format!("{}: {e}", args.state.display()))?;
    if let Some(path) = &args.tokens {
        std::fs::write(path, tokens).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let tiers = [
        (HistoryTier::Minutes, args.days.min(MINUTES_DAYS)),
        (HistoryTier::Quarters, args.days.min(QUARTERS_DAYS)),
        (HistoryTier::Hours, args.days),
    ]
    .map(|(tier, days)| {
        let step = tier.step_secs();
        (tier, times(now, step, days * DAY / step))
    });
    let first = tiers.iter().map(|(_, t)| *t.start()).min().unwrap_or(now);
    let profiles: Vec<Profile> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| Profile::new(id, args.seed, i as u64))
        .collect();

    let mut rows = [0usize; 3];
    for (done, chunk) in profiles.chunks(args.chunk).enumerate() {
        for (k, (tier, span)) in tiers.iter().enumerate() {
            let step = tier.step_secs();
            let steps = chunk.iter().flat_map(|profile| {
                span.clone()
                    .step_by(step as usize)
                    .map(move |time| profile.step(time, step, first))
            });
            rows[k] += vstats::relay::fill_history_db(&db, *tier, steps)?;
        }
        let servers = (done * args.chunk + chunk.len()).min(args.servers);
        eprint!(
            "\rhistory-gen: {servers}/{} servers, {:.0} s",
            args.servers,
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    let days_rows = days_of_traffic(&db)?;
    let seconds = started.elapsed().as_secs_f64();
    // The last connection's close folded the WAL back into the file.
    let db_bytes = file_size(&db) + file_size(&PathBuf::from(format!("{}-wal", db.display())));
    let total = rows.iter().sum::<usize>() + days_rows;
    let per_server = db_bytes as f64 / args.servers as f64;
    println!(
        "history-gen: {} servers, {} days: {} rows (minutes {}, quarters {}, hours {}, days {})",
        args.servers, args.days, total, rows[0], rows[1], rows[2], days_rows
    );
    println!(
        "history-gen: {} bytes ({:.1} MiB), {:.0} bytes a server, {:.1} bytes a row; {:.1} s, {:.0} rows/s",
        db_bytes,
        db_bytes as f64 / (1024.0 * 1024.0),
        per_server,
        db_bytes as f64 / total.max(1) as f64,
        seconds,
        total as f64 / seconds
    );
    println!(
        "history-gen: state {}, database {}",
        args.state.display(),
        db.display()
    );
    Ok(json!({
        "servers": args.servers,
        "days": args.days,
        "rows": total,
        "rows_minutes": rows[0],
        "rows_quarters": rows[1],
        "rows_hours": rows[2],
        "rows_days": days_rows,
        "db_bytes": db_bytes,
        "bytes_per_server": per_server.round(),
        "bytes_per_row": db_bytes as f64 / total.max(1) as f64,
        "seconds": seconds,
        "rows_per_s": total as f64 / seconds,
    }))
}

/// Fills the `days` table (the daily traffic a relay keeps two years of)
/// from the hours, as the relay's roll-up does: a day's bytes are the sum
/// of its hours'. Returns the rows written.
fn days_of_traffic(db: &Path) -> Result<usize, String> {
    let failed = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let conn = rusqlite::Connection::open(db).map_err(failed)?;
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO days SELECT server, time - time % {DAY}, \
             sum(rx_bytes), sum(tx_bytes) FROM hours GROUP BY server, time - time % {DAY}"
        ),
        [],
    )
    .map_err(failed)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("history-gen: {e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("history-gen: {e}");
            std::process::exit(1);
        }
    }
}
