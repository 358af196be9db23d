//! `cpu`: the brand from `/proc/cpuinfo` (read once) and usage from
//! `/proc/stat` tick deltas between two readings.
//!
//! `/proc/stat` is hand-parsed rather than with procfs-core's `KernelStats`,
//! which copies and scans every line each second, the `intr` line with
//! thousands of counters on servers included, and fails without the
//! `ctxt`/`btime`/`processes` lines; only the leading `cpu` lines matter.

use super::{Paths, read_file, round2};
use crate::protocol::Cpu;

/// Ticks since boot of one CPU, or of all: every state, and the idle part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ticks {
    total: u64,
    idle: u64,
}

/// All-CPU and per-CPU ticks. Offline CPUs have no line, so the per-CPU
/// list is the online logical CPUs.
pub(super) fn parse_stat(text: &str) -> Option<(Ticks, Vec<Ticks>)> {
    let mut lines = text.lines().map_while(|line| line.strip_prefix("cpu"));
    let total = lines.next().and_then(parse_ticks);
    let per_core: Option<Vec<_>> = lines
        .map(|line| parse_ticks(line.trim_start_matches(|c: char| c.is_ascii_digit())))
        .collect();
    match (total, per_core) {
        (Some(total), Some(per_core)) if !per_core.is_empty() => Some((total, per_core)),
        _ => {
            log::debug!("stat: no parsable cpu lines");
            None
        }
    }
}

/// `user nice system idle [iowait irq softirq steal guest guest_nice]`;
/// kernels before 2.6 stop after idle.
fn parse_ticks(columns: &str) -> Option<Ticks> {
    let mut ticks = [0u64; 8];
    let mut columns = columns.split_ascii_whitespace();
    for (i, tick) in ticks.iter_mut().enumerate() {
        match columns.next() {
            Some(column) => *tick = column.parse().ok()?,
            None if i >= 4 => break,
            None => return None,
        }
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks;
    let idle = idle.saturating_add(iowait);
    // guest and guest_nice are left out: the kernel already counts them in
    // user and nice.
    let total = [user, nice, system, irq, softirq, steal]
        .into_iter()
        .fold(idle, u64::saturating_add);
    Some(Ticks { total, idle })
}

/// Percent busy between two readings; 0 when no tick passed.
fn usage(prev: Ticks, now: Ticks) -> f64 {
    let total = now.total.saturating_sub(prev.total);
    let idle = now.idle.saturating_sub(prev.idle);
    if total == 0 {
        return 0.0;
    }
    round2(total.saturating_sub(idle) as f64 / total as f64 * 100.0)
}

/// The first non-empty value of `key`. Keys are case-sensitive: on ARM,
/// `Processor` is the model and `processor` the CPU index.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        (name.trim() == key && !value.is_empty()).then_some(value)
    })
}

/// The real file ends in a NUL byte; a pasted copy does not.
fn parse_device_tree_model(model: &str) -> &str {
    model.trim_end_matches('\0').trim()
}

/// What the dashboard calls the CPU: x86's `model name`; on ARM boards the
/// board model (device tree, or the `Model` line Raspberry Pi kernels copy
/// from it), else the SoC; on MIPS the core, else the system type.
pub(super) fn parse_brand(cpuinfo: &str, device_tree_model: Option<&str>) -> String {
    let field = |key| cpuinfo_field(cpuinfo, key);
    field("model name")
        .or(device_tree_model
            .map(parse_device_tree_model)
            .filter(|model| !model.is_empty()))
        .or_else(|| {
            ["Model", "Hardware", "Processor", "cpu model", "system type"]
                .into_iter()
                .find_map(field)
        })
        .unwrap_or_default()
        .to_owned()
}

pub(super) struct CpuCollector {
    brand: String,
    prev: Option<(Ticks, Vec<Ticks>)>,
}

impl CpuCollector {
    /// Reads the brand and the baseline ticks.
    pub(super) fn new(paths: &Paths, buf: &mut String) -> CpuCollector {
        let device_tree_model = [
            paths.procfs.join("device-tree/model"),
            paths.sysfs.join("firmware/devicetree/base/model"),
        ]
        .iter()
        .find_map(|path| read_file(path, buf).map(str::to_owned));
        let brand = read_file(&paths.procfs.join("cpuinfo"), buf)
            .map(|cpuinfo| parse_brand(cpuinfo, device_tree_model.as_deref()))
            .unwrap_or_default();
        let prev = read_file(&paths.procfs.join("stat"), buf).and_then(parse_stat);
        CpuCollector { brand, prev }
    }

