//! The task RPCs, as CONTRACT.md states them, on every backend.

mod support;

use std::collections::HashSet;

use prost_types::{FieldMask, Timestamp};
use support::*;
use todo_proto::tasks::v1::{self as pb, Priority};
use tonic::Code;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|path| path.to_string()).collect(),
    })
}

#[tokio::test]
async fn create_get_update_complete_delete_round_trip() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;

        let due = Timestamp {
            seconds: 1_900_000_000,
            nanos: 123_456_000,
        };
        let created = create(
            &mut alice,
            pb::CreateTaskRequest {
                title: "  Buy milk  ".into(),
                description: "two litres".into(),
                priority: Priority::High as i32,
                due_time: Some(due),
                request_id: String::new(),
            },
        )
        .await;
        assert_eq!(created.title, "Buy milk", "the title is trimmed");
        assert_eq!(created.description, "two litres");
        assert_eq!(created.priority, Priority::High as i32);
        assert_eq!(created.due_time, Some(due));
        assert!(!created.completed);
        assert!(created.complete_time.is_none());
        assert!(created.create_time.is_some() && created.create_time == created.update_time);
        assert!(!created.etag.is_empty());
        let id: uuid::Uuid = created.id.parse().expect("the server assigns a UUID");
        assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");

        let got = alice
            .get_task(pb::GetTaskRequest {
                id: created.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.task.as_ref(), Some(&created));

        let updated = alice
            .update_task(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: created.id.clone(),
                    title: "Buy oat milk".into(),
                    description: "ignored: not in the mask".into(),
                    due_time: None,
                    ..pb::Task::default()
                }),
                update_mask: mask(&["title", "due_time"]),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(updated.title, "Buy oat milk");
        assert_eq!(
            updated.description, "two litres",
            "fields outside the mask are kept"
        );
        assert_eq!(updated.due_time, None, "a masked empty due_time clears it");
        assert_ne!(updated.etag, created.etag, "every write changes the etag");

        let completed = alice
            .set_task_completed(pb::SetTaskCompletedRequest {
                id: created.id.clone(),
                completed: true,
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert!(completed.completed);
        assert!(completed.complete_time.is_some());

        let reopened = alice
            .update_task(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: created.id.clone(),
                    completed: false,
                    ..pb::Task::default()
                }),
                update_mask: mask(&["completed"]),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert!(!reopened.completed);
        assert!(
            reopened.complete_time.is_none(),
            "complete_time is set only while completed"
        );

        alice
            .delete_task(pb::DeleteTaskRequest {
                id: created.id.clone(),
                etag: reopened.etag.clone(),
            })
            .await
            .expect("delete with the current etag");
        assert_eq!(
            code(
                alice
                    .get_task(pb::GetTaskRequest {
                        id: created.id.clone()
                    })
                    .await
            ),
            Code::NotFound
        );
        assert_eq!(
            code(
                alice
                    .delete_task(pb::DeleteTaskRequest {
                        id: created.id,
                        etag: String::new()
                    })
                    .await
            ),
            Code::NotFound
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_fields_are_invalid_argument_naming_each_field() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;

        let status = alice
            .create_task(pb::CreateTaskRequest {
                title: "   ".into(),
                description: "d".repeat(4001),
                priority: 42,
                due_time: Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                request_id: "not-a-uuid".into(),
            })
            .await
            .unwrap_err();
        let mut fields = bad_fields(&status);
        fields.sort();
        assert_eq!(
            fields,
            ["description", "due_time", "priority", "request_id", "title"]
        );

        assert_eq!(
            bad_fields(
                &alice
                    .create_task(titled(&"t".repeat(201)))
                    .await
                    .unwrap_err()
            ),
            ["title"]
        );
        create(&mut alice, titled(&"é".repeat(200))).await;
        create(
            &mut alice,
            pb::CreateTaskRequest {
                description: "d".repeat(4000),
                ..titled("long description")
            },
        )
        .await;

        // A missing id is a validation error; a malformed one names no task
        // and is covered with the unknown ids in isolation.rs.
        let status = alice
            .get_task(pb::GetTaskRequest { id: " ".into() })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["id"]);

        for page_size in [-1, i32::MIN] {
            let status = alice
                .list_tasks(pb::ListTasksRequest {
                    page_size,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(bad_fields(&status), ["page_size"]);
        }
        for order_by in [
            "id",
            "title desc",
            "priority",
            "create_time asc",
            "due_time desc",
        ] {
            let request = pb::ListTasksRequest {
                order_by: order_by.into(),
                ..Default::default()
            };
            assert_eq!(
                bad_fields(&alice.list_tasks(request).await.unwrap_err()),
                ["order_by"],
                "{order_by}"
            );
        }

        let task = create(&mut alice, titled("x")).await;
        let update = |paths: &[&str], task: pb::Task| pb::UpdateTaskRequest {
            task: Some(task),
            update_mask: mask(paths),
        };
        let with_id = pb::Task {
            id: task.id.clone(),
            ..pb::Task::default()
        };
        for (paths, field) in [
            (&[][..], "update_mask"),
            (&["owner"][..], "update_mask"),
            (&["id"][..], "update_mask"),
            (&["etag"][..], "update_mask"),
            (&["title"][..], "task.title"),
        ] {
            let status = alice
                .update_task(update(paths, with_id.clone()))
                .await
                .unwrap_err();
            assert_eq!(bad_fields(&status), [field], "{paths:?}");
        }
        let status = alice
            .update_task(pb::UpdateTaskRequest {
                task: Some(with_id.clone()),
                update_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["update_mask"]);
        let status = alice
            .update_task(update(
                &["priority"],
                pb::Task {
                    priority: -3,
                    ..with_id.clone()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["task.priority"]);
        let status = alice
            .update_task(pb::UpdateTaskRequest {
                task: None,
                update_mask: mask(&["title"]),
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["task"]);

        let unchanged = alice
            .get_task(pb::GetTaskRequest {
                id: task.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(unchanged, task, "a refused update writes nothing");
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_returns_the_first_task() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
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
        let stack = Stack::start(backend).await;
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
        let stack = Stack::start(backend).await;
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
        let stack = Stack::start(backend).await;
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
        let stack = Stack::start(backend).await;
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
                client.update_task(request).await.map(|r| r.into_inner())
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

#[tokio::test]
async fn list_filters_orders_and_counts() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        let specs = [
            ("banana", "Yellow FRUIT", Priority::Low, at(3_000)),
            ("Apple", "red fruit", Priority::High, None),
            ("cherry", "50% off_sale", Priority::Medium, at(1_000)),
            ("date", "ÉCLAIR shop", Priority::Unspecified, at(2_000)),
        ];
        let mut created = Vec::new();
        for (title, description, priority, due_time) in specs {
            created.push(
                create(
                    &mut alice,
                    pb::CreateTaskRequest {
                        title: title.into(),
                        description: description.into(),
                        priority: priority as i32,
                        due_time,
                        request_id: String::new(),
                    },
                )
                .await,
            );
        }
        alice
            .set_task_completed(pb::SetTaskCompletedRequest {
                id: created[1].id.clone(),
                completed: true,
            })
            .await
            .unwrap();

        let titles =
            |tasks: Vec<pb::Task>| tasks.into_iter().map(|task| task.title).collect::<Vec<_>>();
        let list = |order_by: &str| pb::ListTasksRequest {
            order_by: order_by.into(),
            ..Default::default()
        };

        assert_eq!(
            titles(list_all(&mut alice, list("")).await),
            ["date", "cherry", "Apple", "banana"]
        );
        assert_eq!(
            titles(list_all(&mut alice, list("create_time desc")).await),
            ["date", "cherry", "Apple", "banana"]
        );
        assert_eq!(
            titles(list_all(&mut alice, list("create_time")).await),
            ["banana", "Apple", "cherry", "date"]
        );
        assert_eq!(
            titles(list_all(&mut alice, list("due_time")).await),
            ["cherry", "date", "banana", "Apple"]
        );
        assert_eq!(
            titles(list_all(&mut alice, list("priority desc")).await),
            ["Apple", "cherry", "banana", "date"]
        );
        assert_eq!(
            titles(list_all(&mut alice, list("title")).await),
            ["Apple", "banana", "cherry", "date"]
        );

        let done = pb::ListTasksRequest {
            completed: Some(true),
            ..Default::default()
        };
        assert_eq!(titles(list_all(&mut alice, done).await), ["Apple"]);
        let open = pb::ListTasksRequest {
            completed: Some(false),
            ..Default::default()
        };
        assert_eq!(
            alice
                .list_tasks(open)
                .await
                .unwrap()
                .into_inner()
                .total_size,
            3
        );

        let search = |query: &str| pb::ListTasksRequest {
            query: query.into(),
            order_by: "title".into(),
            ..Default::default()
        };
        assert_eq!(
            titles(list_all(&mut alice, search("FRUIT")).await),
            ["Apple", "banana"]
        );
        assert_eq!(
            titles(list_all(&mut alice, search("aPPle")).await),
            ["Apple"]
        );
        assert_eq!(
            titles(list_all(&mut alice, search("éclair")).await),
            ["date"],
            "case folding is Unicode-aware"
        );
        assert_eq!(
            titles(list_all(&mut alice, search("%")).await),
            ["cherry"],
            "% is a literal"
        );
        assert_eq!(
            titles(list_all(&mut alice, search("f_")).await),
            ["cherry"],
            "_ is a literal"
        );
        assert!(
            list_all(&mut alice, search("nothing like this"))
                .await
                .is_empty()
        );

        let page = alice
            .list_tasks(pb::ListTasksRequest {
                page_size: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.tasks.len(), 3);
        assert_eq!(page.total_size, 4);
        assert!(!page.next_page_token.is_empty());
        let last = alice
            .list_tasks(pb::ListTasksRequest {
                page_size: 3,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(titles(last.tasks), ["banana"]);
        assert!(
            last.next_page_token.is_empty(),
            "the last page has no next token"
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn page_size_zero_means_fifty_and_above_five_hundred_means_five_hundred() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let mut calls = Vec::new();
        for i in 0..501 {
            let mut client = alice.clone();
            calls.push(tokio::spawn(async move {
                create(&mut client, titled(&format!("task {i}"))).await
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        let page = |page_size| pb::ListTasksRequest {
            page_size,
            ..Default::default()
        };
        let default = alice.list_tasks(page(0)).await.unwrap().into_inner();
        assert_eq!(default.tasks.len(), 50);
        assert_eq!(default.total_size, 501);
        let capped = alice.list_tasks(page(10_000)).await.unwrap().into_inner();
        assert_eq!(capped.tasks.len(), 500);
        assert!(!capped.next_page_token.is_empty());
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tampered_or_replayed_page_tokens_are_invalid_argument() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let (_, mut bob) = stack.user("bob").await;
        for i in 0..5 {
            create(&mut alice, titled(&format!("a{i}"))).await;
            create(&mut bob, titled(&format!("b{i}"))).await;
        }
        let first = pb::ListTasksRequest {
            page_size: 2,
            ..Default::default()
        };
        let token = alice
            .list_tasks(first.clone())
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        assert!(!token.is_empty());
        let with_token = |token: &str, request: pb::ListTasksRequest| pb::ListTasksRequest {
            page_token: token.into(),
            ..request
        };

        alice
            .list_tasks(with_token(&token, first.clone()))
            .await
            .expect("the token works as issued");
        let replays = [
            pb::ListTasksRequest {
                completed: Some(false),
                ..first.clone()
            },
            pb::ListTasksRequest {
                query: "a".into(),
                ..first.clone()
            },
            pb::ListTasksRequest {
                order_by: "title".into(),
                ..first.clone()
            },
            pb::ListTasksRequest {
                order_by: "create_time".into(),
                ..first.clone()
            },
        ];
        for request in replays {
            let status = alice
                .list_tasks(with_token(&token, request.clone()))
                .await
                .unwrap_err();
            assert_eq!(bad_fields(&status), ["page_token"], "{request:?}");
        }
        let status = bob
            .list_tasks(with_token(&token, first.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            bad_fields(&status),
            ["page_token"],
            "another user's token is refused"
        );

        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [
            tampered.as_str(),
            "garbage",
            "a.b",
            &token[..token.len() - 2],
        ] {
            let status = alice
                .list_tasks(with_token(bad, first.clone()))
                .await
                .unwrap_err();
            assert_eq!(bad_fields(&status), ["page_token"], "{bad}");
        }
        // A larger page size with the same filters is fine (AIP-158).
        let bigger = pb::ListTasksRequest {
            page_size: 50,
            ..first
        };
        let rest = alice
            .list_tasks(with_token(&token, bigger))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.tasks.len(), 3);
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn paging_returns_every_task_exactly_once_while_tasks_are_created() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let mut existing = HashSet::new();
        for i in 0..60 {
            existing.insert(create(&mut alice, titled(&format!("before {i}"))).await.id);
        }
        for order_by in [
            "create_time desc",
            "create_time",
            "title",
            "priority desc",
            "due_time",
        ] {
            // A writer keeps adding tasks while the pages are walked.
            let writer = {
                let mut client = alice.clone();
                let order_by = order_by.to_owned();
                tokio::spawn(async move {
                    for i in 0..30 {
                        create(&mut client, titled(&format!("during {order_by} {i}"))).await;
                    }
                })
            };
            let mut seen = Vec::new();
            let mut request = pb::ListTasksRequest {
                page_size: 7,
                order_by: order_by.into(),
                ..Default::default()
            };
            loop {
                let page = alice
                    .list_tasks(request.clone())
                    .await
                    .unwrap()
                    .into_inner();
                seen.extend(page.tasks.into_iter().map(|task| task.id));
                if page.next_page_token.is_empty() {
                    break;
                }
                request.page_token = page.next_page_token;
                tokio::task::yield_now().await;
            }
            writer.await.unwrap();
            let unique: HashSet<_> = seen.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "no task is returned twice ({order_by})"
            );
            assert!(
                existing.is_subset(&unique),
                "every task that existed is returned ({order_by})"
            );
            existing = list_all(&mut alice, Default::default())
                .await
                .into_iter()
                .map(|task| task.id)
                .collect();
        }
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_owner_cannot_be_set_by_a_request_and_ids_are_generated() {
    on_each_backend(|backend| async move {
        let stack = Stack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let (_, mut bob) = stack.user("bob").await;
        // A client-chosen id in an update names nothing of theirs.
        let made_up = uuid::Uuid::now_v7().to_string();
        let status = alice
            .update_task(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: made_up,
                    title: "x".into(),
                    ..pb::Task::default()
                }),
                update_mask: mask(&["title"]),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let a = create(&mut alice, titled("mine")).await;
        let b = create(&mut bob, titled("mine")).await;
        assert_ne!(a.id, b.id);
        assert_eq!(list_all(&mut bob, Default::default()).await, [b]);
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_page_may_be_larger_than_the_request_size_limit() {
    on_each_backend(|backend| async move {
        // Requests are capped at 16 KiB here; a page of 20 tasks with
        // 4,000-character descriptions is about 80 KB and must still arrive.
        let stack = Stack::start_with(backend, serving::clock::Clock::default(), |config| {
            config.transport.max_message_bytes = 16 * 1024;
        })
        .await;
        let (_, mut alice) = stack.user("alice").await;
        for i in 0..20 {
            create(
                &mut alice,
                pb::CreateTaskRequest {
                    description: "d".repeat(4000),
                    ..titled(&format!("long {i}"))
                },
            )
            .await;
        }
        let page = alice
            .list_tasks(pb::ListTasksRequest {
                page_size: 50,
                ..Default::default()
            })
            .await
            .expect("a large page")
            .into_inner();
        assert_eq!(page.tasks.len(), 20);
        stack.stop().await;
    })
    .await;
}
