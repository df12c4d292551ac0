//! What a service process costs, read from `/proc`: CPU time
//! (`/proc/<pid>/stat`, user + system, every thread that ever ran),
//! resident memory now and at its peak (`/proc/<pid>/status`: `VmRSS`,
//! `VmHWM`), and open file descriptors (`/proc/<pid>/fd`).
//!
//! The peak can be reset (`/proc/<pid>/clear_refs` with `5`), so the peak
//! of one scenario is not the peak of an earlier one.

use std::{collections::BTreeMap, fs};

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `utime`/`stime` (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The processes being measured, by name.
#[derive(Debug, Clone, Default)]
pub struct Processes(pub Vec<(String, u32)>);

impl Processes {
    /// `name=pid` pairs, as given on the command line.
    pub fn parse(pairs: &[String]) -> anyhow::Result<Self> {
        let mut processes = Vec::new();
        for pair in pairs {
            let (name, pid) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--pid takes name=pid, got {pair:?}"))?;
            processes.push((name.to_owned(), pid.parse()?));
        }
        Ok(Self(processes))
    }

    pub fn sample(&self) -> BTreeMap<String, Sample> {
        self.0
            .iter()
            .filter_map(|(name, pid)| Sample::of(*pid).map(|sample| (name.clone(), sample)))
            .collect()
    }

    pub fn reset_peaks(&self) {
        for (_, pid) in &self.0 {
            // Needs the right to write the file (same user or root); the
            // peak then simply covers more.
            let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    /// User plus system CPU, seconds.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub open_files: u64,
}

impl Sample {
    pub fn of(pid: u32) -> Option<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: fields count from after ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); 1 and 2 are
        // before the ')', so they are 11 and 12 here.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let open_files = fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| dir.count() as u64)
            .unwrap_or(0);
        Some(Self {
            cpu_seconds: ticks / TICKS_PER_SECOND,
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
            open_files,
        })
    }
}

/// CPU microseconds per call of each process between two samples.
pub fn cpu_per_call(
    before: &BTreeMap<String, Sample>,
    after: &BTreeMap<String, Sample>,
    calls: u64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, end)| {
            let start = before.get(name)?;
            let seconds = end.cpu_seconds - start.cpu_seconds;
            Some((name.clone(), seconds * 1e6 / calls.max(1) as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let sample = Sample::of(std::process::id()).expect("this process has /proc entries");
        assert!(sample.rss_kib > 0);
        assert!(sample.peak_rss_kib >= sample.rss_kib);
        assert!(sample.open_files > 0);
    }
}
