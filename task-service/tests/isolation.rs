//! Per-user isolation: another user's task is indistinguishable from one
//! that does not exist, and no list, filter or page token shows it. Ends
//! with a model-based property test of random operations by three users.

use std::collections::BTreeMap;

use proptest::prelude::*;
use prost_types::FieldMask;
use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn another_users_task_is_not_found_and_unchanged() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let (_, mut bob) = stack.user("bob").await;
        let task = create(&mut alice, titled("alice's secret")).await;
        let made_up = uuid::Uuid::now_v7().to_string();

        // Each of bob's calls on alice's task answers exactly like the same
        // call on an id that does not exist, whether or not it looks like
        // an id: same code, same message, same details.
        let mut answers = Vec::new();
        for id in [task.id.clone(), made_up, "does-not-exist".to_owned()] {
            let get = bob
                .get_task(pb::GetTaskRequest { id: id.clone() })
                .await
                .unwrap_err();
            let update = bob
                .update_task(pb::UpdateTaskRequest {
                    task: Some(pb::Task {
                        id: id.clone(),
                        title: "pwned".into(),
                        ..pb::Task::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                })
                .await
                .unwrap_err();
            let delete = bob
                .delete_task(pb::DeleteTaskRequest {
                    id: id.clone(),
                    etag: String::new(),
                })
                .await
                .unwrap_err();
            let with_etag = bob
                .delete_task(pb::DeleteTaskRequest {
                    id: id.clone(),
                    etag: task.etag.clone(),
                })
                .await
                .unwrap_err();
            let complete = bob
                .set_task_completed(pb::SetTaskCompletedRequest {
                    id: id.clone(),
                    completed: true,
                })
                .await
                .unwrap_err();
            answers.push([get, update, delete, with_etag, complete].map(|status| {
                (
                    status.code(),
                    status.message().to_owned(),
                    status.details().to_vec(),
                )
            }));
        }
        for (code, _, _) in &answers[0] {
            assert_eq!(*code, Code::NotFound);
        }
        assert_eq!(
            answers[0], answers[1],
            "a foreign id and an unknown id answer byte-identically"
        );
        assert_eq!(
            answers[0], answers[2],
            "a foreign id and a malformed id answer byte-identically"
        );

        let after = alice
            .get_task(pb::GetTaskRequest {
                id: task.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .task;
        assert_eq!(after.as_ref(), Some(&task), "alice's task is unchanged");
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn no_filter_order_or_page_token_shows_another_users_tasks() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let (_, mut bob) = stack.user("bob").await;
        for i in 0..6 {
            let task = create(&mut alice, titled(&format!("shared word {i}"))).await;
            if i % 2 == 0 {
                alice
                    .set_task_completed(pb::SetTaskCompletedRequest {
                        id: task.id,
                        completed: true,
                    })
                    .await
                    .unwrap();
            }
        }
        let bobs = create(&mut bob, titled("bob's shared word")).await;
        for order_by in ["", "create_time", "due_time", "priority desc", "title"] {
            for completed in [None, Some(true), Some(false)] {
                for query in ["", "shared", "word 1"] {
                    let request = pb::ListTasksRequest {
                        page_size: 1,
                        order_by: order_by.into(),
                        completed,
                        query: query.into(),
                        ..Default::default()
                    };
                    let page = bob.list_tasks(request.clone()).await.unwrap().into_inner();
                    let all = list_all(&mut bob, request.clone()).await;
                    assert!(all.iter().all(|task| task.id == bobs.id), "{request:?}");
                    assert!(
                        page.total_size <= 1,
                        "total_size counts only bob's tasks: {request:?}"
                    );
                    // Alice's page token does not open bob's list either.
                    let alices = alice
                        .list_tasks(request.clone())
                        .await
                        .unwrap()
                        .into_inner();
                    if !alices.next_page_token.is_empty() {
                        let replay = pb::ListTasksRequest {
                            page_token: alices.next_page_token,
                            ..request.clone()
                        };
                        assert_eq!(code(bob.list_tasks(replay).await), Code::InvalidArgument);
                    }
                }
            }
        }
        stack.stop().await;
    })
    .await;
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Create {
        user: usize,
        title: String,
        priority: i32,
    },
    Rename {
        user: usize,
        pick: usize,
        owner: usize,
        title: String,
    },
    Complete {
        user: usize,
        pick: usize,
        owner: usize,
        completed: bool,
    },
    Delete {
        user: usize,
        pick: usize,
        owner: usize,
    },
    List {
        user: usize,
        order: usize,
        completed: Option<bool>,
        page_size: i32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // `pick` chooses among the ids `owner` ever created, so users also act
    // on other users' and on deleted tasks.
    let user = || 0..3usize;
    let title = || "[a-cA-C]{1,3}";
    let create = (user(), title(), 0..4i32).prop_map(|(user, title, priority)| Op::Create {
        user,
        title,
        priority,
    });
    let rename =
        (user(), any::<usize>(), user(), title()).prop_map(|(user, pick, owner, title)| {
            Op::Rename {
                user,
                pick,
                owner,
                title,
            }
        });
    let complete = (user(), any::<usize>(), user(), any::<bool>()).prop_map(
        |(user, pick, owner, completed)| Op::Complete {
            user,
            pick,
            owner,
            completed,
        },
    );
    let delete = (user(), any::<usize>(), user()).prop_map(|(user, pick, owner)| Op::Delete {
        user,
        pick,
        owner,
    });
    let list = (
        user(),
        0..ORDERS.len(),
        proptest::option::of(any::<bool>()),
        1..4i32,
    )
        .prop_map(|(user, order, completed, page_size)| Op::List {
            user,
            order,
            completed,
            page_size,
        });
    prop_oneof![3 => create, 2 => rename, 2 => complete, 1 => delete, 2 => list]
}

/// What the model knows of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Modelled {
    title: String,
    completed: bool,
    priority: i32,
    create_time: (i64, i32),
}

const ORDERS: [&str; 5] = [
    "create_time desc",
    "create_time",
    "due_time",
    "priority desc",
    "title",
];

/// The model's list of one user's tasks in the given order.
fn model_list(
    tasks: &BTreeMap<String, Modelled>,
    order: &str,
    completed: Option<bool>,
) -> Vec<String> {
    let mut rows: Vec<(&String, &Modelled)> = tasks
        .iter()
        .filter(|(_, task)| completed.is_none_or(|c| task.completed == c))
        .collect();
    let uuid = |id: &String| id.parse::<uuid::Uuid>().expect("a UUID");
    rows.sort_by(|(a_id, a), (b_id, b)| match order {
        "create_time desc" => (b.create_time, uuid(b_id)).cmp(&(a.create_time, uuid(a_id))),
        "create_time" => (a.create_time, uuid(a_id)).cmp(&(b.create_time, uuid(b_id))),
        // No task here has a due time: they all tie, and the id decides.
        "due_time" => uuid(a_id).cmp(&uuid(b_id)),
        "priority desc" => (b.priority, uuid(b_id)).cmp(&(a.priority, uuid(a_id))),
        _ => (&a.title, uuid(a_id)).cmp(&(&b.title, uuid(b_id))),
    });
    rows.into_iter().map(|(id, _)| id.clone()).collect()
}

async fn run_model(clients: &mut [TaskClient], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model: Vec<BTreeMap<String, Modelled>> = vec![BTreeMap::new(); 3];
    // Ids every user has ever created, so foreign and deleted ids are tried.
    let mut known: Vec<Vec<String>> = vec![Vec::new(); 3];
    for op in ops {
        match op {
            Op::Create {
                user,
                title,
                priority,
            } => {
                let request = pb::CreateTaskRequest {
                    title: title.clone(),
                    priority,
                    ..Default::default()
                };
                let task = clients[user]
                    .create_task(request)
                    .await
                    .map_err(|s| TestCaseError::fail(format!("{s:?}")))?;
                let task = task.into_inner().task.expect("a task");
                let time = task.create_time.expect("create_time");
                known[user].push(task.id.clone());
                model[user].insert(
                    task.id,
                    Modelled {
                        title,
                        completed: false,
                        priority,
                        create_time: (time.seconds, time.nanos),
                    },
                );
            }
            Op::Rename {
                user,
                pick,
                owner,
                title,
            } => {
                let Some(id) = pick_id(&known[owner], pick) else {
                    continue;
                };
                let request = pb::UpdateTaskRequest {
                    task: Some(pb::Task {
                        id: id.clone(),
                        title: title.clone(),
                        ..pb::Task::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                };
                let result = clients[user].update_task(request).await;
                match model[user].get_mut(&id) {
                    Some(task) => {
                        prop_assert!(result.is_ok(), "{result:?}");
                        task.title = title;
                    }
                    None => prop_assert_eq!(result.map(|_| ()).unwrap_err().code(), Code::NotFound),
                }
            }
            Op::Complete {
                user,
                pick,
                owner,
                completed,
            } => {
                let Some(id) = pick_id(&known[owner], pick) else {
                    continue;
                };
                let result = clients[user]
                    .set_task_completed(pb::SetTaskCompletedRequest {
                        id: id.clone(),
                        completed,
                    })
                    .await;
                match model[user].get_mut(&id) {
                    Some(task) => {
                        let answer = result
                            .map_err(|s| TestCaseError::fail(format!("{s:?}")))?
                            .into_inner();
                        prop_assert_eq!(answer.task.expect("a task").completed, completed);
                        task.completed = completed;
                    }
                    None => prop_assert_eq!(result.map(|_| ()).unwrap_err().code(), Code::NotFound),
                }
            }
            Op::Delete { user, pick, owner } => {
                let Some(id) = pick_id(&known[owner], pick) else {
                    continue;
                };
                let result = clients[user]
                    .delete_task(pb::DeleteTaskRequest {
                        id: id.clone(),
                        etag: String::new(),
                    })
                    .await;
                match model[user].remove(&id) {
                    Some(_) => prop_assert!(result.is_ok(), "{result:?}"),
                    None => prop_assert_eq!(result.map(|_| ()).unwrap_err().code(), Code::NotFound),
                }
            }
            Op::List {
                user,
                order,
                completed,
                page_size,
            } => {
                let request = pb::ListTasksRequest {
                    page_size,
                    order_by: ORDERS[order].into(),
                    completed,
                    ..Default::default()
                };
                let first = clients[user]
                    .list_tasks(request.clone())
                    .await
                    .map_err(|s| TestCaseError::fail(format!("{s:?}")))?;
                let expected = model_list(&model[user], ORDERS[order], completed);
                prop_assert_eq!(
                    usize::try_from(first.into_inner().total_size).ok(),
                    Some(expected.len())
                );
                let listed: Vec<String> = list_all(&mut clients[user], request)
                    .await
                    .into_iter()
                    .map(|task| task.id)
                    .collect();
                prop_assert_eq!(listed, expected, "user {} order {}", user, ORDERS[order]);
            }
        }
    }
    // Finally every user's full list equals their model, in every order.
    for user in 0..3 {
        for order in ORDERS {
            let request = pb::ListTasksRequest {
                order_by: order.into(),
                page_size: 2,
                ..Default::default()
            };
            let listed: Vec<pb::Task> = list_all(&mut clients[user], request).await;
            let expected = model_list(&model[user], order, None);
            prop_assert_eq!(
                listed
                    .iter()
                    .map(|task| task.id.clone())
                    .collect::<Vec<_>>(),
                expected
            );
            for task in listed {
                let modelled = &model[user][&task.id];
                prop_assert_eq!(&task.title, &modelled.title);
                prop_assert_eq!(task.completed, modelled.completed);
                prop_assert_eq!(task.priority, modelled.priority);
            }
        }
    }
    Ok(())
}

fn pick_id(ids: &[String], pick: usize) -> Option<String> {
    (!ids.is_empty()).then(|| ids[pick % ids.len()].clone())
}

#[test]
fn random_operations_by_three_users_match_a_per_user_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for backend in Backend::all() {
        eprintln!("-- on {backend}");
        // One stack per backend; each case uses three fresh users, so cases
        // cannot see each other's tasks.
        let stack = runtime.block_on(TaskStack::start(backend));
        let config = ProptestConfig {
            cases: 12,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
            runtime.block_on(async {
                let mut clients = Vec::new();
                for name in ["ann", "ben", "cat"] {
                    clients.push(stack.user(name).await.1);
                }
                run_model(&mut clients, ops).await
            })?;
        });
        runtime.block_on(stack.stop());
    }
}
