//! `temperatures`: `sysfs/class/thermal` zones and `sysfs/class/hwmon` chips.
//!
//! Sensors are found once, when the collector starts (hwmon drivers load at
//! boot); each sample only reads their inputs.

use super::{Paths, read_file};
use crate::protocol::Temperature;
use std::path::{Path, PathBuf};

pub(super) struct Sensor {
    name: String,
    input: PathBuf,
}

pub(super) fn discover(paths: &Paths, buf: &mut Vec<u8>) -> Vec<Sensor> {
    let mut sensors = Vec::new();
    let mut zone_types = Vec::new();
    for (index, zone) in numbered(&paths.sysfs.join("class/thermal"), "thermal_zone", "") {
        let name =
            read_name(&zone.join("type"), buf).unwrap_or_else(|| format!("thermal_zone{index}"));
        zone_types.push(name.replace('-', "_"));
        sensors.push(Sensor {
            name,
            input: zone.join("temp"),
        });
    }
    for (index, hwmon) in numbered(&paths.sysfs.join("class/hwmon"), "hwmon", "") {
        let chip = read_name(&hwmon.join("name"), buf).unwrap_or_else(|| format!("hwmon{index}"));
        // A thermal zone also registers with hwmon (`cpu-thermal` as
        // `cpu_thermal`); list it once.
        if zone_types.contains(&chip.replace('-', "_")) {
            continue;
        }
        for (index, input) in numbered(&hwmon, "temp", "_input") {
            let label = read_name(&hwmon.join(format!("temp{index}_label")), buf);
            sensors.push(Sensor {
                name: sensor_name(&chip, label.as_deref(), index),
                input,
            });
        }
    }
    sensors
}

pub(super) fn read(sensors: &[Sensor], buf: &mut Vec<u8>) -> Vec<Temperature> {
    sensors
        .iter()
        .filter_map(|sensor| {
            let celsius = read_file(&sensor.input, buf).and_then(parse_millidegrees)?;
            Some(Temperature {
                name: sensor.name.clone(),
                celsius,
            })
        })
        .collect()
}

/// Celsius from sysfs millidegrees; `None` for garbage and for readings no
/// working sensor gives (disconnected probes report -273 °C or 255 °C).
pub(crate) fn parse_millidegrees(text: &str) -> Option<f64> {
    let millidegrees = text.trim().parse::<i64>().ok()?;
    let celsius = millidegrees as f64 / 1000.0;
    if !(-50.0..=150.0).contains(&celsius) {
        log::debug!("temperature {celsius} °C out of range");
        return None;
    }
    // To the tenth a person reads, rounded from the exact hundreds of
    // millidegrees: 45450 is 45.5, where 45.45 * 10 in floating point would
    // round down.
    Some((millidegrees as f64 / 100.0).round() / 10.0)
}

/// `coretemp Core 0` with a label, else `nvme temp1`.
fn sensor_name(chip: &str, label: Option<&str>, index: u32) -> String {
    match label {
        Some(label) => format!("{chip} {label}"),
        None => format!("{chip} temp{index}"),
    }
}

fn read_name(path: &Path, buf: &mut Vec<u8>) -> Option<String> {
    read_file(path, buf)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// Entries of `dir` named `<prefix>N<suffix>`, in numeric order.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = dir.read_dir() else {
        log::debug!("{}: unreadable", dir.display());
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let index = numbered_index(name.to_str()?, prefix, suffix)?;
            Some((index, entry.path()))
        })
        .collect();
    found.sort_unstable();
    found
}

/// The number in a name such as `thermal_zone3` or `temp2_input`.
pub(crate) fn numbered_index(name: &str, prefix: &str, suffix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::collect::fixture_paths;

    fn temperatures(machine: &str) -> Vec<(String, f64)> {
        let mut buf = Vec::new();
        let sensors = discover(&fixture_paths(machine), &mut buf);
        read(&sensors, &mut buf)
            .into_iter()
            .map(|t| (t.name, t.celsius))
            .collect()
    }

    #[test]
    fn millidegrees() {
        assert_eq!(parse_millidegrees("45464\n"), Some(45.5));
        assert_eq!(parse_millidegrees("45450"), Some(45.5));
        assert_eq!(parse_millidegrees("45449"), Some(45.4));
        assert_eq!(parse_millidegrees("-5050"), Some(-5.1));
        assert_eq!(parse_millidegrees("-5000"), Some(-5.0));
        assert_eq!(parse_millidegrees("-273150\n"), None);
        assert_eq!(parse_millidegrees("255000"), None);
        assert_eq!(parse_millidegrees(""), None);
        assert_eq!(parse_millidegrees("4x"), None);
        assert_eq!(parse_millidegrees("99999999999999999999999"), None);
    }

    // node_exporter's coretemp fixture: labels, and temp inputs in numeric order.
    #[test]
    fn hwmon_chip_and_label() {
        let found = temperatures("x86_64-coretemp-node-exporter-fixture");
        let names: Vec<_> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "coretemp Physical id 0",
                "coretemp Core 0",
                "coretemp Core 1",
                "coretemp Core 2",
                "coretemp Core 3"
            ]
        );
        assert_eq!(found[0].1, 55.0);
    }

    // Dell laptop (shredos#48): eight hwmon chips, only nvme has a temperature here.
    #[test]
    fn hwmon_chips_without_temperatures_give_nothing() {
        assert_eq!(
            temperatures("x86_64-dell-laptop-hwmon-shredos48"),
            [("nvme Composite".to_owned(), 29.9)]
        );
    }

    #[test]
    fn thermal_zone_type_names_the_sensor() {
        assert_eq!(
            temperatures("rpi3bplus-raspios12-aarch64"),
            [("cpu-thermal".to_owned(), 45.5)]
        );
        assert!(temperatures("openwrt-router-composite").is_empty());
    }

    #[test]
    fn a_thermal_zone_mirrored_in_hwmon_is_listed_once() {
        let sys = std::env::temp_dir().join(format!("vstats-thermal-{}", std::process::id()));
        for (file, text) in [
            ("class/thermal/thermal_zone0/type", "cpu-thermal\n"),
            ("class/thermal/thermal_zone0/temp", "51540\n"),
            ("class/hwmon/hwmon0/name", "cpu_thermal\n"),
            ("class/hwmon/hwmon0/temp1_input", "51540\n"),
            ("class/hwmon/hwmon1/name", "rpi_volt\n"),
        ] {
            std::fs::create_dir_all(sys.join(file).parent().unwrap()).unwrap();
            std::fs::write(sys.join(file), text).unwrap();
        }
        let paths = Paths {
            sysfs: sys.clone(),
            ..Paths::default()
        };
        let mut buf = Vec::new();
        let found = read(&discover(&paths, &mut buf), &mut buf);
        std::fs::remove_dir_all(&sys).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "cpu-thermal");
    }

    #[test]
    fn names_without_labels() {
        assert_eq!(sensor_name("nvme", None, 2), "nvme temp2");
        assert_eq!(
            sensor_name("coretemp", Some("Core 0"), 2),
            "coretemp Core 0"
        );
    }
}
