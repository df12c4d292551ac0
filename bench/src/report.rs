//! `BENCHMARKS.md` from a results file (one JSON record per line, as the
//! other commands and `run.sh` append them).
//!
//! Every figure is the median over the repetitions of its label; every
//! ratio is computed within one repetition (the two sides were measured
//! back to back, alternated) and the median of those ratios is reported.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::PathBuf,
};

use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The results file.
    #[arg(long)]
    pub results: PathBuf,
    /// Text describing the machine (lscpu, kernel, noise).
    #[arg(long)]
    pub machine: Option<PathBuf>,
    /// The commands and flags of the run.
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// Hand-written analysis appended verbatim.
    #[arg(long)]
    pub analysis: Option<PathBuf>,
    /// Cores the services share (for the argon2 ceiling).
    #[arg(long, default_value_t = 2)]
    pub cores: u32,
    /// Hashing permits of the auth-service (its --hash-concurrency).
    #[arg(long, default_value_t = 2)]
    pub hash_permits: u32,
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

/// Records by label, then by repetition.
struct Results(BTreeMap<String, BTreeMap<u64, Value>>);

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

impl Results {
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let mut map: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
        for line in std::fs::read_to_string(path)?.lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(label) = record.get("label").and_then(Value::as_str) else {
                continue;
            };
            let rep = record.get("rep").and_then(Value::as_u64).unwrap_or(1);
            map.entry(label.to_owned()).or_default().insert(rep, record);
        }
        Ok(Self(map))
    }

    fn reps(&self, label: &str) -> Vec<(u64, &Value)> {
        self.0
            .get(label)
            .map(|reps| reps.iter().map(|(r, v)| (*r, v)).collect())
            .unwrap_or_default()
    }

    fn get(&self, label: &str, rep: u64, path: &str) -> Option<f64> {
        at(self.0.get(label)?.get(&rep)?, path)?.as_f64()
    }

    fn median(&self, label: &str, path: &str) -> Option<f64> {
        median(
            self.reps(label)
                .iter()
                .filter_map(|(_, v)| at(v, path)?.as_f64())
                .collect(),
        )
    }

    /// The median over repetitions of `f(rep)`.
    fn ratio(&self, labels: &[&str], f: impl Fn(u64) -> Option<f64>) -> Option<f64> {
        let reps: BTreeSet<u64> = labels
            .iter()
            .flat_map(|label| self.reps(label).into_iter().map(|(r, _)| r))
            .collect();
        median(reps.into_iter().filter_map(f).collect())
    }

    fn errors(&self, label: &str) -> u64 {
        self.reps(label)
            .iter()
            .filter_map(|(_, v)| {
                v.get("errors")?
                    .as_object()
                    .map(|e| e.values().filter_map(Value::as_u64).sum::<u64>())
            })
            .sum()
    }
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

