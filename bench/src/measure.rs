//! Timing, CPU and memory measurement, and the JSON lines the report joins.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes one plain struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size now, in MB (1e6 bytes).
pub fn rss_mb() -> f64 {
    status_kib("VmRSS:").unwrap_or(0) as f64 * 1024.0 / 1e6
}

/// Peak resident set size since the last [`reset_peak_rss`], in MB.
pub fn peak_rss_mb() -> f64 {
    status_kib("VmHWM:").unwrap_or(0) as f64 * 1024.0 / 1e6
}

/// Hands free heap pages back to the kernel (glibc `malloc_trim`), then resets the kernel's
/// peak-RSS mark to the current RSS (`/proc/self/clear_refs`, value 5), as the Python script
/// does: otherwise a call served from pages an earlier call left resident shows no growth.
pub fn reset_peak_rss() {
    // SAFETY: malloc_trim only releases free memory of the process's own glibc heap.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS growth of one call of `f` over the RSS just before it, in MB.
pub fn rss_growth<T>(f: impl FnOnce() -> T) -> f64 {
    reset_peak_rss();
    let before = rss_mb();
    let out = f();
    let peak = peak_rss_mb();
    drop(out);
    (peak - before).max(0.0)
}

/// Medians and spread of repeated calls.
#[derive(Debug, Clone)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    /// Median CPU time of this process per call (robust to other processes on the machine).
    pub cpu_median: f64,
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Calls `f` once as a warm-up, then at least `min_runs` times and for about `budget`
/// (at most `max_runs`), timing each call.
pub fn time_calls<T>(
    min_runs: usize,
    max_runs: usize,
    budget: Duration,
    mut f: impl FnMut() -> T,
) -> Timing {
    drop(std::hint::black_box(f()));
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut cpu = Vec::new();
    while samples.len() < min_runs || (samples.len() < max_runs && start.elapsed() < budget) {
        let c = process_cpu();
        let t = Instant::now();
        let out = std::hint::black_box(f());
        samples.push(t.elapsed().as_secs_f64());
        cpu.push((process_cpu() - c).as_secs_f64());
        drop(out);
    }
    let median_wall = median(&mut samples);
    Timing {
        median: median_wall,
        min: samples[0],
        max: samples[samples.len() - 1],
        runs: samples.len(),
        cpu_median: median(&mut cpu),
    }
}

/// One result line: `{"sdk": "rust", "workload": …, "size": …, …}` on stdout.
pub fn emit(workload: &str, size: &str, fields: Value) {
    let mut line = json!({"sdk": "rust", "workload": workload, "size": size});
    if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    println!("{line}");
}

/// A timing as JSON fields.
pub fn timing_fields(t: &Timing) -> Value {
    json!({"median_s": t.median, "min_s": t.min, "max_s": t.max, "runs": t.runs,
           "cpu_median_s": t.cpu_median})
}
