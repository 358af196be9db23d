//! `cpu`: the brand from `/proc/cpuinfo` (read once) and usage from
//! `/proc/stat` tick deltas between two readings.
//!
//! `/proc/stat` is hand-parsed rather than with procfs-core's `KernelStats`,
//! which copies and scans every line each second, the `intr` line with
//! thousands of counters on servers included, and fails without the
//! `ctxt`/`btime`/`processes` lines; only the leading `cpu` lines matter,
//! and the file is read no further than the line after them.

use super::{Line, Paths, Text, read_file, read_scanned};
use crate::protocol::{Cpu, percent};
use std::path::{Path, PathBuf};

/// Ticks since boot of one CPU, or of all: every state, and the idle part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ticks {
    total: u64,
    idle: u64,
}

/// All-CPU and per-CPU ticks from `procfs/stat`.
fn read_stat(stat: &Path, buf: &mut Vec<u8>) -> Option<(Ticks, Vec<Ticks>)> {
    let parsed = read_scanned(stat, buf, scan_stat)?;
    if parsed.is_none() {
        log::debug!("stat: no parsable cpu lines");
    }
    parsed
}

/// All-CPU and per-CPU ticks from the whole text of `stat`.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) fn parse_stat(text: &[u8]) -> Option<(Ticks, Vec<Ticks>)> {
    scan_stat(text).0
}

/// All-CPU and per-CPU ticks, and whether a line after the `cpu` lines has
/// begun, so that the rest of the file cannot change them. Offline CPUs
/// have no line, so the per-CPU list is the online logical CPUs.
fn scan_stat(text: &[u8]) -> (Option<(Ticks, Vec<Ticks>)>, bool) {
    let (mut total, mut per_core) = (None, Vec::new());
    let mut ended = false;
    let mut text = Text::new(text);
    while let Some(mut line) = text.line() {
        if !line.strip_prefix(b"cpu") {
            ended = true;
            break;
        }
        if total.is_some() {
            line.skip_digits();
        }
        let ticks = parse_ticks(&mut line);
        let Some(ticks) = ticks else {
            return (None, true);
        };
        match total {
            None => total = Some(ticks),
            Some(_) => per_core.push(ticks),
        }
    }
    let parsed = total.filter(|_| !per_core.is_empty());
    (parsed.map(|total| (total, per_core)), ended)
}

/// `user nice system idle [iowait irq softirq steal guest guest_nice]`;
/// kernels before 2.6 stop after idle.
fn parse_ticks(columns: &mut Line) -> Option<Ticks> {
    let mut ticks = [0u64; 8];
    for (i, tick) in ticks.iter_mut().enumerate() {
        if i >= 4 && columns.ended() {
            break;
        }
        *tick = columns.number()?;
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
    percent(total.saturating_sub(idle), total)
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
/// from it), else the SoC; on MIPS the core, else the system type. Last come
/// the cores' names, so that an arm64 host without any of these (a mainline
/// kernel seen from a container that hides the device tree) is named too.
pub(crate) fn parse_brand(cpuinfo: &str, device_tree_model: Option<&str>) -> String {
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
        .map_or_else(|| core_names(cpuinfo), str::to_owned)
}

/// The cores Linux hosts are built from, named as lscpu names them
/// (util-linux `sys-utils/lscpu-arm.c`): `implementer part name` a line,
/// the ids in hex as the kernel prints them, less the `0x`. 32-bit kernels
/// always print a `model name` or `Processor`, so arm64 cores matter most;
/// a part missing here is shown by its id rather than the table growing.
/// As in lscpu, part `c0d` (first called Cortex-A12) is a Cortex-A17 too;
/// Brahma-B53 is Broadcom's own core in BCM4908 routers. Text, not a table
/// of `&str`: no pointer and relocation for each name.
const CORES: &str = "\
41 b76 ARM1176
41 c05 Cortex-A5
41 c07 Cortex-A7
41 c08 Cortex-A8
41 c09 Cortex-A9
41 c0d Cortex-A17
41 c0e Cortex-A17
41 c0f Cortex-A15
41 d03 Cortex-A53
41 d04 Cortex-A35
41 d05 Cortex-A55
41 d07 Cortex-A57
41 d08 Cortex-A72
41 d09 Cortex-A73
41 d0a Cortex-A75
41 d0b Cortex-A76
41 d0c Neoverse-N1
41 d0d Cortex-A77
41 d40 Neoverse-V1
41 d41 Cortex-A78
41 d44 Cortex-X1
41 d46 Cortex-A510
41 d47 Cortex-A710
41 d48 Cortex-X2
41 d49 Neoverse-N2
41 d4b Cortex-A78C
41 d4c Cortex-X1C
41 d4d Cortex-A715
41 d4e Cortex-X3
41 d4f Neoverse-V2
41 d80 Cortex-A520
41 d81 Cortex-A720
41 d82 Cortex-X4
41 d84 Neoverse-V3
41 d85 Cortex-X925
41 d87 Cortex-A725
42 100 Brahma-B53
48 d01 Kunpeng-920
4e 003 Denver 2
4e 004 Carmel
51 800 Falkor-V1/Kryo
51 801 Kryo-V2
51 802 Kryo-3XX-Gold
51 803 Kryo-3XX-Silver
51 804 Kryo-4XX-Gold
51 805 Kryo-4XX-Silver
51 c00 Falkor
61 022 Icestorm-M1
61 023 Firestorm-M1
61 024 Icestorm-M1-Pro
61 025 Firestorm-M1-Pro
61 028 Icestorm-M1-Max
61 029 Firestorm-M1-Max
61 032 Blizzard-M2
61 033 Avalanche-M2
c0 ac3 Ampere-1
c0 ac4 Ampere-1a
";

/// `CPU implementer` ids and lscpu's names for them, in the same form.
const IMPLEMENTERS: &str = "\
41 ARM
42 Broadcom
43 Cavium
46 FUJITSU
48 HiSilicon
4e NVIDIA
50 APM
51 Qualcomm
53 Samsung
56 Marvell
61 Apple
69 Intel
70 Phytium
c0 Ampere
";

/// The cores' names in CPU order, a run of like cores once, joined by ` / `
/// (a big.LITTLE RK3399: `Cortex-A53 / Cortex-A72`); Linux numbers CPUs a
/// cluster after another, so each kind shows once. A core not in [`CORES`]
/// is its vendor and part id (`ARM part 0xd99`). Empty without `CPU
/// implementer` and `CPU part` lines (not ARM).
fn core_names(cpuinfo: &str) -> String {
    let mut names = String::new();
    let (mut implementer, mut last) = ("", ("", ""));
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "CPU implementer" => implementer = value,
            "CPU part"
                if !value.is_empty() && !implementer.is_empty() && (implementer, value) != last =>
            {
                last = (implementer, value);
                if !names.is_empty() {
                    names.push_str(" / ");
                }
                names.push_str(&core_name(implementer, value));
            }
            _ => {}
        }
    }
    names
}

