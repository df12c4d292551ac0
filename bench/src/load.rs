//! The load engine: `in_flight` workers share `connections` clients and
//! call a [`Scenario`] until a duration or a count is reached, either as
//! fast as answers come back (closed loop) or at a fixed `rate` (open
//! loop, latency counted from each call's scheduled start, so a stalled
//! server cannot hide its queue: no coordinated omission).
//!
//! Every answer's status is checked; latencies go into an HDR histogram
//! (microseconds, 3 significant digits) for successes, and failures are
//! counted by status code. The processes given are sampled at the start
//! and end of the measured window (after the warm-up), and every
//! `report_every` for a soak. A refused worker may back off
//! (`refusal_backoff`) as a client that honours `RetryInfo` does, with
//! jitter so that callers refused together do not all return together.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::{
    client::Client,
    procstat::{self, Processes, Sample},
};

/// What one worker does, call after call.
pub trait Scenario: Send + Sync + 'static {
    /// A worker's own state (its session, its place in a rotation).
    type Worker: Send + 'static;

    fn worker(
        &self,
        index: usize,
        client: &Client,
    ) -> impl Future<Output = anyhow::Result<Self::Worker>> + Send;

    fn call(
        &self,
        client: &Client,
        worker: &mut Self::Worker,
    ) -> impl Future<Output = Result<(), Code>> + Send;
}

#[derive(Debug, Clone)]
pub struct Load {
    pub in_flight: usize,
    /// Measured time (after the warm-up); ignored when `count` is set.
    pub duration: Duration,
    /// Measured calls, instead of a duration.
    pub count: Option<u64>,
    /// Calls per second across all workers (open loop); none: closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// Soak: a [`Interval`] every this long.
    pub report_every: Option<Duration>,
    /// After a `RESOURCE_EXHAUSTED`, how the worker waits before its next
    /// call, as a client honouring the refusal's `RetryInfo` would; none:
    /// it calls again at once.
    pub refusal_backoff: Option<Backoff>,
}

/// A refused caller's wait: at least the `delay` the refusal asked for,
/// stretched by a random fraction of it up to `jitter` (gRPC's connection
/// back-off uses 0.2). Without jitter every caller refused in the same
/// instant comes back in the same instant, and the server meets the whole
/// refused crowd again as one burst, once per delay.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub delay: Duration,
    pub jitter: f64,
}

impl Backoff {
    /// The wait before one retry.
    pub fn wait(&self) -> Duration {
        let stretch = 1.0 + self.jitter * rand::random::<f64>();
        self.delay.mul_f64(stretch)
    }
}

/// The result of one measured window.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Outcome {
    pub calls: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// CPU microseconds per call, per process.
    pub cpu_us_per_call: BTreeMap<String, f64>,
    /// CPU cores used over the window, per process.
    pub cpu_cores: BTreeMap<String, f64>,
    /// Samples at the end of the window (peak RSS since the last reset).
    pub end: BTreeMap<String, Sample>,
    pub intervals: Vec<Interval>,
}

/// One soak interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    pub at_seconds: f64,
    pub calls: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub processes: BTreeMap<String, Sample>,
}

impl Outcome {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors other than the ones named (e.g. documented refusals).
    pub fn errors_except(&self, allowed: &[Code]) -> u64 {
        self.errors
            .iter()
            .filter(|(name, _)| !allowed.iter().any(|code| code_name(*code) == name.as_str()))
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid")
}

/// Shared tallies of the measured window.
struct Tally {
    histogram: Histogram<u64>,
    interval: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    interval_errors: u64,
    calls: u64,
    last_end: Option<Instant>,
}

impl Tally {
    fn record(&mut self, result: Result<(), Code>, latency: Duration, end: Instant) {
        self.calls += 1;
        self.last_end = Some(self.last_end.map_or(end, |last| last.max(end)));
        match result {
            Ok(()) => {
                let micros =
                    (latency.as_micros().try_into().unwrap_or(u64::MAX)).clamp(1, 120_000_000);
                let _ = self.histogram.record(micros);
                let _ = self.interval.record(micros);
            }
            Err(code) => {
                *self.errors.entry(code_name(code).to_owned()).or_default() += 1;
                self.interval_errors += 1;
            }
        }
    }
}

/// Runs `scenario` under `load` over `clients` and measures it.
pub async fn drive<S: Scenario>(
    scenario: Arc<S>,
    clients: &[Client],
    load: &Load,
    processes: &Processes,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!clients.is_empty(), "no client to call with");
    let in_flight = load.in_flight.max(1);
    // Workers are set up before the clock starts (logins cost hashes).
    let mut workers = Vec::with_capacity(in_flight);
    for index in 0..in_flight {
        let client = &clients[index % clients.len()];
        workers.push(scenario.worker(index, client).await?);
    }

