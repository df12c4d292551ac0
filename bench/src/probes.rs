//! Measurements that are not "N calls as fast as possible":
//!
//! - [`watch_fanout`]: how long a change takes to reach its owner's open
//!   `WatchTasks` streams while many streams of other users are open, next
//!   to the p99 of a unary `GetTask` in the same state;
//! - [`logout_refusal`]: how long an access token keeps working at the
//!   task-service after its session's `Logout` (until the auth-service's
//!   session-event stream tells the task-service);
//! - [`hold_health_watches`]: anonymous health `Watch` streams opened
//!   through the gateway from many addresses, held open;
//! - [`argon2_verify_rate`]: the raw argon2id verify rate of the argon2
//!   crate at the service's parameters, the ceiling of `Login`.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, PasswordVerifier, Version};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use todo_proto::{
    auth::v1::{LoginRequest, LoginResponse, LogoutRequest, LogoutResponse},
    tasks::v1::{
        GetTaskRequest, GetTaskResponse, SetTaskCompletedRequest, SetTaskCompletedResponse,
        WatchTasksRequest, WatchTasksResponse,
    },
};
use tokio::sync::mpsc;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::{
    client::{Client, Targets, Via},
    fixture::Fixture,
    load::{Outcome, code_name, histogram, summarize},
    scenario::{GET, LOGIN, LOGOUT, SET_COMPLETED, WATCH},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchResult {
    /// From the write's answer to the change on every owner's stream.
    pub fanout: Outcome,
    /// From the write's start to the change on every owner's stream.
    pub end_to_end: Outcome,
    /// Unary GetTask, one at a time, with the same streams open.
    pub unary_get: Outcome,
    pub other_streams: usize,
    pub owner_streams: usize,
    /// Events of the owner that reached other users' streams (must be 0).
    pub leaked_events: u64,
}

fn error(errors: &mut BTreeMap<String, u64>, code: Code) {
    *errors.entry(code_name(code).to_owned()).or_default() += 1;
}

/// Opens `others` streams of other users and `owner_streams` of the
/// owner, then makes `changes` changes to one of the owner's tasks.
pub async fn watch_fanout(
    clients: &[Client],
    fixture: &Fixture,
    others: usize,
    owner_streams: usize,
    changes: usize,
) -> anyhow::Result<WatchResult> {
    anyhow::ensure!(fixture.users.len() >= 2, "watch needs two users or more");
    let owner = &fixture.users[0];
    let leaked = Arc::new(AtomicU64::new(0));
    let mut holders = tokio::task::JoinSet::new();
    for index in 0..others {
        let user = &fixture.users[1 + index % (fixture.users.len() - 1)];
        let client = &clients[index % clients.len()];
        let mut stream = client
            .server_stream::<_, WatchTasksResponse>(
                WATCH,
                WatchTasksRequest {},
                Some(&user.access_token),
            )
            .await
            .map_err(|code| anyhow::anyhow!("opening other user's stream {index}: {code:?}"))?;
        let (leaked, watched) = (leaked.clone(), owner.tasks[0].clone());
        holders.spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                if event.task.is_some_and(|task| task.id == watched) {
                    // The owner's change on someone else's stream.
                    leaked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let (events, mut arrivals) = mpsc::unbounded_channel::<(usize, String, bool, Instant)>();
    for index in 0..owner_streams {
        let client = &clients[index % clients.len()];
        let mut stream = client
            .server_stream::<_, WatchTasksResponse>(
                WATCH,
                WatchTasksRequest {},
                Some(&owner.access_token),
            )
            .await
            .map_err(|code| anyhow::anyhow!("opening the owner's stream {index}: {code:?}"))?;
        let events = events.clone();
        holders.spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                if let Some(task) = event.task {
                    let _ = events.send((index, task.id, task.completed, Instant::now()));
                }
            }
        });
    }
    // Let every subscription settle before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = &clients[0];
    let task_id = owner.tasks[0].clone();
    let current: GetTaskResponse = client
        .unary(
            GET,
            GetTaskRequest {
                id: task_id.clone(),
            },
            Some(&owner.access_token),
        )
        .await
        .map_err(|code| anyhow::anyhow!("reading the watched task: {code:?}"))?;
    let mut completed = current.task.is_some_and(|task| task.completed);
    let (mut fanout, mut end_to_end, mut errors) = (histogram(), histogram(), BTreeMap::new());
    let started = Instant::now();
    for _ in 0..changes {
        completed = !completed;
        let begin = Instant::now();
        let written: Result<SetTaskCompletedResponse, Code> = client
            .unary(
                SET_COMPLETED,
                SetTaskCompletedRequest {
                    id: task_id.clone(),
                    completed,
                },
                Some(&owner.access_token),
            )
            .await;
        let answered = Instant::now();
        if let Err(code) = written {
            error(&mut errors, code);
            continue;
        }
        let mut seen = vec![false; owner_streams];
        let mut last = answered;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.iter().any(|seen| !seen) {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((index, id, state, at))) if id == task_id && state == completed => {
                    seen[index] = true;
                    last = last.max(at);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if seen.iter().any(|seen| !seen) {
            error(&mut errors, Code::DeadlineExceeded);
            continue;
        }
        let _ = fanout.record(
            (last
                .saturating_duration_since(answered)
                .as_micros()
                .try_into()
                .unwrap_or(u64::MAX))
            .max(1),
        );
        let _ =
            end_to_end.record(((last - begin).as_micros().try_into().unwrap_or(u64::MAX)).max(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();

    let (mut unary, mut unary_errors) = (histogram(), BTreeMap::new());
    let started = Instant::now();
    for n in 0..changes.max(200) * 2 {
        let id = owner.tasks[n % owner.tasks.len()].clone();
        let begin = Instant::now();
        match client
            .unary::<_, GetTaskResponse>(GET, GetTaskRequest { id }, Some(&owner.access_token))
            .await
        {
            Ok(_) => {
                let _ = unary
                    .record((begin.elapsed().as_micros().try_into().unwrap_or(u64::MAX)).max(1));
            }
            Err(code) => error(&mut unary_errors, code),
        }
    }
    let unary_seconds = started.elapsed().as_secs_f64();
    holders.abort_all();
    Ok(WatchResult {
        fanout: summarize(&fanout, errors.clone(), seconds),
        end_to_end: summarize(&end_to_end, errors, seconds),
        unary_get: summarize(&unary, unary_errors, unary_seconds),
        other_streams: others,
        owner_streams,
        leaked_events: leaked.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalResult {
    /// From Logout's answer to the first UNAUTHENTICATED GetTask.
    pub after_logout: Outcome,
    /// GetTask calls that still succeeded after Logout answered, per round.
    pub calls_still_served_mean: f64,
}

/// `rounds` times: sign in, use the token, log out, then call GetTask with
/// the same token until the task-service refuses it.
pub async fn logout_refusal(
    auth: &Client,
    tasks: &Client,
    fixture: &Fixture,
    rounds: usize,
) -> anyhow::Result<RefusalResult> {
    let (mut latency, mut errors) = (histogram(), BTreeMap::new());
    let mut still_served = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let user = &fixture.users[round % fixture.users.len()];
        let login: LoginResponse = match auth
            .unary(
                LOGIN,
                LoginRequest {
                    email: user.email.clone(),
                    password: fixture.password.clone(),
                },
                None,
            )
            .await
        {
            Ok(login) => login,
            Err(code) => {
                error(&mut errors, code);
                continue;
            }
        };
        let tokens = login.tokens.unwrap_or_default();
        let get = |token: String| {
            let id = user.tasks[0].clone();
            async move {
                tasks
                    .unary::<_, GetTaskResponse>(GET, GetTaskRequest { id }, Some(&token))
                    .await
            }
        };
        if let Err(code) = get(tokens.access_token.clone()).await {
            error(&mut errors, code);
            continue;
        }
        if let Err(code) = auth
            .unary::<_, LogoutResponse>(
                LOGOUT,
                LogoutRequest {
                    refresh_token: tokens.refresh_token.clone(),
                },
                None,
            )
            .await
        {
            error(&mut errors, code);
            continue;
        }
        let logged_out = Instant::now();
        loop {
            match get(tokens.access_token.clone()).await {
                Ok(_) if logged_out.elapsed() < Duration::from_secs(10) => still_served += 1,
                Ok(_) => {
                    error(&mut errors, Code::DeadlineExceeded);
                    break;
                }
                Err(Code::Unauthenticated) => {
                    let _ = latency.record(
                        (logged_out
                            .elapsed()
                            .as_micros()
                            .try_into()
                            .unwrap_or(u64::MAX))
                        .max(1),
                    );
                    break;
                }
                Err(code) => {
                    error(&mut errors, code);
                    break;
                }
            }
        }
    }
    Ok(RefusalResult {
        after_logout: summarize(&latency, errors, started.elapsed().as_secs_f64()),
        calls_still_served_mean: still_served as f64 / rounds.max(1) as f64,
    })
}

/// Opens `per_address` health `Watch` streams from each of `addresses`
/// through the gateway and holds them until the returned guard drops.
/// Answers how many opened and the refusals by status.
pub async fn hold_health_watches(
    targets: &Targets,
    addresses: &[IpAddr],
    per_address: usize,
) -> anyhow::Result<(tokio::task::JoinSet<()>, u64, BTreeMap<String, u64>)> {
    let mut holders = tokio::task::JoinSet::new();
    let (mut opened, mut refused) = (0, BTreeMap::new());
    for address in addresses {
        let client = Client::connect(targets, Via::Grpc, Some(*address)).await?;
        for _ in 0..per_address {
            match client
                .server_stream::<_, HealthCheckResponse>(
                    "/grpc.health.v1.Health/Watch",
                    HealthCheckRequest {
                        service: String::new(),
                    },
                    None,
                )
                .await
            {
                Ok(mut stream) => {
                    // A refusal can also arrive as the stream's status.
                    match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                        Ok(Some(Err(code))) => error(&mut refused, code),
                        _ => {
                            opened += 1;
                            holders.spawn(
                                async move { while let Some(Ok(_)) = stream.next().await {} },
                            );
                        }
                    }
                }
                Err(code) => error(&mut refused, code),
            }
        }
    }
    Ok((holders, opened, refused))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Argon2Rate {
    pub threads: usize,
    pub seconds: f64,
    /// Verifies per second, all threads, memory block reused (as the
    /// service's hashing threads do).
    pub reused_memory_per_second: f64,
    /// The same with the crate's `verify_password` (a fresh block each).
    pub verify_password_per_second: f64,
}

/// argon2id verifies per second at m=`memory_kib`, t=`iterations`, p=1 on
/// `threads` threads for about `duration` each way.
pub fn argon2_verify_rate(
    threads: usize,
    memory_kib: u32,
    iterations: u32,
    duration: Duration,
) -> anyhow::Result<Argon2Rate> {
    let params =
        Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let password = b"correct horse battery staple, benchmarked";
    let salt =
        argon2::password_hash::SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let phc = argon
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_vec();
    let mut expected = [0u8; 32];
    argon
        .hash_password_into(password, &salt_raw, &mut expected)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let run = |reuse: bool| -> anyhow::Result<f64> {
        let total = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                    let mut blocks = vec![Block::default(); params.block_count()];
                    let parsed = argon2::PasswordHash::new(&phc).expect("just made");
                    let begin = Instant::now();
                    let mut done = 0;
                    while begin.elapsed() < duration {
                        let ok = if reuse {
                            let mut out = [0u8; 32];
                            argon
                                .hash_password_into_with_memory(
                                    password,
                                    &salt_raw,
                                    &mut out,
                                    &mut blocks[..],
                                )
                                .is_ok()
                                && out == expected
                        } else {
                            argon.verify_password(password, &parsed).is_ok()
                        };
                        assert!(ok, "the right password verifies");
                        done += 1;
                    }
                    total.fetch_add(done, Ordering::Relaxed);
                });
            }
        });
        Ok(total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    };
    let reused_memory_per_second = run(true)?;
    let verify_password_per_second = run(false)?;
    Ok(Argon2Rate {
        threads,
        seconds: duration.as_secs_f64(),
        reused_memory_per_second,
        verify_password_per_second,
    })
}