struct Row {
    budget: String,
    figure: String,
    bar: String,
    met: Option<bool>,
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

pub fn write(args: &Args) -> anyhow::Result<()> {
    let r = Results::load(&args.results)?;
    let mut rows = Vec::new();
    let le = |value: Option<f64>, bar: f64| value.map(|v| v <= bar);
    let ge = |value: Option<f64>, bar: f64| value.map(|v| v >= bar);

    // 1. GetTask direct CPU per call vs the health floor.
    let cpu = "cpu_us_per_call.task-service";
    let q = r.ratio(&["get/direct", "health/direct"], |rep| {
        Some(r.get("get/direct", rep, cpu)? / r.get("health/direct", rep, cpu)?)
    });
    rows.push(Row {
        budget: "GetTask direct: task-service CPU per call / health floor's".into(),
        figure: format!(
            "{}x ({} µs vs {} µs)",
            fmt(q, 2),
            fmt(r.median("get/direct", cpu), 1),
            fmt(r.median("health/direct", cpu), 1)
        ),
        bar: "≤ 2x".into(),
        met: le(q, 2.0),
    });
    // 2. Gateway, gRPC-Web over HTTP/2: RPS and CPU.
    let gw = "get/gateway-grpc-web-h2";
    let q = r.ratio(&[gw, "get/direct"], |rep| {
        Some(r.get(gw, rep, "rps")? / r.get("get/direct", rep, "rps")?)
    });
    rows.push(Row {
        budget: "GetTask via gateway (gRPC-Web, HTTP/2): RPS / direct RPS".into(),
        figure: format!(
            "{} ({} vs {} calls/s)",
            fmt(q, 2),
            fmt(r.median(gw, "rps"), 0),
            fmt(r.median("get/direct", "rps"), 0)
        ),
        bar: "≥ 0.85".into(),
        met: ge(q, 0.85),
    });
    let gcpu = "cpu_us_per_call.gateway";
    let floor = "health/gateway-grpc-web-h2";
    let q = r.ratio(&[gw, floor], |rep| {
        Some(r.get(gw, rep, gcpu)? / r.get(floor, rep, gcpu)?)
    });
    let q_task = r.ratio(&[gw, "health/direct"], |rep| {
        Some(r.get(gw, rep, gcpu)? / r.get("health/direct", rep, cpu)?)
    });
    rows.push(Row {
        budget: "GetTask via gateway (gRPC-Web, HTTP/2): gateway CPU per call / health floor's"
            .into(),
        figure: format!(
            "{}x ({} µs vs the gateway's own health Check {} µs); vs the task-service's floor: {}x",
            fmt(q, 2),
            fmt(r.median(gw, gcpu), 1),
            fmt(r.median(floor, gcpu), 1),
            fmt(q_task, 2)
        ),
        bar: "≤ 1.5x".into(),
        met: le(q, 1.5),
    });
    // 3. ListTasks vs pgbench.
    let q = r.ratio(&["list/direct", "pgbench/list-page"], |rep| {
        Some(r.get("list/direct", rep, "rps")? / r.get("pgbench/list-page", rep, "tps")?)
    });
    rows.push(Row {
        budget: "ListTasks, page of 50 of 10,000: RPS / pgbench running the page query alone"
            .into(),
        figure: format!(
            "{} ({} vs {} tps; the service's whole read, page and counts in one statement, in pgbench: {} tps)",
            fmt(q, 2),
            fmt(r.median("list/direct", "rps"), 0),
            fmt(r.median("pgbench/list-page", "tps"), 0),
            fmt(r.median("pgbench/list-tx", "tps"), 0)
        ),
        bar: "≥ 0.6".into(),
        met: ge(q, 0.6),
    });
    let (p1, p1000) = ("list-deep-p1/direct", "list-deep-p1000/direct");
    let q50 = r.ratio(&[p1, p1000], |rep| {
        Some(r.get(p1000, rep, "p50_us")? / r.get(p1, rep, "p50_us")?)
    });
    let q99 = r.ratio(&[p1, p1000], |rep| {
        Some(r.get(p1000, rep, "p99_us")? / r.get(p1, rep, "p99_us")?)
    });
    rows.push(Row {
        budget: "ListTasks of 100,000: page 1,000 latency / page 1's (p50; p99)".into(),
        figure: format!(
            "{}x; {}x (p50 {} vs {} µs, p99 {} vs {} µs)",
            fmt(q50, 2),
            fmt(q99, 2),
            fmt(r.median(p1000, "p50_us"), 0),
            fmt(r.median(p1, "p50_us"), 0),
            fmt(r.median(p1000, "p99_us"), 0),
            fmt(r.median(p1, "p99_us"), 0)
        ),
        bar: "≤ 1.5x".into(),
        met: match (q50, q99) {
            (Some(a), Some(b)) => Some(a <= 1.5 && b <= 1.5),
            _ => None,
        },
    });
    // 4. CreateTask vs pgbench.
    for (base, bar, what) in [
        ("pgbench/create-tx", 0.6, "its transaction"),
        ("pgbench/insert", 0.4, "a single-row insert"),
    ] {
        let q = r.ratio(&["create/direct", base], |rep| {
            Some(r.get("create/direct", rep, "rps")? / r.get(base, rep, "tps")?)
        });
        rows.push(Row {
            budget: format!("CreateTask: RPS / pgbench running {what}"),
            figure: format!(
                "{} ({} vs {} tps)",
                fmt(q, 2),
                fmt(r.median("create/direct", "rps"), 0),
                fmt(r.median(base, "tps"), 0)
            ),
            bar: format!("≥ {bar}"),
            met: ge(q, bar),
        });
    }
    let q = r.ratio(&["refresh/direct", "pgbench/refresh-tx"], |rep| {
        Some(r.get("refresh/direct", rep, "rps")? / r.get("pgbench/refresh-tx", rep, "tps")?)
    });
    rows.push(Row {
        budget: "Refresh: RPS / pgbench running its transaction".into(),
        figure: format!(
            "{} ({} vs {} tps)",
            fmt(q, 2),
            fmt(r.median("refresh/direct", "rps"), 0),
            fmt(r.median("pgbench/refresh-tx", "tps"), 0)
        ),
        bar: "≥ 0.5".into(),
        met: ge(q, 0.5),
    });
    // 5. Login vs argon2.
    let single = |rep: u64| {
        let a = r.get("argon2/1", rep, "reused_memory_per_second");
        let b = r.get("argon2/1", rep, "verify_password_per_second");
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };
    let cores = f64::from(args.cores);
    let q = r.ratio(&["login/direct", "argon2/1"], |rep| {
        Some(r.get("login/direct", rep, "rps")? / (cores * single(rep)?))
    });
    rows.push(Row {
        budget: format!(
            "Login: RPS / ({} cores × raw argon2id verifies per second)",
            args.cores
        ),
        figure: format!(
            "{} ({} logins/s vs {} × {}/s; {} threads together: {}/s)",
            fmt(q, 2),
            fmt(r.median("login/direct", "rps"), 1),
            args.cores,
            fmt(r.ratio(&["argon2/1"], single), 1),
            args.cores,
            fmt(
                r.median(
                    &format!("argon2/{}", args.cores),
                    "reused_memory_per_second"
                ),
                1
            )
        ),
        bar: "≥ 0.9".into(),
        met: ge(q, 0.9),
    });
    let (idle, busy) = ("get-idle/direct", "get-under-login/direct");
    let q = r.ratio(&[idle, busy], |rep| {
        Some(r.get(busy, rep, "p99_us")? / r.get(idle, rep, "p99_us")?)
    });
    rows.push(Row {
        budget: "GetTask p99 while logins saturate the hasher / idle p99".into(),
        figure: format!(
            "{}x ({} vs {} µs; logins meanwhile {}/s)",
            fmt(q, 2),
            fmt(r.median(busy, "p99_us"), 0),
            fmt(r.median(idle, "p99_us"), 0),
            fmt(r.median(&format!("{busy}/background"), "rps"), 1)
        ),
        bar: "≤ 2x".into(),
        met: le(q, 2.0),
    });
    // 6. 1,024 in flight vs 64.
    for via in ["gateway-grpc", "direct"] {
        let (l64, l256, l1024) = (
            format!("get-64/{via}"),
            format!("get-256/{via}"),
            format!("get-1024/{via}"),
        );
        let q = r.ratio(&[&l64, &l1024], |rep| {
            Some(r.get(&l1024, rep, "p99_us")? / r.get(&l64, rep, "p99_us")?)
        });
        // Answered calls per second: refusals are not throughput.
        let answered =
            |label: &str, rep| Some(r.get(label, rep, "ok")? / r.get(label, rep, "seconds")?);
        let peak = r.ratio(&[&l64, &l1024], |rep| {
            let best = [&l64, &l256, &l1024]
                .iter()
                .filter_map(|l| answered(l, rep))
                .fold(0.0f64, f64::max);
            Some(answered(&l1024, rep)? / best)
        });
        let unexpected: u64 = [&l64, &l256, &l1024]
            .iter()
            .flat_map(|l| r.reps(l))
            .filter_map(|(_, v)| {
                v.get("errors")?.as_object().map(|e| {
                    e.iter()
                        .filter(|(k, _)| k.as_str() != "RESOURCE_EXHAUSTED")
                        .filter_map(|(_, n)| n.as_u64())
                        .sum::<u64>()
                })
            })
            .sum();
        let refused = r.median(&l1024, "errors.RESOURCE_EXHAUSTED").unwrap_or(0.0);
        rows.push(Row {
            budget: format!("GetTask ({via}) 1,024 in flight vs 64: p99 ratio; RPS / peak; errors"),
            figure: format!(
                "p99 {}x ({} vs {} µs); answered calls/s {} of peak ({} vs 64: {}, 256: {}); other errors {unexpected}, RESOURCE_EXHAUSTED {refused:.0}",
                fmt(q, 2),
                fmt(r.median(&l1024, "p99_us"), 0),
                fmt(r.median(&l64, "p99_us"), 0),
                fmt(peak, 2),
                fmt(r.ratio(&[&l1024], |rep| answered(&l1024, rep)), 0),
                fmt(r.ratio(&[&l64], |rep| answered(&l64, rep)), 0),
                fmt(r.ratio(&[&l256], |rep| answered(&l256, rep)), 0),
            ),
            bar: "p99 ≤ 5x, RPS ≥ 0.95 of peak, no error but documented RESOURCE_EXHAUSTED".into(),
            met: match (q, peak) {
                (Some(q), Some(p)) => Some(q <= 5.0 && p >= 0.95 && unexpected == 0),
                _ => None,
            },
        });
    }
    // 7. Watch.
    for via in ["direct", "gateway-grpc-web-h2"] {
        let label = format!("watch/{via}");
        let q = r.ratio(&[&label], |rep| {
            Some(r.get(&label, rep, "p99_us")? / r.get(&label, rep, "extra.unary_get.p99_us")?)
        });
        rows.push(Row {
            budget: format!("WatchTasks ({via}), 1,000 other users' streams open: change-to-owner p99 / unary GetTask p99"),
            figure: format!(
                "{}x ({} vs {} µs; from the write's start: p99 {} µs)",
                fmt(q, 2),
                fmt(r.median(&label, "p99_us"), 0),
                fmt(r.median(&label, "extra.unary_get.p99_us"), 0),
                fmt(r.median(&label, "extra.end_to_end.p99_us"), 0)
            ),
            bar: "≤ 2x".into(),
            met: le(q, 2.0),
        });
    }
    // 8. Memory under mixed.
    let mixed = "mixed/gateway-grpc-web-h2";
    let mib = |label: &str, process: &str, field: &str| {
        r.median(label, &format!("end.{process}.{field}"))
            .map(|k| k / 1024.0)
    };
    for process in ["task-service", "gateway"] {
        let peak = mib(mixed, process, "peak_rss_kib");
        rows.push(Row {
            budget: format!("Peak RSS under mixed: {process}"),
            figure: format!("{} MiB", fmt(peak, 1)),
            bar: "≤ 40 MiB".into(),
            met: le(peak, 40.0),
        });
    }
    let idle_auth = mib("idle-sample", "auth-service", "rss_kib");
    let auth_peak = mib(mixed, "auth-service", "peak_rss_kib");
    let auth_bar = idle_auth.map(|idle| idle + f64::from(args.hash_permits) * 19.0 + 10.0);
    rows.push(Row {
        budget: "Peak RSS under mixed: auth-service".into(),
        figure: format!("{} MiB (idle {} MiB)", fmt(auth_peak, 1), fmt(idle_auth, 1)),
        bar: format!(
            "≤ idle + {} permits × 19 MiB + 10 MiB = {} MiB",
            args.hash_permits,
            fmt(auth_bar, 1)
        ),
        met: match (auth_peak, auth_bar) {
            (Some(p), Some(b)) => Some(p <= b),
            _ => None,
        },
    });
    // 9. Build.
    let build = r.median("build/cold", "seconds");
    rows.push(Row {
        budget: "First `cargo build` of a fresh clone, 2 cores, cold target".into(),
        figure: match build {
            Some(s) => format!(
                "{s:.0} s (machine load during it: {})",
                r.reps("build/cold")
                    .first()
                    .and_then(|(_, v)| v.get("load").and_then(Value::as_str))
                    .unwrap_or("n/a")
            ),
            None => "not measured".into(),
        },
        bar: "≤ 240 s".into(),
        met: le(build, 240.0),
    });
    // 10. Soak.
    let soak = "soak/gateway-grpc-web-h2";
    let soak_row = soak_summary(&r, soak);
    rows.push(Row {
        budget: "Mixed at half of peak, as long as possible: RSS, open files and p99 flat".into(),
        figure: soak_row.0,
        bar: "flat from minute 5 on (last third within 10% of the first third for p99 and RSS, open files ±10)"
            .into(),
        met: soak_row.1,
    });

    let mut out = String::new();
    writeln!(out, "# Benchmarks\n")?;
    writeln!(
        out,
        "Generated by `bench/run.sh` (the `bench` crate: `bench report`). Every figure is the median of \
         the repetitions of its measurement; every ratio is taken within one repetition, whose two \
         sides ran back to back on the same machine and database, and the median of those ratios is \
         shown. A measurement with any failed call is marked: its figures do not count.\n"
    )?;
    writeln!(out, "## Summary: the budget\n")?;
    writeln!(
        out,
        "| budget | figure | bar | verdict |\n|---|---|---|---|"
    )?;
    for row in &rows {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.budget,
            row.figure,
            row.bar,
            verdict(row.met)
        )?;
    }
    writeln!(out)?;
    if let Some(path) = &args.analysis
        && let Ok(text) = std::fs::read_to_string(path)
    {
        writeln!(out, "{text}\n")?;
    }

