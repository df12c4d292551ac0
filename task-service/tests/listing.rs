//! ListTasks: filters, orders, search and counts; page sizes and their
//! bounds; page tokens bound to their query and user; and paging that
//! returns every task exactly once while tasks are being created.

use std::collections::HashSet;

use futures::StreamExt;
use prost_types::Timestamp;
use test_harness::*;
use todo_proto::tasks::v1::{self as pb, Priority};

#[tokio::test]
async fn list_filters_orders_and_counts() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
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
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        // As a client would: a few calls at a time, within the per-user
        // budget of calls in flight, however slow the machine.
        futures::stream::iter(0..501)
            .for_each_concurrent(8, |i| {
                let mut client = alice.clone();
                async move {
                    create(&mut client, titled(&format!("task {i}"))).await;
                }
            })
            .await;
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
        let stack = TaskStack::start(backend).await;
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
        let stack = TaskStack::start(backend).await;
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
async fn a_page_may_be_larger_than_the_request_size_limit() {
    on_each_backend(|backend| async move {
        // Requests are capped at 16 KiB here; a page of 20 tasks with
        // 4,000-character descriptions is about 80 KB and must still arrive.
        let stack = TaskStack::start_with(backend, serving::clock::Clock::default(), |config| {
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

/// A page with no tasks still carries the count: for a user who never had a
/// task, for a filter nothing matches, and past the last task (the page
/// and the count are one statement, the count joined to the page).
#[tokio::test]
async fn an_empty_page_still_counts() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut bob) = stack.user("bob").await;
        let reader = bob.clone();
        let page = |request: pb::ListTasksRequest| {
            let mut reader = reader.clone();
            async move { reader.list_tasks(request).await.unwrap().into_inner() }
        };
        let never = page(pb::ListTasksRequest::default()).await;
        assert!(never.tasks.is_empty() && never.next_page_token.is_empty());
        assert_eq!(never.total_size, 0);

        for title in ["one", "two"] {
            create(
                &mut bob,
                pb::CreateTaskRequest {
                    title: title.into(),
                    ..Default::default()
                },
            )
            .await;
        }
        let done = page(pb::ListTasksRequest {
            completed: Some(true),
            ..Default::default()
        })
        .await;
        assert!(done.tasks.is_empty(), "{:?}", done.tasks);
        assert_eq!(done.total_size, 0);
        let open = page(pb::ListTasksRequest {
            completed: Some(false),
            page_size: 2,
            ..Default::default()
        })
        .await;
        assert_eq!((open.tasks.len(), open.total_size), (2, 2));
        assert!(
            open.next_page_token.is_empty(),
            "exactly a page: no more follow"
        );
        for order_by in ["create_time", "due_time", "priority desc", "title"] {
            let ordered = page(pb::ListTasksRequest {
                order_by: order_by.into(),
                page_size: 1,
                ..Default::default()
            })
            .await;
            assert_eq!(ordered.tasks.len(), 1, "{order_by}");
            assert_eq!(ordered.total_size, 2, "{order_by}");
            let rest = page(pb::ListTasksRequest {
                order_by: order_by.into(),
                page_size: 1,
                page_token: ordered.next_page_token,
                ..Default::default()
            })
            .await;
            assert_eq!((rest.tasks.len(), rest.total_size), (1, 2), "{order_by}");
            assert!(rest.next_page_token.is_empty(), "{order_by}");
        }
        stack.stop().await;
    })
    .await;
}
