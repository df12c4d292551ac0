//! A measurement, not a behaviour test, so a benchmark binary
//! (`TEST_POSTGRES_URL=... cargo bench -p task-service --bench paging_cost`):
//! `ListTasks` for a user with 100,000 tasks costs about the same on the
//! first page and the thousandth, on each backend, because every order is
//! a keyset range scan over an index that starts with the owner.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::{Duration, Instant};

use test_harness::*;
use todo_proto::tasks::v1 as pb;
use uuid::Uuid;

const TASKS: i64 = 100_000;
const PAGE: i32 = 100;

/// Bulk-inserts `count` tasks of `owner` straight into the database.
async fn seed(backend: Backend, url: &str, owner: Uuid, count: i64) {
    let now = chrono::Utc::now();
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                 INSERT INTO tasks (id, owner, title, description, search_title, search_description, completed, \
                 priority, due_time, create_time, update_time, complete_time, version, request_id) \
                 SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-7' || \
                 substr(lower(hex(randomblob(2))), 2) || '-8' || substr(lower(hex(randomblob(2))), 2) || '-' || \
                 lower(hex(randomblob(6))), ?1, 'task ' || i, '', 'task ' || i, '', i % 3 = 0, i % 4, \
                 CASE WHEN i % 2 = 0 THEN ?3 + i * 60000000 END, ?3 - i * 1000000, ?3, NULL, 1, NULL FROM n",
            )
            .bind(owner.to_string())
            .bind(count)
            .bind(now.timestamp_micros())
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO tasks (id, owner, title, description, search_title, search_description, completed, \
                 priority, due_time, create_time, update_time, complete_time, version, request_id) \
                 SELECT gen_random_uuid(), $1, 'task ' || i, '', 'task ' || i, '', i % 3 = 0, i % 4, \
                 CASE WHEN i % 2 = 0 THEN $3 + i * interval '1 minute' END, $3 - i * interval '1 second', $3, \
                 NULL, 1, NULL FROM generate_series(1, $2) AS i",
            )
            .bind(owner)
            .bind(count)
            .bind(now)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
        }
    }
}

/// The median latency of `runs` identical calls.
async fn median(client: &mut TaskClient, request: &pb::ListTasksRequest, runs: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let page = client
            .list_tasks(request.clone())
            .await
            .unwrap()
            .into_inner();
        times.push(started.elapsed());
        assert_eq!(page.tasks.len(), PAGE as usize);
    }
    times.sort();
    times[runs / 2]
}

#[tokio::main]
async fn main() {
    for backend in Backend::all() {
        let stack = TaskStack::start(backend).await;
        let (alice, mut client) = stack.user("alice").await;
        // Alice's tasks among another user's as many.
        seed(backend, &stack.database.url, Uuid::now_v7(), TASKS).await;
        seed(backend, &stack.database.url, alice.id, TASKS).await;
        for order_by in [
            "create_time desc",
            "create_time",
            "due_time",
            "priority desc",
            "title",
        ] {
            let first = pb::ListTasksRequest {
                page_size: PAGE,
                order_by: order_by.into(),
                ..Default::default()
            };
            let mut request = first.clone();
            for _ in 1..1000 {
                let page = client
                    .list_tasks(request.clone())
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(page.total_size as i64, TASKS);
                request.page_token = page.next_page_token;
            }
            let first_page = median(&mut client, &first, 21).await;
            let thousandth_page = median(&mut client, &request, 21).await;
            println!(
                "{backend:8} {order_by:16} page 1: {first_page:>10.2?}  page 1000: {thousandth_page:>10.2?}  \
                 ratio {:.2}",
                thousandth_page.as_secs_f64() / first_page.as_secs_f64()
            );
            assert!(
                thousandth_page < first_page * 2 + Duration::from_millis(5),
                "{backend} {order_by}: page 1000 took {thousandth_page:?}, page 1 {first_page:?}"
            );
        }
        stack.stop().await;
    }
}