    pub(super) fn sample(&mut self, paths: &Paths, buf: &mut String) -> Option<Cpu> {
        let (total, per_core) = read_file(&paths.procfs.join("stat"), buf).and_then(parse_stat)?;
        let prev = self.prev.as_ref();
        // After a CPU went on- or offline the lists no longer line up.
        let prev_cores = prev
            .map(|(_, cores)| cores)
            .filter(|cores| cores.len() == per_core.len());
        let cpu = Cpu {
            brand: self.brand.clone(),
            cores: per_core.len() as u32,
            usage: prev.map_or(0.0, |&(prev, _)| usage(prev, total)),
            per_core: match prev_cores {
                Some(cores) => cores
                    .iter()
                    .zip(&per_core)
                    .map(|(&prev, &now)| usage(prev, now))
                    .collect(),
                None => vec![0.0; per_core.len()],
            },
        };
        self.prev = Some((total, per_core));
        Some(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(total: u64, idle: u64) -> Ticks {
        Ticks { total, idle }
    }

    #[test]
    fn stat_lines_become_ticks() {
        let (total, cores) = parse_stat(fixture!(
            "x86_64-rhcos-4.18-openshift-vm-sosreport/proc/stat"
        ))
        .unwrap();
        // cpu  12333 29 11930 386965 126 4523 2711 0 0 0
        assert_eq!(
            total,
            ticks(
                12333 + 29 + 11930 + 386965 + 126 + 4523 + 2711,
                386965 + 126
            )
        );
        assert_eq!(cores.len(), 2);
        let (_, cores) =
            parse_stat(fixture!("x86_64-linux3x-8cpu-node-exporter-2015/proc/stat")).unwrap();
        assert_eq!(cores.len(), 8);
    }

    #[test]
    fn old_kernels_with_four_columns_parse() {
        let text = "cpu  10 0 10 80\ncpu0 10 0 10 80\n";
        assert_eq!(
            parse_stat(text).unwrap(),
            (ticks(100, 80), vec![ticks(100, 80)])
        );
    }

    #[test]
    fn truncated_or_garbage_stat_is_none() {
        let full = fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/stat");
        assert_eq!(parse_stat(&full[..full.find("cpu0").unwrap()]), None);
        assert_eq!(parse_stat(&full[..full.find("cpu1").unwrap() + 8]), None);
        assert_eq!(parse_stat("cpu  1 2 x 4\ncpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat("cpu  1 2 3\ncpu0 1 2 3\n"), None);
        assert_eq!(parse_stat("intr 1\ncpu  1 2 3 4\n"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn usage_is_busy_share_of_elapsed_ticks() {
        assert_eq!(usage(ticks(100, 80), ticks(200, 130)), 50.0);
        assert_eq!(usage(ticks(100, 80), ticks(100, 80)), 0.0);
        // iowait may go backwards (proc(5)); usage still stays within 0-100.
        assert_eq!(usage(ticks(100, 80), ticks(103, 79)), 100.0);
        assert_eq!(usage(ticks(100, 80), ticks(90, 70)), 0.0);
        assert_eq!(usage(ticks(0, 0), ticks(3, 2)), 33.33);
    }

    #[test]
    fn x86_brand_is_model_name() {
        let cpuinfo = fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/cpuinfo");
        assert_eq!(
            parse_brand(cpuinfo, None),
            "Intel(R) Xeon(R) W-2155 CPU @ 3.30GHz"
        );
    }

    // Raspberry Pi 3B+ on a 64-bit kernel: no `model name`, no `Hardware`;
    // the kernel prints the device-tree model as `Model`.
    #[test]
    fn rpi3_aarch64_brand_is_the_board_model() {
        let cpuinfo = fixture!("rpi3bplus-raspios12-aarch64/proc/cpuinfo");
        assert_eq!(
            parse_brand(cpuinfo, None),
            "Raspberry Pi 3 Model B Plus Rev 1.3"
        );
    }

    // The real device-tree `model` ends in NUL; the Pi 4 fixture was pasted
    // from `cat` and lost it.
    #[test]
    fn device_tree_model_with_and_without_trailing_nul() {
        let pasted = fixture!("rpi4-raspbian10-armv7l/proc/device-tree/model");
        let real = format!("{pasted}\0");
        for model in [pasted, &real] {
            assert_eq!(
                parse_brand("processor\t: 0\n", Some(model)),
                "Raspberry Pi 4 Model B Rev 1.4"
            );
        }
        assert_eq!(parse_brand("Hardware\t: BCM2835\n", Some("\0")), "BCM2835");
    }

    // Pi 4 on the 32-bit Raspbian kernel does have a (generic) model name.
    #[test]
    fn rpi4_armv7l_brand_is_its_model_name() {
        let cpuinfo = fixture!("rpi4-raspbian10-armv7l/proc/cpuinfo");
        let model = fixture!("rpi4-raspbian10-armv7l/proc/device-tree/model");
        assert_eq!(
            parse_brand(cpuinfo, Some(model)),
            "ARMv7 Processor rev 3 (v7l)"
        );
    }

    // Old ARM kernels: `Processor` (capital P) is the model, `processor` the index.
    #[test]
    fn old_arm_processor_line_is_not_the_cpu_index() {
        let cpuinfo = "Processor\t: ARMv7 Processor rev 10 (v7l)\nprocessor\t: 0\n";
        assert_eq!(parse_brand(cpuinfo, None), "ARMv7 Processor rev 10 (v7l)");
        let cpuinfo =
            "processor\t: 0\nProcessor\t: ARMv7 Processor rev 10 (v7l)\nHardware\t: sun8i\n";
        assert_eq!(parse_brand(cpuinfo, None), "sun8i");
    }

    // MikroTik hEX S (MT7621): the `system type` header sits before the
    // first `processor` block and its value holds colons.
    #[test]
    fn mips_brand_is_cpu_model_then_system_type() {
        let cpuinfo = fixture!("openwrt-mt7621-mikrotik-rb760igs-6.1rc2/proc/cpuinfo");
        assert_eq!(parse_brand(cpuinfo, None), "MIPS 1004Kc V2.15");
        assert_eq!(
            parse_brand("system type\t\t: MediaTek MT7621 ver:1 eco:3\n", None),
            "MediaTek MT7621 ver:1 eco:3"
        );
    }

    // D-Link DWR-956 (Lantiq AR10): spaces instead of tabs, no final newline.
    #[test]
    fn lantiq_cpuinfo_with_spaces_and_no_final_newline() {
        let cpuinfo = fixture!("lantiq-ar10-dlink-dwr956-linux2.6/proc/cpuinfo");
        assert!(!cpuinfo.ends_with('\n'));
        assert_eq!(parse_brand(cpuinfo, None), "MIPS 34Kc V5.6");
        assert_eq!(
            cpuinfo_field(cpuinfo, "VCEI exceptions"),
            Some("not available")
        );
    }

    #[test]
    fn garbage_cpuinfo_has_an_empty_brand() {
        assert_eq!(parse_brand("", None), "");
        assert_eq!(parse_brand("model name\t:\n\u{1F600}:\n::::", None), "");
    }

    #[test]
    fn sample_reports_usage_between_readings() {
        let dir = std::env::temp_dir().join(format!("vstats-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths {
            procfs: dir.clone(),
            ..Paths::default()
        };
        let stat = |cpu0: &str, cpu1: &str| {
            let text =
                format!("cpu  {cpu0}\ncpu0 {cpu0}\ncpu1 {cpu1}\nctxt 1\nbtime 1\nprocesses 1\n");
            std::fs::write(dir.join("stat"), text).unwrap();
        };
        stat("10 0 10 80 0 0 0 0", "10 0 10 80 0 0 0 0");
        let mut buf = String::new();
        let mut collector = CpuCollector::new(&paths, &mut buf);
        stat("20 0 20 160 0 0 0 0", "10 0 10 180 0 0 0 0");
        let cpu = collector.sample(&paths, &mut buf).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((cpu.cores, cpu.per_core), (2, vec![20.0, 0.0]));
    }
}
