//! Access tokens: verifiable by any standard JWT library holding the JWKS,
//! and refused in every forged form (RFC 8725). Signing keys survive
//! restarts and rotate without logging anyone out.

use access_token::{AccessClaims, SigningKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use test_harness::*;
use todo_proto::auth::v1 as pb;
use tonic::{Code, Request};

async fn jwks(
    client: &mut todo_proto::auth::v1::auth_service_client::AuthServiceClient<
        tonic::transport::Channel,
    >,
) -> JwkSet {
    let json = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    serde_json::from_str(&json).expect("an RFC 7517 JWK Set")
}

#[tokio::test]
async fn a_standard_jwt_library_verifies_access_tokens_with_the_jwks() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let token = &tokens(&registered.tokens).access_token;
        let set = jwks(&mut client).await;
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = set
            .find(header.kid.as_deref().expect("kid set"))
            .expect("kid published");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["todo-auth"]);
        validation.set_audience(&["todo-api"]);
        // The server runs on a manual clock that matches real time here.
        let claims: serde_json::Value =
            jsonwebtoken::decode(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], registered.user.as_ref().unwrap().id);
        for claim in ["iss", "aud", "sub", "sid", "iat", "exp", "jti"] {
            assert!(claims.get(claim).is_some(), "{claim} missing");
        }
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            900
        );
        server.stop().await;
    })
    .await;
}

fn claims_for(user: &pb::User, sid: uuid::Uuid, iat: i64) -> AccessClaims {
    AccessClaims {
        iss: "todo-auth".into(),
        aud: "todo-api".into(),
        sub: user.id.parse().unwrap(),
        sid,
        iat,
        exp: iat + 900,
        nbf: None,
        jti: uuid::Uuid::new_v4(),
    }
}

