//! One task's life through the RPCs, as CONTRACT.md states them, on every
//! backend: create, get, update under a field mask, complete and delete;
//! every invalid field named in the refusal; ids and owners set by the
//! server, never by a request.

use prost_types::Timestamp;
use test_harness::*;
use todo_proto::tasks::v1::{self as pb, Priority};
use tonic::Code;

#[tokio::test]
async fn create_get_update_complete_delete_round_trip() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
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
        let stack = TaskStack::start(backend).await;
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
async fn the_owner_cannot_be_set_by_a_request_and_ids_are_generated() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
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
