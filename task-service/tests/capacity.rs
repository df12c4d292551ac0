//! The replica's bound on calls in flight from all users together
//! (`--max-calls-in-flight`): past it, a call is refused at once with a
//! `RetryInfo` instead of queued, health is never refused, and a place
//! that is freed serves again.

use std::time::{Duration, Instant};

use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

#[tokio::test]
async fn calls_past_the_replicas_capacity_are_refused_at_once() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Default::default(), |config| {
            config.max_calls_in_flight = 2;
        })
        .await;
        let (holder, _) = stack.user("holder").await;
        let (_, mut other) = stack.user("other").await;
        let mine = create(&mut other, titled("a task")).await;
        let get = pb::GetTaskRequest {
            id: mine.id.clone(),
        };

        // Two calls whose requests never end take both places. A probe
        // that is served while one of them arrives leaves it refused: open
        // it again until a probe finds both places taken.
        let deadline = Instant::now() + PATIENCE;
        let mut held: Vec<HeldCall> = Vec::new();
        loop {
            held.retain(HeldCall::unanswered);
            while held.len() < 2 {
                held.push(stack.tasks.hold_call(&holder.token));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if other.get_task(get.clone()).await.is_err() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the held calls never took both places"
            );
        }

        // Any user's next call is refused, saying when to retry.
        let refused = other.get_task(get.clone()).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        let retry = refused.get_error_details().retry_info().cloned();
        assert!(
            retry.and_then(|retry| retry.retry_delay).is_some(),
            "a RetryInfo: {refused:?}"
        );
        // The probes are not API calls: an overloaded replica still answers.
        assert_eq!(
            stack.tasks.health(task_service::SERVICE_NAME).await,
            Some(ServingStatus::Serving)
        );

        // A place freed serves again.
        drop(held.pop());
        eventually(PATIENCE, "a freed place serves a call", || {
            let (mut other, get) = (other.clone(), get.clone());
            async move { other.get_task(get).await.is_ok() }
        })
        .await;
    })
    .await;
}
