//! No caller can hurt another (checklist I4, I5, L4, L5): strangers who
//! know an email cannot keep its owner out, guessing spread over many
//! addresses stops at the account's ceiling, and floods of the public
//! calls are throttled per address while other clients are served.
//!
//! Client addresses are set through `x-forwarded-for`, which the server
//! believes from its trusted proxy (the test's own loopback peer), as it
//! believes the gateway's.

use std::time::Duration;

use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Code, transport::Channel};

const OWNER_HOME: &str = "198.51.100.1";
const STRANGER: &str = "203.0.113.66";

async fn sign_in(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
    address: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    client
        .login(from_address(
            pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            },
            address,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Registers `email` from `address`.
async fn register_from(client: &mut AuthServiceClient<Channel>, email: &str, address: &str) {
    client
        .register(from_address(
            pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            },
            address,
        ))
        .await
        .expect("register");
}

/// A server started with `config`, a client of it, and an account registered
/// from `home`: the owner whose sign-ins the tests defend.
async fn owner_registered_from(
    config: auth_service::Config,
    home: &str,
) -> (AuthServer, AuthServiceClient<Channel>, String) {
    let server = AuthServer::start_with(config).await;
    let mut client = server.client().await;
    let email = unique_email();
    register_from(&mut client, &email, home).await;
    (server, client, email)
}

/// An anonymous call that must keep being served during an attack.
async fn jwks_is_served(client: &mut AuthServiceClient<Channel>) {
    client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("GetJwks is served during the attack");
}

fn behind_a_proxy(db: &TestDatabase) -> auth_service::Config {
    auth_service::Config {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..auth_config(db)
    }
}

#[tokio::test]
async fn a_strangers_wrong_passwords_do_not_keep_the_owner_out() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let (server, mut client, email) =
            owner_registered_from(behind_a_proxy(&db), OWNER_HOME).await;

        // Far more than the five a window allows, from one address.
        let mut throttled = 0;
        for _ in 0..20 {
            match sign_in(&mut client, &email, "not the password", STRANGER).await {
                Err(status) if status.code() == Code::ResourceExhausted => throttled += 1,
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
                Ok(_) => panic!("a wrong password signed in"),
            }
            jwks_is_served(&mut client).await;
        }
        assert_eq!(
            throttled, 15,
            "the stranger's address is throttled after five"
        );
        // Even the right password is refused from the stranger's address...
        assert_eq!(
            code(sign_in(&mut client, &email, PASSWORD, STRANGER).await),
            Code::ResourceExhausted
        );
        // ...while the owner gets in from home and from a new place.
        sign_in(&mut client, &email, PASSWORD, OWNER_HOME)
            .await
            .expect("the owner signs in from home");
        sign_in(&mut client, &email, PASSWORD, "198.51.100.200")
            .await
            .expect("the owner signs in from a new address");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_forgets_its_addresss_failures_and_makes_the_address_known() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let config = auth_service::Config {
            login_max_failures_per_account: 12,
            ..behind_a_proxy(&db)
        };
        let (server, mut client, email) = owner_registered_from(config, OWNER_HOME).await;
        // The owner signs in from a second place, which becomes known.
        let office = "192.0.2.50";
        sign_in(&mut client, &email, PASSWORD, office)
            .await
            .expect("the owner signs in from the office");

        // Four typos from a new place, then the right password.
        let travel = "192.0.2.40";
        for _ in 0..4 {
            assert_eq!(
                code(sign_in(&mut client, &email, "a typo", travel).await),
                Code::Unauthenticated
            );
        }
        sign_in(&mut client, &email, PASSWORD, travel)
            .await
            .expect("the owner signs in on the fifth try");
        // The typos are forgotten: five more fit the window before the
        // sixth is throttled (without forgetting, the first would be).
        for _ in 0..5 {
            assert_eq!(
                code(sign_in(&mut client, &email, "a typo", travel).await),
                Code::Unauthenticated
            );
        }
        assert_eq!(
            code(sign_in(&mut client, &email, "a typo", travel).await),
            Code::ResourceExhausted
        );

        // Guesses from new places reach the account's ceiling of 12...
        let mut refused = false;
        for i in 0..20 {
            let guess = sign_in(&mut client, &email, "a guess", &format!("203.0.113.{i}")).await;
            if code(guess) == Code::ResourceExhausted {
                refused = true;
                break;
            }
        }
        assert!(refused, "the account's ceiling is reached");
        // ...past which a new place is refused even with the password, while
        // the places the owner signed in from are known and get in.
        assert_eq!(
            code(sign_in(&mut client, &email, PASSWORD, "203.0.113.99").await),
            Code::ResourceExhausted
        );
        sign_in(&mut client, &email, PASSWORD, office)
            .await
            .expect("a place of a past sign-in is known");
        sign_in(&mut client, &email, PASSWORD, OWNER_HOME)
            .await
            .expect("the place of registration is known");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn guessing_from_many_addresses_stops_at_the_account_ceiling_but_not_the_owner() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let config = auth_service::Config {
            login_max_failures_per_account: 12,
            ..behind_a_proxy(&db)
        };
        let home = "2001:db8:aaaa:1::10";
        let (server, mut client, email) = owner_registered_from(config, home).await;
        let clock = server.clock.clone();

        // One guess from each of many addresses (IPv4, and IPv6 /64s).
        let addresses: Vec<String> = (0..8)
            .map(|i| format!("203.0.113.{}", 10 + i))
            .chain((0..8).map(|i| format!("2001:db8:{i}::1")))
            .collect();
        let mut refused = 0;
        for address in &addresses {
            match sign_in(&mut client, &email, "a guess", address).await {
                Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
                Ok(_) => panic!("a guess signed in"),
            }
        }
        assert_eq!(
            refused, 4,
            "past the ceiling of 12, new addresses are refused"
        );
        // A new address is refused even with the right password: guessing
        // from more addresses gains nothing.
        assert_eq!(
            code(sign_in(&mut client, &email, PASSWORD, "203.0.113.99").await),
            Code::ResourceExhausted
        );
        // The owner's known place still gets in: any address of the /64
        // the account was registered from.
        sign_in(&mut client, &email, PASSWORD, "2001:db8:aaaa:1:ffff::2")
            .await
            .expect("the owner signs in from a known address");
        // When the window ends, a new place gets in too.
        clock.advance(Duration::from_secs(16 * 60));
        sign_in(&mut client, &email, PASSWORD, "203.0.113.99")
            .await
            .expect("the window ended");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_logout_flood_is_throttled_per_address_while_others_refresh() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let config = auth_service::Config {
            address_rate_per_minute: 60,
            address_burst: 10,
            ..behind_a_proxy(&db)
        };
        let (server, mut client, email) = owner_registered_from(config, OWNER_HOME).await;
        let victim = sign_in(&mut client, &email, PASSWORD, OWNER_HOME)
            .await
            .unwrap();

        let mut throttled = 0;
        for _ in 0..50 {
            let logout = client
                .logout(from_address(
                    pb::LogoutRequest {
                        refresh_token: "not-a-token".into(),
                    },
                    STRANGER,
                ))
                .await;
            if let Err(status) = logout {
                assert_eq!(status.code(), Code::ResourceExhausted);
                throttled += 1;
            }
        }
        assert!(
            throttled >= 39,
            "the flood is throttled ({throttled} of 50)"
        );
        let refreshed = client
            .refresh(from_address(
                pb::RefreshRequest {
                    refresh_token: tokens(&victim.tokens).refresh_token.clone(),
                },
                OWNER_HOME,
            ))
            .await;
        assert!(
            refreshed.is_ok(),
            "another address refreshes: {refreshed:?}"
        );
        server.stop().await;
    })
    .await;
}