#[tokio::test]
async fn forged_access_tokens_are_unauthenticated() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let genuine = tokens(&registered.tokens).access_token.clone();
        let header = jsonwebtoken::decode_header(&genuine).unwrap();
        let kid = header.kid.clone().unwrap();
        let genuine_claims: AccessClaims = jsonwebtoken::dangerous::insecure_decode(&genuine)
            .unwrap()
            .claims;
        let user = registered.user.unwrap();
        let now = server.clock.now().timestamp();
        let public_key = URL_SAFE_NO_PAD
            .decode(
                jwks(&mut client)
                    .await
                    .find(&kid)
                    .map(|jwk| match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) => okp.x.clone(),
                        _ => panic!("not an OKP key"),
                    })
                    .unwrap(),
            )
            .unwrap();

        let mut forged = Vec::new();
        // Signed by a key of our own, claiming the server's kid.
        let foreign = SigningKey::generate().unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.clone());
        forged.push((
            "foreign key with a valid kid",
            jsonwebtoken::encode(
                &h,
                &genuine_claims,
                &EncodingKey::from_ed_der(foreign.pkcs8_der()),
            )
            .unwrap(),
        ));
        // HS256 keyed with the public key (algorithm confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.clone());
        forged.push((
            "HS256 with the public key",
            jsonwebtoken::encode(&h, &genuine_claims, &EncodingKey::from_secret(&public_key))
                .unwrap(),
        ));
        // alg none.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&genuine_claims).unwrap());
        for alg in ["none", "None", "NONE", "nOnE"] {
            let head = URL_SAFE_NO_PAD
                .encode(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#));
            forged.push(("alg none", format!("{head}.{payload}.")));
        }
        // The genuine signature over a swapped payload (another user).
        let (head, rest) = genuine.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut other = genuine_claims.clone();
        other.sub = uuid::Uuid::now_v7();
        forged.push((
            "payload swapped",
            format!(
                "{head}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap())
            ),
        ));
        forged.push((
            "signature truncated",
            genuine[..genuine.len() - 5].to_string(),
        ));
        forged.push((
            "signature empty",
            format!("{head}.{}.", rest.split_once('.').unwrap().0),
        ));
        // Wrong claims, correctly signed by a key the server does not hold.
        // (The server's own private key is never exposed, so the claims
        // checks are exercised by rotating tokens minted with its key below.)
        let mut wrong_aud = claims_for(&user, genuine_claims.sid, now);
        wrong_aud.aud = "someone-else".into();
        let mut wrong_iss = claims_for(&user, genuine_claims.sid, now);
        wrong_iss.iss = "evil".into();
        let mut expired = claims_for(&user, genuine_claims.sid, now - 3600);
        expired.exp = now - 61;
        for (name, claims) in [
            ("wrong aud", wrong_aud),
            ("wrong iss", wrong_iss),
            ("expired", expired),
        ] {
            forged.push((name, foreign.sign(&claims).unwrap()));
        }
        forged.push(("garbage", "not.a.jwt".into()));
        forged.push(("kid with a path", {
            let head = URL_SAFE_NO_PAD
                .encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"../../etc/passwd' OR 1=1 --"}"#);
            format!("{head}.{payload}.{signature}")
        }));
        forged.push(("jku header", {
            let head = URL_SAFE_NO_PAD.encode(
                r#"{"alg":"EdDSA","typ":"at+jwt","kid":"x","jku":"http://127.0.0.1:1/jwks"}"#,
            );
            format!("{head}.{payload}.{signature}")
        }));

        for (name, token) in forged {
            let status = current_user(&mut client, &token).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{name}");
            assert!(
                !status.message().contains(&token),
                "{name}: the token is echoed"
            );
        }
        current_user(&mut client, &genuine)
            .await
            .expect("the genuine token still works");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tokens_signed_with_the_servers_key_but_wrong_claims_are_refused() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        // Run the server on a key we hold, so we can sign bad claims with it.
        let folder = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let path = folder.path().join("signing.pem");
        std::fs::write(&path, pem_of(&key)).unwrap();
        let mut config = auth_config(&db);
        config.signing_key_file = Some(path);
        let server = AuthServer::start_with(config).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let genuine = tokens(&registered.tokens).access_token.clone();
        assert_eq!(
            jsonwebtoken::decode_header(&genuine)
                .unwrap()
                .kid
                .as_deref(),
            Some(key.kid())
        );
        let claims: AccessClaims = jsonwebtoken::dangerous::insecure_decode(&genuine)
            .unwrap()
            .claims;
        let now = server.clock.now().timestamp();

        let mut cases: Vec<(&str, String)> = Vec::new();
        let mut c = claims.clone();
        c.aud = "someone-else".into();
        cases.push(("wrong aud", key.sign(&c).unwrap()));
        let mut c = claims.clone();
        c.iss = "evil".into();
        cases.push(("wrong iss", key.sign(&c).unwrap()));
        let mut c = claims.clone();
        c.exp = now - 61;
        cases.push(("expired past the leeway", key.sign(&c).unwrap()));
        let mut c = claims.clone();
        c.nbf = Some(now + 120);
        cases.push(("not valid yet", key.sign(&c).unwrap()));
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(key.kid().into());
        h.typ = Some("JWT".into());
        cases.push((
            "typ is not at+jwt",
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(key.pkcs8_der())).unwrap(),
        ));
        let mut without_exp = serde_json::to_value(&claims).unwrap();
        without_exp.as_object_mut().unwrap().remove("exp");
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(key.kid().into());
        h.typ = Some("at+jwt".into());
        cases.push((
            "missing exp",
            jsonwebtoken::encode(&h, &without_exp, &EncodingKey::from_ed_der(key.pkcs8_der()))
                .unwrap(),
        ));
        for (name, token) in cases {
            let status = current_user(&mut client, &token).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        }
        // Within the leeway an expired token still passes (clock skew).
        let mut c = claims.clone();
        c.exp = now - 10;
        current_user(&mut client, &key.sign(&c).unwrap())
            .await
            .expect("inside the 30 s leeway");
        server.stop().await;
    })
    .await;
}

fn pem_of(key: &SigningKey) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der());
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

