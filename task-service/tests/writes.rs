//! Writes that are retried, raced or cut short: a create retried with its
//! request id makes one task, completing twice changes nothing, a stale
//! etag is refused and writes nothing, concurrent updates with one etag
//! have one winner, and a deadline mid-write leaves no partial write.

use std::collections::HashSet;

use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_returns_the_first_task() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let (_, mut bob) = stack.user("bob").await;
        let request_id = uuid::Uuid::new_v4().to_string();
        let request = pb::CreateTaskRequest {
            request_id: request_id.clone(),
            ..titled("once")
        };

        // Ten concurrent retries of one call make one task.
        let mut calls = Vec::new();
        for _ in 0..10 {
            let (mut client, request) = (alice.clone(), request.clone());
            calls.push(tokio::spawn(
                async move { create(&mut client, request).await },
            ));
        }
        let mut ids = HashSet::new();
        for call in calls {
            ids.insert(call.await.unwrap().id);
        }
        assert_eq!(ids.len(), 1, "every retry returns the same task");
        let again = create(
            &mut alice,
            pb::CreateTaskRequest {
                request_id: request_id.clone(),
                ..titled("other title")
            },
        )
        .await;
        assert!(ids.contains(&again.id));
        assert_eq!(again.title, "once", "the first call's task, not a new one");
        assert_eq!(list_all(&mut alice, Default::default()).await.len(), 1);

        // The key is per user: bob's call with the same request_id is his own.
        let bobs = create(&mut bob, request).await;
        assert!(!ids.contains(&bobs.id));
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_deadline_that_fires_mid_write_leaves_no_partial_write() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        // Deadlines from nothing to a few milliseconds: some calls are cut
        // before their write, some during it, some after.
        let deadline = |i: u64| std::time::Duration::from_micros(100 * i);
        let cut = |status: &tonic::Status| {
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        };
        let create_request = |i: u64, request_id: &str| pb::CreateTaskRequest {
            title: format!("task {i}"),
            description: format!("{i} ").repeat(500),
            request_id: request_id.to_owned(),
            ..Default::default()
        };
        let mut first_answers = Vec::new();
        for i in 0..40 {
            let request_id = uuid::Uuid::new_v4().to_string();
            let mut request = tonic::Request::new(create_request(i, &request_id));
            request.set_timeout(deadline(i));
            let answer = match alice.create_task(request).await {
                Ok(response) => response.into_inner().task,
                Err(status) => {
                    cut(&status);
                    None
                }
            };
            first_answers.push((i, request_id, answer));
        }
        assert!(
            first_answers[0].2.is_none(),
            "a zero deadline cuts the call"
        );
        // Retrying each create converges on one whole task per request id.
        for (i, request_id, answer) in &first_answers {
            let task = create(&mut alice, create_request(*i, request_id)).await;
            assert_eq!(task.title, format!("task {i}"));
            assert_eq!(task.description, format!("{i} ").repeat(500));
            if let Some(answer) = answer {
                assert_eq!(answer.id, task.id, "the retry returns the first task");
            }
        }
        let tasks = list_all(&mut alice, Default::default()).await;
        assert_eq!(tasks.len(), 40, "no duplicate and no lost task");

        // An update of two fields either happens whole or not at all.
        let id = tasks[0].id.clone();
        for i in 0..40 {
            let mut request = tonic::Request::new(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: id.clone(),
                    title: format!("update {i}"),
                    description: format!("{i} ").repeat(500),
                    ..Default::default()
                }),
                update_mask: mask(&["title", "description"]),
            });
            request.set_timeout(deadline(i));
            if let Err(status) = alice.update_task(request).await {
                cut(&status);
            }
        }
        let task = alice
            .get_task(pb::GetTaskRequest { id })
            .await
            .expect("GetTask")
            .into_inner()
            .task
            .expect("a task");
        let n = task
            .title
            .strip_prefix("update ")
            .map(str::to_owned)
            .unwrap_or_else(|| task.title.strip_prefix("task ").unwrap().to_owned());
        assert_eq!(
            task.description,
            format!("{n} ").repeat(500),
            "both fields from one write"
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn set_task_completed_is_idempotent() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let task = create(&mut alice, titled("idempotent")).await;
        let set = |completed| pb::SetTaskCompletedRequest {
            id: task.id.clone(),
            completed,
        };

        let unchanged = alice
            .set_task_completed(set(false))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(unchanged, task, "setting the current state changes nothing");
        let first = alice
            .set_task_completed(set(true))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let second = alice
            .set_task_completed(set(true))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(first, second, "same etag, same complete_time");
        assert!(second.completed);
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_stale_etag_is_aborted_and_writes_nothing() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let task = create(&mut alice, titled("v1")).await;
        let rename = |title: &str, etag: &str| pb::UpdateTaskRequest {
            task: Some(pb::Task {
                id: task.id.clone(),
                title: title.into(),
                etag: etag.into(),
                ..pb::Task::default()
            }),
            update_mask: mask(&["title"]),
        };
        let v2 = alice
            .update_task(rename("v2", &task.etag))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        for stale in [task.etag.as_str(), "garbage", "\"999\""] {
            assert_eq!(
                code(alice.update_task(rename("lost", stale)).await),
                Code::Aborted,
                "{stale}"
            );
            let delete = pb::DeleteTaskRequest {
                id: task.id.clone(),
                etag: stale.into(),
            };
            assert_eq!(
                code(alice.delete_task(delete).await),
                Code::Aborted,
                "{stale}"
            );
        }
        let current = alice
            .get_task(pb::GetTaskRequest {
                id: task.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .task;
        assert_eq!(current.as_ref(), Some(&v2));
        // No etag: unconditional.
        alice
            .update_task(rename("v3", ""))
            .await
            .expect("an update without etag always applies");
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_updates_with_the_same_etag_have_exactly_one_winner() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let task = create(&mut alice, titled("contended")).await;
        let mut calls = Vec::new();
        for i in 0..12 {
            let mut client = alice.clone();
            let request = pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: task.id.clone(),
                    title: format!("writer {i}"),
                    etag: task.etag.clone(),
                    ..pb::Task::default()
                }),
                update_mask: mask(&["title"]),
            };
            calls.push(tokio::spawn(async move {
                client
                    .update_task(request)
                    .await
                    .map(tonic::Response::into_inner)
            }));
        }
        let mut winners = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(response) => winners.push(response.task.unwrap()),
                Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins");
        let current = alice
            .get_task(pb::GetTaskRequest { id: task.id })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(current, winners[0]);
        stack.stop().await;
    })
    .await;
}