/// One core's name from its `CPU implementer` and `CPU part` values, as the
/// kernel prints them (`0x41`, `0xd03`).
fn core_name(implementer: &str, part: &str) -> String {
    if let Some(name) = lookup(CORES, &[implementer, part]) {
        return name.to_owned();
    }
    let vendor = lookup(IMPLEMENTERS, &[implementer]);
    let unknown = if vendor.is_some() { "" } else { "implementer " };
    format!("{unknown}{} part {part}", vendor.unwrap_or(implementer))
}

/// The name on the line of `table` that starts with `ids` (`0x` and
/// lowercase hex, as the kernel prints them).
fn lookup<'a>(table: &'a str, ids: &[&str]) -> Option<&'a str> {
    table.split('\n').find_map(|line| {
        ids.iter().try_fold(line, |rest, id| {
            rest.strip_prefix(id.strip_prefix("0x")?)?.strip_prefix(' ')
        })
    })
}

pub(crate) struct CpuCollector {
    /// `procfs/stat`.
    stat: PathBuf,
    brand: String,
    prev: Option<(Ticks, Vec<Ticks>)>,
}

impl CpuCollector {
    /// Reads the brand and the baseline ticks.
    pub(super) fn new(paths: &Paths, buf: &mut Vec<u8>) -> CpuCollector {
        let device_tree_model = [
            paths.procfs.join("device-tree/model"),
            paths.sysfs.join("firmware/devicetree/base/model"),
        ]
        .iter()
        .find_map(|path| read_file(path, buf).map(str::to_owned));
        let brand = read_file(&paths.procfs.join("cpuinfo"), buf)
            .map(|cpuinfo| parse_brand(cpuinfo, device_tree_model.as_deref()))
            .unwrap_or_default();
        let stat = paths.procfs.join("stat");
        let prev = read_stat(&stat, buf);
        CpuCollector { stat, brand, prev }
    }

    /// A collector of readings handed to [`CpuCollector::account`], with no
    /// brand and no baseline, that reads no file (for fuzzing).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn detached() -> CpuCollector {
        CpuCollector {
            stat: PathBuf::new(),
            brand: String::new(),
            prev: None,
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>) -> Option<Cpu> {
        let reading = read_stat(&self.stat, buf)?;
        Some(self.account(reading))
    }