#[tokio::test]
async fn authorization_metadata_must_be_exactly_one_bearer_token() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let token = tokens(&registered.tokens).access_token.clone();
        let call = |values: Vec<String>| {
            let mut client = client.clone();
            async move {
                let mut request = Request::new(pb::GetCurrentUserRequest {});
                for value in values {
                    request
                        .metadata_mut()
                        .append("authorization", value.parse().unwrap());
                }
                client.get_current_user(request).await
            }
        };
        for (name, values) in [
            ("missing", vec![]),
            ("basic", vec!["Basic dXNlcjpwYXNzd29yZA==".to_string()]),
            ("empty bearer", vec!["Bearer ".to_string()]),
            (
                "two entries",
                vec![format!("Bearer {token}"), format!("Bearer {token}")],
            ),
        ] {
            let status = call(values).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        }
        call(vec![format!("bearer {token}")])
            .await
            .expect("lower-case scheme");
        // Every protected RPC refuses a call without a token.
        let status = client
            .list_sessions(pb::ListSessionsRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .revoke_session(pb::RevokeSessionRequest {
                session_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .change_password(pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "another password".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_restart_on_the_same_database_keeps_users_sessions_and_the_signing_key() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let email = unique_email();
        let registered = register(&mut client, &email).await;
        let pair = tokens(&registered.tokens).clone();
        let before = jwks(&mut client).await;
        server.stop().await;

        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        assert_eq!(jwks(&mut client).await, before, "same signing key");
        current_user(&mut client, &pair.access_token)
            .await
            .expect("old access token verifies");
        refresh(&mut client, &pair.refresh_token)
            .await
            .expect("session survived");
        login(&mut client, &email, PASSWORD)
            .await
            .expect("user survived");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rotating_the_key_keeps_unexpired_tokens_valid() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let old = tokens(&register(&mut client, &unique_email()).await.tokens).clone();
        let old_kid = jsonwebtoken::decode_header(&old.access_token)
            .unwrap()
            .kid
            .unwrap();

        let new_kid = auth_service::rotate_key(&auth_config(&db)).await.unwrap();
        assert_ne!(new_kid, old_kid);
        // The running server meets the new kid, reloads, and verifies both.
        let server2 = AuthServer::start(&db).await;
        let mut client2 = server2.client().await;
        let fresh = tokens(&register(&mut client2, &unique_email()).await.tokens).clone();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh.access_token)
                .unwrap()
                .kid
                .unwrap(),
            new_kid
        );
        current_user(&mut client, &fresh.access_token)
            .await
            .expect("old replica learns the new key");
        current_user(&mut client2, &old.access_token)
            .await
            .expect("old key still trusted");
        let published = jwks(&mut client2).await;
        assert!(published.find(&old_kid).is_some() && published.find(&new_kid).is_some());
        server.stop().await;
        server2.stop().await;
    })
    .await;
}

/// The RPCs callable without an access token (CONTRACT.md); every other
/// method of the service, including any added later, must refuse.
const PUBLIC: [&str; 8] = [
    "Register",
    "Login",
    "Refresh",
    "Logout",
    "GetJwks",
    "VerifyEmail",
    "RequestPasswordReset",
    "ResetPassword",
];

#[tokio::test]
async fn every_method_but_the_public_ones_refuses_a_call_without_a_token() {
    use prost::Message;
    let db = TestDatabase::sqlite();
    let server = AuthServer::start(&db).await;
    let set = prost_types::FileDescriptorSet::decode(todo_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .filter(|file| file.package() == "auth.v1")
        .flat_map(|file| file.service.iter())
        .find(|service| service.name() == "AuthService")
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    let mut protected = 0;
    for method in &service.method {
        if PUBLIC.contains(&method.name()) {
            continue;
        }
        protected += 1;
        grpc.ready().await.unwrap();
        let path = format!("/auth.v1.AuthService/{}", method.name())
            .parse()
            .unwrap();
        // An empty message is a valid encoding of every request type.
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let status = grpc.unary(Request::new(()), path, codec).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{} answered without a token",
            method.name()
        );
    }
    assert_eq!(
        protected, 6,
        "GetCurrentUser, ListSessions, RevokeSession, ChangePassword, \
         RequestEmailVerification, DeleteAccount"
    );
    server.stop().await;
}