    writeln!(out, "## Other measurements\n")?;
    writeln!(out, "| measurement | figure |\n|---|---|")?;
    let refusal = "logout-refusal/direct";
    writeln!(
        out,
        "| Logout to refusal at the task-service (the token keeps working until the session event arrives; contract: within 2 s) | p50 {} ms, p99 {} ms, max {} ms; GetTask calls still served per session after Logout: {} |",
        fmt(r.median(refusal, "p50_us").map(|v| v / 1000.0), 1),
        fmt(r.median(refusal, "p99_us").map(|v| v / 1000.0), 1),
        fmt(r.median(refusal, "max_us").map(|v| v / 1000.0), 1),
        fmt(r.median(refusal, "extra.calls_still_served_mean"), 1)
    )?;
    // The pair run back to back by the noauth phase (the ordinary build
    // restarted right after the bench-no-auth one); else the budget's run.
    let with_auth = if r.reps("get-auth/direct").is_empty() {
        "get/direct"
    } else {
        "get-auth/direct"
    };
    let q = r.ratio(&["get-noauth/direct", with_auth], |rep| {
        Some(r.get("get-noauth/direct", rep, "rps")? / r.get(with_auth, rep, "rps")?)
    });
    let q_cpu = r.ratio(&["get-noauth/direct", with_auth], |rep| {
        Some(r.get("get-noauth/direct", rep, cpu)? / r.get(with_auth, rep, cpu)?)
    });
    writeln!(
        out,
        "| GetTask direct with the authentication layer compiled out (`bench-no-auth`), against the ordinary build (`{with_auth}`) | {} calls/s, {} µs task-service CPU per call; the ordinary build {} calls/s, {} µs; RPS {}x, CPU per call {}x |",
        fmt(r.median("get-noauth/direct", "rps"), 0),
        fmt(r.median("get-noauth/direct", cpu), 1),
        fmt(r.median(with_auth, "rps"), 0),
        fmt(r.median(with_auth, cpu), 1),
        fmt(q, 2),
        fmt(q_cpu, 2)
    )?;
    for label in [
        "callgrind/health-direct",
        "callgrind/get-direct",
        "callgrind/health-gateway",
        "callgrind/get-gateway",
        "callgrind/list-direct",
        "callgrind/refresh-direct",
    ] {
        writeln!(
            out,
            "| `{label}`: instructions per call under callgrind ({}) | {} |",
            r.reps(label)
                .first()
                .and_then(|(_, v)| v.get("process").and_then(Value::as_str))
                .unwrap_or(""),
            fmt(r.median(label, "instructions_per_call"), 0)
        )?;
    }
    // The CPU rows' ratios, in instructions: the same on any host.
    for (what, call, floor) in [
        (
            "GetTask direct / health Check, task-service",
            "callgrind/get-direct",
            "callgrind/health-direct",
        ),
        (
            "GetTask through the gateway / health Check through it, gateway",
            "callgrind/get-gateway",
            "callgrind/health-gateway",
        ),
    ] {
        let (Some(call), Some(floor)) = (
            r.median(call, "instructions_per_call"),
            r.median(floor, "instructions_per_call"),
        ) else {
            continue;
        };
        writeln!(
            out,
            "| {what}: instructions per call under callgrind | {}x |",
            fmt(Some(call / floor), 2)
        )?;
    }
    writeln!(out)?;