    /// Takes in one reading of `stat`: the usage since the one before.
    pub(crate) fn account(&mut self, (total, per_core): (Ticks, Vec<Ticks>)) -> Cpu {
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
        cpu
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
        let (total, cores) =
            parse_stat(fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/stat").as_bytes())
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
        let text = fixture!("x86_64-linux3x-8cpu-node-exporter-2015/proc/stat");
        let (_, cores) = parse_stat(text.as_bytes()).unwrap();
        assert_eq!(cores.len(), 8);
    }

    #[test]
    fn old_kernels_with_four_columns_parse() {
        let text = b"cpu  10 0 10 80\ncpu0 10 0 10 80\n";
        assert_eq!(
            parse_stat(text).unwrap(),
            (ticks(100, 80), vec![ticks(100, 80)])
        );
    }

    #[test]
    fn truncated_or_garbage_stat_is_none() {
        let full = fixture!("x86_64-rhcos-4.18-openshift-vm-sosreport/proc/stat");
        let cut = |at: usize| &full.as_bytes()[..at];
        assert_eq!(parse_stat(cut(full.find("cpu0").unwrap())), None);
        assert_eq!(parse_stat(cut(full.find("cpu1").unwrap() + 8)), None);
        assert_eq!(parse_stat(b"cpu  1 2 x 4\ncpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat(b"cpu  1 2 3\ncpu0 1 2 3\n"), None);
        assert_eq!(parse_stat(b"intr 1\ncpu  1 2 3 4\n"), None);
        assert_eq!(parse_stat(b""), None);
    }

    // The intr line can be longer than every cpu line before it: reading
    // stops once a line after them has begun.
    #[test]
    fn stat_scan_ends_at_the_first_line_after_the_cpu_lines() {
        let cpus = "cpu  1 2 3 4\ncpu0 1 2 3 4\n";
        assert!(!scan_stat(cpus.as_bytes()).1);
        let (parsed, ended) = scan_stat(format!("{cpus}intr 1 2").as_bytes());
        assert_eq!((parsed, ended), (parse_stat(cpus.as_bytes()), true));
    }

    #[test]
    fn usage_is_busy_share_of_elapsed_ticks() {
        assert_eq!(usage(ticks(100, 80), ticks(200, 130)), 50.0);
        assert_eq!(usage(ticks(100, 80), ticks(100, 80)), 0.0);
        // iowait may go backwards (proc(5)); usage still stays within 0-100.
        assert_eq!(usage(ticks(100, 80), ticks(103, 79)), 100.0);
        assert_eq!(usage(ticks(100, 80), ticks(90, 70)), 0.0);
        assert_eq!(usage(ticks(0, 0), ticks(3, 2)), 33.3);
        assert_eq!(usage(ticks(0, 0), ticks(3, 1)), 66.7);
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
        assert_eq!(
            parse_brand("CPU implementer\t: 0x41\nCPU part\t:\n", None),
            ""
        );
        assert_eq!(parse_brand("CPU part\t: 0xd03\n", None), "");
    }

    /// One arm64 processor block as a mainline kernel prints it.
    fn arm64_block(cpu: u32, part: &str) -> String {
        format!(
            "processor\t: {cpu}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n\
             CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n\
             CPU part\t: {part}\nCPU revision\t: 3\n\n"
        )
    }

    // A Pi on a mainline arm64 kernel, seen from a container that gets only
    // /proc: no `model name`, no `Model` (a Raspberry Pi kernel patch adds
    // that, and `Revision`/`Serial`, after the processor blocks), no device
    // tree. The Pi 4's block is synthesized from its lscpu output (r0p3,
    // BogoMIPS 108.00, flags `fp asimd evtstrm crc32 cpuid`).
    #[test]
    fn arm_brand_without_model_name_or_device_tree_is_the_core_name() {
        let pi3 = fixture!("rpi3bplus-raspios12-aarch64/proc/cpuinfo");
        let mainline_pi3 = &pi3[..pi3.find("Revision").unwrap()];
        assert!(!mainline_pi3.contains("Model"));
        assert_eq!(parse_brand(mainline_pi3, None), "Cortex-A53");
        let pi4: String = (0..4).map(|cpu| arm64_block(cpu, "0xd08")).collect();
        assert_eq!(parse_brand(&pi4, None), "Cortex-A72");
    }

    // Xiaomi AX3000T (MediaTek Filogic MT7981B) on OpenWrt: arm64 kernels
    // print only processor blocks, so without the device tree the cores
    // name it; with the device tree the board does.
    #[test]
    fn openwrt_filogic_brand_is_cortex_a53_without_device_tree() {
        let cpuinfo = fixture!("openwrt-mt7981b-xiaomi-ax3000t-6.12/proc/cpuinfo");
        assert_eq!(parse_brand(cpuinfo, None), "Cortex-A53");
        assert_eq!(
            parse_brand(cpuinfo, Some("Xiaomi Mi Router AX3000T\0")),
            "Xiaomi Mi Router AX3000T"
        );
    }

    // A Pi 1 B+ has the Pi Zero's BCM2835: 32-bit kernels always print a
    // `model name`, which stays the brand; the core table still knows it.
    #[test]
    fn armv6_pi_keeps_its_model_name_and_its_core_is_arm1176() {
        let cpuinfo = fixture!("rpi1-bplus-armv6l/proc/cpuinfo");
        assert_eq!(
            parse_brand(cpuinfo, None),
            "ARMv6-compatible processor rev 7 (v6l)"
        );
        assert_eq!(core_names(cpuinfo), "ARM1176");
    }

    // Every other cpuinfo name, however generic, comes before the cores'.
    #[test]
    fn core_name_is_the_last_resort() {
        let pi4 = arm64_block(0, "0xd08");
        for (extra, brand) in [
            ("Hardware\t: BCM2835\n", "BCM2835"),
            (
                "Processor\t: AArch64 Processor rev 3 (aarch64)\n",
                "AArch64 Processor rev 3 (aarch64)",
            ),
        ] {
            assert_eq!(parse_brand(&format!("{extra}{pi4}"), None), brand);
        }
        let pi3 = fixture!("rpi3bplus-raspios12-aarch64/proc/cpuinfo");
        assert_eq!(
            parse_brand(pi3, None),
            "Raspberry Pi 3 Model B Plus Rev 1.3"
        );
    }

    // RK3399: four Cortex-A53 then two Cortex-A72; each kind once, in CPU order.
    #[test]
    fn big_little_brand_names_each_core_cluster_once_in_cpu_order() {
        let rk3399: String = (0..6)
            .map(|cpu| arm64_block(cpu, if cpu < 4 { "0xd03" } else { "0xd08" }))
            .collect();
        assert_eq!(parse_brand(&rk3399, None), "Cortex-A53 / Cortex-A72");
        // Three clusters (Snapdragon 8 Gen 1: 4 + 3 + 1).
        let parts = [
            "0xd46", "0xd46", "0xd46", "0xd46", "0xd47", "0xd47", "0xd47", "0xd48",
        ];
        let three: String = (0..)
            .zip(parts)
            .map(|(cpu, part)| arm64_block(cpu, part))
            .collect();
        assert_eq!(
            parse_brand(&three, None),
            "Cortex-A510 / Cortex-A710 / Cortex-X2"
        );
    }

    #[test]
    fn unknown_core_is_named_by_vendor_and_part_id() {
        assert_eq!(
            parse_brand(&arm64_block(0, "0xd99"), None),
            "ARM part 0xd99"
        );
        let other_vendor = "CPU implementer\t: 0x61\nCPU part\t: 0x048\n";
        assert_eq!(parse_brand(other_vendor, None), "Apple part 0x048");
        let unknown_vendor = "CPU implementer\t: 0x99\nCPU part\t: 0x123\n";
        assert_eq!(
            parse_brand(unknown_vendor, None),
            "implementer 0x99 part 0x123"
        );
        let garbage = "CPU implementer\t: ARM\nCPU part\t: ?\n";
        assert_eq!(parse_brand(garbage, None), "implementer ARM part ?");
        // Non-ARM implementer ids from other vendors' tables stay apart.
        assert_eq!(core_name("0x48", "0xd03"), "HiSilicon part 0xd03");
        assert_eq!(core_name("0x41", "0xd03"), "Cortex-A53");
    }

    #[test]
    fn core_tables_have_one_name_per_id() {
        let ids = |table: &'static str, n: usize| {
            table.lines().map(move |line| {
                let fields: Vec<_> = line.splitn(n + 1, ' ').collect();
                assert!(fields.len() == n + 1 && !fields[n].is_empty(), "{line}");
                fields[..n].join(" ")
            })
        };
        let vendors: Vec<_> = ids(IMPLEMENTERS, 1).collect();
        let cores: Vec<_> = ids(CORES, 2).collect();
        for (i, core) in cores.iter().enumerate() {
            assert!(!cores[..i].contains(core), "{core} twice");
            assert!(vendors.contains(&core[..2].to_owned()), "{core}: no vendor");
        }
        for (i, vendor) in vendors.iter().enumerate() {
            assert!(!vendors[..i].contains(vendor), "{vendor} twice");
        }
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
        let mut buf = Vec::new();
        let mut collector = CpuCollector::new(&paths, &mut buf);
        stat("20 0 20 160 0 0 0 0", "10 0 10 180 0 0 0 0");
        let cpu = collector.sample(&mut buf).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((cpu.cores, cpu.per_core), (2, vec![20.0, 0.0]));
    }
}
