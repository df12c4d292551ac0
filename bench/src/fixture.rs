//! The accounts and tasks every scenario works on, made once per run
//! (`bench seed`) and kept in a JSON file, so a scenario starts at once
//! instead of paying argon2 for hundreds of registrations.
//!
//! Honest users are many: load is spread over `users` accounts with a few
//! tasks each. Besides them: a user with a long list (`list_user`, 10,000
//! tasks in the full run), a user with a very long one (`deep_user`,
//! 100,000), a victim and an attacker for the attack benchmarks. The long
//! lists can be filled here through `CreateTask` (small counts, as the
//! smoke test does) or by `run.sh` straight into PostgreSQL.

use std::sync::Arc;

use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use todo_proto::{
    auth::v1::{RegisterRequest, RegisterResponse},
    tasks::v1::{CreateTaskRequest, CreateTaskResponse},
};

use crate::client::Client;

pub const PASSWORD: &str = "correct horse battery staple, benchmarked";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub email: String,
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub password: String,
    pub users: Vec<User>,
    pub list_user: User,
    pub deep_user: User,
    pub victim: User,
    pub attacker: User,
}

#[derive(Debug, Clone)]
pub struct Seed {
    pub users: usize,
    pub tasks_per_user: usize,
    pub list_user_tasks: usize,
    pub deep_user_tasks: usize,
}

impl Fixture {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    pub fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        Ok(std::fs::write(path, serde_json::to_vec_pretty(self)?)?)
    }
}

async fn register(client: &Client, email: String) -> anyhow::Result<User> {
    let response: RegisterResponse = client
        .unary(
            "/auth.v1.AuthService/Register",
            RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: "bench".into(),
            },
            None,
        )
        .await
        .map_err(|code| anyhow::anyhow!("Register {email}: {code:?}"))?;
    let user = response
        .user
        .ok_or_else(|| anyhow::anyhow!("Register answered no user"))?;
    let tokens = response
        .tokens
        .ok_or_else(|| anyhow::anyhow!("Register answered no tokens"))?;
    Ok(User {
        email,
        id: user.id,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        tasks: Vec::new(),
    })
}

/// Creates `count` tasks of `user` (4 at a time: the per-user budget).
pub async fn fill(client: &Client, user: &mut User, count: usize) -> anyhow::Result<()> {
    let token = Arc::<str>::from(user.access_token.as_str());
    let created: Vec<anyhow::Result<String>> = stream::iter(0..count)
        .map(|n| {
            let (client, token) = (client.clone(), token.clone());
            async move {
                let response: CreateTaskResponse = client
                    .unary(
                        "/tasks.v1.TaskService/CreateTask",
                        CreateTaskRequest {
                            title: format!("Seeded task {n}"),
                            description: "made by bench seed".into(),
                            priority: 1 + i32::from(u8::try_from(n % 3).unwrap_or(0)),
                            ..CreateTaskRequest::default()
                        },
                        Some(&token),
                    )
                    .await
                    .map_err(|code| anyhow::anyhow!("CreateTask while seeding: {code:?}"))?;
                Ok(response.task.map(|task| task.id).unwrap_or_default())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for id in created {
        user.tasks.push(id?);
    }
    Ok(())
}

/// Registers every account and creates their tasks, over `client`.
pub async fn seed(client: &Client, seed: &Seed) -> anyhow::Result<Fixture> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let emails: Vec<String> = (0..seed.users + 4)
        .map(|n| format!("bench-{run}-{n}@example.com"))
        .collect();
    // Registrations queue on the hasher; a few at a time keep it busy.
    let registered: Vec<anyhow::Result<User>> = stream::iter(emails)
        .map(|email| register(client, email))
        .buffered(8)
        .collect()
        .await;
    let mut users = registered.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut specials = users.split_off(seed.users);
    let attacker = specials.pop().expect("four special users");
    let mut victim = specials.pop().expect("four special users");
    let mut deep_user = specials.pop().expect("four special users");
    let mut list_user = specials.pop().expect("four special users");
    let filled: Vec<anyhow::Result<User>> = stream::iter(users)
        .map(|mut user| async move {
            fill(client, &mut user, seed.tasks_per_user).await?;
            Ok(user)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let users = filled.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    fill(client, &mut victim, seed.tasks_per_user.max(1)).await?;
    fill(client, &mut list_user, seed.list_user_tasks).await?;
    fill(client, &mut deep_user, seed.deep_user_tasks).await?;
    // The long lists' ids are not needed by any scenario; keep the file small.
    list_user.tasks.truncate(100);
    deep_user.tasks.truncate(100);
    Ok(Fixture {
        password: PASSWORD.into(),
        users,
        list_user,
        deep_user,
        victim,
        attacker,
    })
}