    writeln!(out, "### Attacks (services at their default limits)\n")?;
    writeln!(
        out,
        "The victim calls GetTask through the gateway at a fixed rate from its own address; its p99 \
         during each attack is compared with its p99 alone (goal ≤ 2x). The attacker's answers are \
         counted by status: refusals are the defence working.\n"
    )?;
    writeln!(
        out,
        "| attack | victim p50 µs | victim p99 µs | p99 / idle p99 | victim errors | attacker calls/s | attacker answers |\n|---|---|---|---|---|---|---|"
    )?;
    for attack in [
        "idle",
        "search",
        "logout-flood",
        "sign-in-storm",
        "health-watch",
    ] {
        let label = format!("attack/{attack}");
        let q = r.ratio(&[&label, "attack/idle"], |rep| {
            Some(r.get(&label, rep, "p99_us")? / r.get("attack/idle", rep, "p99_us")?)
        });
        let attacker = r
            .reps(&label)
            .last()
            .map(|(_, v)| {
                let mut answers = BTreeMap::new();
                if let Some(ok) = at(v, "extra.attacker.ok").and_then(Value::as_u64) {
                    answers.insert("OK".to_owned(), ok);
                }
                if let Some(errors) = at(v, "extra.attacker.errors").and_then(Value::as_object) {
                    for (k, n) in errors {
                        answers.insert(k.clone(), n.as_u64().unwrap_or(0));
                    }
                }
                if let Some(open) = at(v, "extra.streams_open") {
                    answers.insert("streams open".into(), open.as_u64().unwrap_or(0));
                }
                if let Some(refused) = at(v, "extra.streams_refused").and_then(Value::as_object) {
                    for (k, n) in refused {
                        answers.insert(format!("streams {k}"), n.as_u64().unwrap_or(0));
                    }
                }
                format!("{answers:?}")
            })
            .unwrap_or_default();
        writeln!(
            out,
            "| {attack} | {} | {} | {} | {} | {} | {} |",
            fmt(r.median(&label, "p50_us"), 0),
            fmt(r.median(&label, "p99_us"), 0),
            fmt(q, 2),
            r.errors(&label),
            fmt(r.median(&label, "extra.attacker.rps"), 0),
            attacker
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Every measurement (medians)\n")?;
    writeln!(
        out,
        "CPU is the service processes' user+system time over the measured window divided by the calls \
         (µs per call); `reps` is how many repetitions the median is over.\n"
    )?;
    writeln!(
        out,
        "| label | reps | calls/s | p50 µs | p90 µs | p99 µs | max µs | errors | auth CPU µs | tasks CPU µs | gateway CPU µs |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (label, reps) in &r.0 {
        if reps.values().all(|v| v.get("p50_us").is_none()) {
            continue;
        }
        let errors = r.errors(label);
        writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            reps.len(),
            fmt(r.median(label, "rps"), 0),
            fmt(r.median(label, "p50_us"), 0),
            fmt(r.median(label, "p90_us"), 0),
            fmt(r.median(label, "p99_us"), 0),
            fmt(r.median(label, "max_us"), 0),
            if errors == 0 {
                "0".to_owned()
            } else {
                format!("**{errors}** {}", error_names(reps))
            },
            fmt(r.median(label, "cpu_us_per_call.auth-service"), 1),
            fmt(r.median(label, "cpu_us_per_call.task-service"), 1),
            fmt(r.median(label, "cpu_us_per_call.gateway"), 1),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "### pgbench baselines\n")?;
    writeln!(
        out,
        "| script | reps | tps | mean latency ms |\n|---|---|---|---|"
    )?;
    for (label, reps) in r.0.iter().filter(|(l, _)| l.starts_with("pgbench/")) {
        writeln!(
            out,
            "| {label} | {} | {} | {} |",
            reps.len(),
            fmt(r.median(label, "tps"), 0),
            fmt(r.median(label, "latency_ms"), 3)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "### h2load (nghttp2's load generator, an outside client)\n"
    )?;
    writeln!(
        out,
        "64 calls in flight (8 connections x 8 streams), the same request bytes every call; one call of \
         each was first checked for `grpc-status: 0` with curl. CPU per call as above.\n"
    )?;
    writeln!(
        out,
        "| label | reps | calls/s | mean µs | non-2xx | tasks CPU µs | gateway CPU µs |\n|---|---|---|---|---|---|---|"
    )?;
    for (label, reps) in r.0.iter().filter(|(l, _)| l.starts_with("h2load/")) {
        writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            reps.len(),
            fmt(r.median(label, "h2load_rps"), 0),
            fmt(r.median(label, "mean_us"), 0),
            fmt(r.median(label, "non_2xx"), 0),
            fmt(r.median(label, "cpu_us_per_call.task-service"), 1),
            fmt(r.median(label, "cpu_us_per_call.gateway"), 1),
        )?;
    }
    let h2_direct = r.ratio(&["h2load/get/direct", "h2load/health/direct"], |rep| {
        Some(r.get("h2load/get/direct", rep, cpu)? / r.get("h2load/health/direct", rep, cpu)?)
    });
    let gateway_cpu = "cpu_us_per_call.gateway";
    let h2_gateway = r.ratio(
        &["h2load/get/gateway-grpc", "h2load/health/gateway-grpc"],
        |rep| {
            Some(
                r.get("h2load/get/gateway-grpc", rep, gateway_cpu)?
                    / r.get("h2load/health/gateway-grpc", rep, gateway_cpu)?,
            )
        },
    );
    writeln!(
        out,
        "\nGetTask / health, CPU per call: task-service direct {}x, gateway (gRPC) {}x.\n",
        fmt(h2_direct, 2),
        fmt(h2_gateway, 2)
    )?;
    writeln!(out, "### argon2id, raw (m=19456 KiB, t=2, p=1)\n")?;
    writeln!(
        out,
        "| threads | verifies/s, memory reused | verifies/s, `verify_password` |\n|---|---|---|"
    )?;
    for (label, _) in r.0.iter().filter(|(l, _)| l.starts_with("argon2/")) {
        writeln!(
            out,
            "| {} | {} | {} |",
            label.trim_start_matches("argon2/"),
            fmt(r.median(label, "reused_memory_per_second"), 1),
            fmt(r.median(label, "verify_password_per_second"), 1)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "### Soak\n")?;
    writeln!(out, "{}\n", soak_row.2)?;
    writeln!(out, "### Build\n")?;
    if let Some((_, v)) = r.reps("build/cold").first() {
        writeln!(
            out,
            "{}\n",
            v.get("text").and_then(Value::as_str).unwrap_or("")
        )?;
    } else {
        writeln!(out, "Not measured.\n")?;
    }
    if let Some(path) = &args.machine {
        writeln!(out, "## The machine and its noise\n")?;
        writeln!(
            out,
            "```\n{}\n```\n",
            std::fs::read_to_string(path).unwrap_or_default().trim_end()
        )?;
    }
    if let Some(path) = &args.commands {
        writeln!(out, "## Commands\n")?;
        writeln!(
            out,
            "```\n{}\n```\n",
            std::fs::read_to_string(path).unwrap_or_default().trim_end()
        )?;
    }
    std::fs::write(&args.out, out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn error_names(reps: &BTreeMap<u64, Value>) -> String {
    let mut names = BTreeSet::new();
    for v in reps.values() {
        if let Some(errors) = v.get("errors").and_then(Value::as_object) {
            names.extend(errors.keys().cloned());
        }
    }
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// The soak's verdict line, whether it is flat, and its interval table.
fn soak_summary(r: &Results, label: &str) -> (String, Option<bool>, String) {
    let Some((_, record)) = r.reps(label).into_iter().next() else {
        return ("not run".into(), None, "Not run.".into());
    };
    let intervals = record
        .get("intervals")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Judged from minute 5 on (the issue's window: minute 5 to 60), when
    // enough of the soak is left after it.
    let settled: Vec<Value> = intervals
        .iter()
        .filter(|i| at(i, "at_seconds").and_then(Value::as_f64).unwrap_or(0.0) >= 300.0)
        .cloned()
        .collect();
    let judged = if settled.len() >= 3 {
        settled
    } else {
        intervals.clone()
    };
    if judged.len() < 3 {
        return ("too short".into(), None, "Too short to judge.".into());
    }
    let third = judged.len() / 3;
    let series = |path: &str| -> Vec<f64> {
        judged
            .iter()
            .filter_map(|i| at(i, path)?.as_f64())
            .collect()
    };
    let first_last = |values: &[f64]| -> (Option<f64>, Option<f64>) {
        (
            median(values[..third.min(values.len())].to_vec()),
            median(values[values.len().saturating_sub(third)..].to_vec()),
        )
    };
    let minutes = record.get("seconds").and_then(Value::as_f64).unwrap_or(0.0) / 60.0;
    let mut flat = true;
    let mut parts = Vec::new();
    let p99 = series("p99_us");
    let (a, b) = first_last(&p99);
    if let (Some(a), Some(b)) = (a, b) {
        flat &= b <= a * 1.1;
        parts.push(format!("p99 {a:.0} → {b:.0} µs"));
    }
    for process in ["auth-service", "task-service", "gateway"] {
        let rss = series(&format!("processes.{process}.rss_kib"));
        let fds = series(&format!("processes.{process}.open_files"));
        if rss.is_empty() {
            continue;
        }
        let (a, b) = first_last(&rss);
        let (c, d) = first_last(&fds);
        if let (Some(a), Some(b), Some(c), Some(d)) = (a, b, c, d) {
            flat &= b <= a * 1.1 && d <= c + 10.0;
            parts.push(format!(
                "{process} RSS {:.1} → {:.1} MiB, open files {c:.0} → {d:.0}",
                a / 1024.0,
                b / 1024.0
            ));
        }
    }
    let errors = record
        .get("errors")
        .and_then(Value::as_object)
        .map(|e| e.values().filter_map(Value::as_u64).sum::<u64>())
        .unwrap_or(0);
    flat &= errors == 0;
    let line = format!(
        "{minutes:.1} minutes at {} calls/s (first third → last third): {}; errors {errors}",
        fmt(record.get("rps").and_then(Value::as_f64), 0),
        parts.join("; ")
    );
    let mut table = String::from(
        "| minute | calls/s | errors | p50 µs | p99 µs | auth RSS MiB | tasks RSS MiB | gateway RSS MiB | auth fds | tasks fds | gateway fds |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for interval in &intervals {
        let g = |path: &str| at(interval, path).and_then(Value::as_f64);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(g("at_seconds").map(|s| s / 60.0), 1),
            fmt(g("rps"), 0),
            fmt(g("errors"), 0),
            fmt(g("p50_us"), 0),
            fmt(g("p99_us"), 0),
            fmt(g("processes.auth-service.rss_kib").map(|k| k / 1024.0), 1),
            fmt(g("processes.task-service.rss_kib").map(|k| k / 1024.0), 1),
            fmt(g("processes.gateway.rss_kib").map(|k| k / 1024.0), 1),
            fmt(g("processes.auth-service.open_files"), 0),
            fmt(g("processes.task-service.open_files"), 0),
            fmt(g("processes.gateway.open_files"), 0),
        );
    }
    (line.clone(), Some(flat), format!("{line}\n\n{table}"))
}