    let start = Instant::now();
    let measure_from = start + load.warmup;
    let measure_until = measure_from + load.duration;
    let tally = Arc::new(Mutex::new(Tally {
        histogram: histogram(),
        interval: histogram(),
        errors: BTreeMap::new(),
        interval_errors: 0,
        calls: 0,
        last_end: None,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(AtomicU64::new(0));
    let count = load.count;
    let rate = load.rate;
    let refusal_backoff = load.refusal_backoff;

    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut worker) in workers.into_iter().enumerate() {
        let client = clients[index % clients.len()].clone();
        let (scenario, tally, stop, started, slots) = (
            scenario.clone(),
            tally.clone(),
            stop.clone(),
            started.clone(),
            slots.clone(),
        );
        tasks.spawn(async move {
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let begin = match rate {
                    Some(rate) => {
                        let slot = slots.fetch_add(1, Ordering::Relaxed);
                        let at = start + Duration::from_secs_f64(slot as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let measured = begin >= measure_from;
                if measured {
                    if count.is_none() && begin >= measure_until {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    if let Some(count) = count
                        && started.fetch_add(1, Ordering::Relaxed) >= count
                    {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let result = scenario.call(&client, &mut worker).await;
                let end = Instant::now();
                if measured {
                    tally
                        .lock()
                        .expect("no panics while held")
                        .record(result, end - begin, end);
                }
                if let (Err(Code::ResourceExhausted), Some(backoff)) = (result, refusal_backoff) {
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
        });
    }

    tokio::time::sleep_until(measure_from.into()).await;
    processes.reset_peaks();
    let before = processes.sample();
    let mut intervals = Vec::new();
    if let Some(every) = load.report_every {
        let mut last = Instant::now();
        let mut next = measure_from + every;
        while !stop.load(Ordering::Relaxed) && next <= measure_until {
            tokio::time::sleep_until(next.into()).await;
            let now = Instant::now();
            let mut tally = tally.lock().expect("no panics while held");
            let calls = tally.interval.len() + tally.interval_errors;
            intervals.push(Interval {
                at_seconds: (now - measure_from).as_secs_f64(),
                calls,
                errors: tally.interval_errors,
                rps: calls as f64 / (now - last).as_secs_f64(),
                p50_us: tally.interval.value_at_quantile(0.5),
                p99_us: tally.interval.value_at_quantile(0.99),
                processes: processes.sample(),
            });
            tally.interval.reset();
            tally.interval_errors = 0;
            drop(tally);
            eprintln!(
                "{}",
                serde_json::to_string(intervals.last().expect("just pushed"))?
            );
            last = now;
            next += every;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let after = processes.sample();
    let tally = tally.lock().expect("no panics while held");
    let seconds = tally
        .last_end
        .map_or(0.0, |end| (end - measure_from).as_secs_f64())
        .max(1e-9);
    // From the window's start to the last answer in it.
    let measured_seconds = seconds;
    let cpu_cores = after
        .iter()
        .filter_map(|(name, end)| {
            let start = before.get(name)?;
            Some((
                name.clone(),
                (end.cpu_seconds - start.cpu_seconds) / measured_seconds,
            ))
        })
        .collect();
    let h = &tally.histogram;
    Ok(Outcome {
        calls: tally.calls,
        ok: h.len(),
        errors: tally.errors.clone(),
        seconds: measured_seconds,
        rps: tally.calls as f64 / measured_seconds,
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        mean_us: h.mean(),
        cpu_us_per_call: procstat::cpu_per_call(&before, &after, tally.calls),
        cpu_cores,
        end: after,
        intervals,
    })
}

/// A histogram's summary in the shape of an [`Outcome`] (for latencies
/// measured outside [`drive`], such as a change reaching its watchers).
pub fn summarize(h: &Histogram<u64>, errors: BTreeMap<String, u64>, seconds: f64) -> Outcome {
    let calls = h.len() + errors.values().sum::<u64>();
    Outcome {
        calls,
        ok: h.len(),
        errors,
        seconds,
        rps: calls as f64 / seconds.max(1e-9),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        mean_us: h.mean(),
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Targets, Via};

    /// Refuses every call, as a server at its limit does.
    struct Refusing;

    impl Scenario for Refusing {
        type Worker = ();

        async fn worker(&self, _: usize, _: &Client) -> anyhow::Result<()> {
            Ok(())
        }

        async fn call(&self, _: &Client, _: &mut ()) -> Result<(), Code> {
            tokio::task::yield_now().await;
            Err(Code::ResourceExhausted)
        }
    }

    async fn refused_calls(refusal_backoff: Option<Backoff>) -> Outcome {
        // An HTTP client connects on its first call, which never comes.
        let nowhere: http::Uri = "http://127.0.0.1:9".parse().unwrap();
        let targets = Targets {
            auth: nowhere.clone(),
            tasks: nowhere.clone(),
            gateway: nowhere,
        };
        let client = Client::connect(&targets, Via::ConnectJson, None)
            .await
            .unwrap();
        let load = Load {
            in_flight: 4,
            duration: Duration::from_millis(300),
            count: None,
            rate: None,
            warmup: Duration::ZERO,
            report_every: None,
            refusal_backoff,
        };
        drive(Arc::new(Refusing), &[client], &load, &Processes::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_worker_backs_off_before_calling_again() {
        let outcome = refused_calls(Some(Backoff {
            delay: Duration::from_millis(100),
            jitter: 0.2,
        }))
        .await;
        // Each of the 4 workers calls at most once per 100 ms of the 300.
        assert!(outcome.calls <= 4 * 4, "{} calls", outcome.calls);
        assert_eq!(
            outcome.errors.get("RESOURCE_EXHAUSTED"),
            Some(&outcome.calls)
        );
        assert_eq!(outcome.ok, 0);

        let closed_loop = refused_calls(None).await;
        assert!(closed_loop.calls > 100, "{} calls", closed_loop.calls);
    }

    #[test]
    fn a_backoff_waits_at_least_its_delay_and_spreads_the_rest() {
        let backoff = Backoff {
            delay: Duration::from_secs(1),
            jitter: 0.2,
        };
        let waits: Vec<Duration> = (0..200).map(|_| backoff.wait()).collect();
        let (shortest, longest) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*shortest >= Duration::from_secs(1), "{shortest:?}");
        assert!(*longest <= Duration::from_millis(1200), "{longest:?}");
        // 200 uniform draws over 200 ms span less than 100 ms with a
        // chance below 2^-190.
        assert!(*longest - *shortest > Duration::from_millis(100));

        let fixed = Backoff {
            delay: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(fixed.wait(), Duration::from_secs(1));
    }
}
