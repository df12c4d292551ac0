//! What one user may take of the task-service, and that another user keeps
//! being served while someone takes it all (checklist I3, I4): searches
//! examine a bounded window, calls in flight and writes are budgeted per
//! user, and the number of tasks is capped.

use std::time::Duration;

use serving::CancellationToken;
use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// A search crafted to be slow with a naive substring match: 198 `a`s and
/// a `b`, over descriptions of 3,999 `a`s and a `b`.
fn crafted_query() -> String {
    format!("{}b", "a".repeat(198))
}

#[tokio::test]
async fn one_users_costly_searches_do_not_starve_another_users_reads() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Default::default(), |config| {
            config.max_calls_in_flight_per_user = 4;
        })
        .await;
        let (_, attacker) = stack.user("attacker").await;
        let (_, mut victim) = stack.user("victim").await;
        let mine = create(&mut victim, titled("the victim's task")).await;

        let description = format!("{}b", "a".repeat(3999));
        let mut writer = attacker.clone();
        for i in 0..300 {
            create(
                &mut writer,
                pb::CreateTaskRequest {
                    title: format!("{i} {}", "a".repeat(150)),
                    description: description.clone(),
                    ..pb::CreateTaskRequest::default()
                },
            )
            .await;
        }

        // Twelve searchers, each searching again as soon as it is answered.
        // A token, not a `Notify`: `notify_waiters` wakes only the searchers
        // waiting at that instant, and one between two searches would miss
        // it and search forever (this test hung once so).
        let stop = CancellationToken::new();
        let searchers: Vec<_> = (0..12)
            .map(|_| {
                let (mut attacker, stop) = (attacker.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut answered = Vec::new();
                    loop {
                        let search = attacker.list_tasks(pb::ListTasksRequest {
                            query: crafted_query(),
                            page_size: 500,
                            ..pb::ListTasksRequest::default()
                        });
                        tokio::select! {
                            result = search => answered.push(result.map(drop).map_err(|status| status.code())),
                            () = stop.cancelled() => return answered,
                        }
                    }
                })
            })
            .collect();

        // Meanwhile the victim's reads are all served.
        for _ in 0..40 {
            let listed = victim
                .list_tasks(pb::ListTasksRequest::default())
                .await
                .expect("the victim's ListTasks is served")
                .into_inner();
            assert_eq!(listed.total_size, 1);
            victim
                .get_task(pb::GetTaskRequest { id: mine.id.clone() })
                .await
                .expect("the victim's GetTask is served");
        }
        stop.cancel();
        let mut outcomes = Vec::new();
        for searcher in searchers {
            outcomes.extend(searcher.await.unwrap());
        }
        // The attacker is answered too, or told to wait: never a failure.
        assert!(outcomes.iter().any(Result::is_ok), "searches are answered");
        for outcome in &outcomes {
            if let Err(code) = outcome {
                assert_eq!(*code, Code::ResourceExhausted, "{outcomes:?}");
            }
        }
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_users_searches_beyond_their_places_queue_and_are_all_answered() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Default::default(), |config| {
            config.max_calls_in_flight_per_user = 8;
            config.max_searches_in_flight_per_user = 1;
        })
        .await;
        let (_, mut searcher) = stack.user("searcher").await;
        for i in 0..30 {
            create(&mut searcher, titled(&format!("needle {i}"))).await;
            create(&mut searcher, titled(&format!("hay {i}"))).await;
        }
        // Eight searches at once, with one place for searches: the others
        // wait their turn (in the user's calls in flight), none is refused,
        // and plain pages are not held behind them.
        let searches: Vec<_> = (0..8)
            .map(|_| {
                let mut searcher = searcher.clone();
                tokio::spawn(async move {
                    searcher
                        .list_tasks(pb::ListTasksRequest {
                            query: "NEEDLE".into(),
                            page_size: 100,
                            ..pb::ListTasksRequest::default()
                        })
                        .await
                        .map(tonic::Response::into_inner)
                })
            })
            .collect();
        let page = searcher
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("a plain page beside the searches")
            .into_inner();
        assert_eq!(page.total_size, 60);
        for search in searches {
            let found = search.await.unwrap().expect("every search is answered");
            assert_eq!(found.total_size, 30);
            assert!(
                found
                    .tasks
                    .iter()
                    .all(|task| task.title.starts_with("needle"))
            );
        }
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_search_examines_a_bounded_window_and_its_pages_still_cover_every_match() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut client) = stack.user("searcher").await;
        // 1,150 tasks, one in fifty a match, oldest first.
        let mut expected = Vec::new();
        for i in 0..1150 {
            let title = if i % 50 == 7 {
                format!("Needle {i}")
            } else {
                format!("hay {i}")
            };
            let task = create(&mut client, titled(&title)).await;
            if title.starts_with("Needle") {
                expected.push(task.id);
            }
        }
        let mut found = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_tasks(pb::ListTasksRequest {
                    query: "NEEDLE".into(),
                    order_by: "create_time".into(),
                    page_size: 10,
                    page_token: page_token.clone(),
                    ..pb::ListTasksRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.tasks.len() <= 10);
            // An estimate once the list outgrows one window.
            assert!((15..=30).contains(&page.total_size), "{}", page.total_size);
            found.extend(page.tasks.into_iter().map(|task| task.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(found, expected, "every match, once, in order");
        assert!(pages >= 3, "{pages} pages");

        // A list that fits one window is counted exactly.
        let (_, mut small) = stack.user("small").await;
        for title in ["one needle", "two", "three needles"] {
            create(&mut small, titled(title)).await;
        }
        let page = small
            .list_tasks(pb::ListTasksRequest {
                query: "needle".into(),
                ..pb::ListTasksRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 2);
        assert_eq!(page.tasks.len(), 2);
        assert!(page.next_page_token.is_empty());
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn writes_past_a_users_budget_are_refused_with_a_retry_time() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Default::default(), |config| {
            config.max_writes_per_user_per_minute = 60;
        })
        .await;
        let (_, mut flooder) = stack.user("flooder").await;
        let (_, mut other) = stack.user("other").await;
        let mut refused = None;
        for i in 0..30 {
            match flooder.create_task(titled(&format!("flood {i}"))).await {
                Ok(_) => {}
                Err(status) => {
                    refused = Some(status);
                    break;
                }
            }
        }
        let refused = refused.expect("a flood of writes is refused");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let retry = refused.get_error_details().retry_info().cloned();
        assert!(
            retry
                .and_then(|info| info.retry_delay)
                .is_some_and(|delay| delay > Duration::ZERO),
            "{refused:?}"
        );
        // Reads go on, and another user writes.
        flooder
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("reads are not writes");
        create(&mut other, titled("mine")).await;
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_user_cannot_have_more_tasks_than_the_quota() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Default::default(), |config| {
            config.max_tasks_per_user = 3;
        })
        .await;
        let (_, mut client) = stack.user("hoarder").await;
        let first_request = pb::CreateTaskRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            ..titled("first")
        };
        let first = create(&mut client, first_request.clone()).await;
        for title in ["second", "third"] {
            create(&mut client, titled(title)).await;
        }
        let refused = client
            .create_task(titled("fourth"))
            .await
            .expect_err("past the quota");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let quota = refused
            .get_error_details()
            .quota_failure()
            .cloned()
            .expect("a QuotaFailure detail");
        assert_eq!(quota.violations[0].subject, "tasks");
        // A retry of an earlier create still answers with its task.
        let again = create(&mut client, first_request).await;
        assert_eq!(again.id, first.id);
        // Room made is room to create.
        client
            .delete_task(pb::DeleteTaskRequest {
                id: first.id,
                etag: String::new(),
            })
            .await
            .unwrap();
        create(&mut client, titled("fourth, now")).await;
        let listed = client
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.total_size, 3);
        stack.stop().await;
    })
    .await;
}
