//! JWT bearer auth end to end: RS256 (PEM), ES256 (PEM), RS256 from a JWKS by `kid`, HS256 from
//! an environment variable; expiry, not-before, audience, pinned algorithms; the consumer claim;
//! the token removed before the backend; rate limits keyed by a claim.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::client;
use gatehouse_testkit::{FakeUpstream, TestGateway};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(
    alg: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    claims: serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, &claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(format!("{DIR}/rsa-private.pem")).unwrap()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(format!("{DIR}/ec-private.pem")).unwrap()).unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": "https://auth.example.com", "aud": "api", "exp": now() + 600, "tier": "gold"})
}

async fn gateway(up: &FakeUpstream, issuer: &str, extra_filters: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
listeners: [{{name: l, address: "127.0.0.1:0"}}]
jwt_issuers:
  - name: main
    issuer: https://auth.example.com
    audience: api
    {issuer}
rate_limits: [{{name: per-tier, rate: 2/m, key: "claim:tier"}}]
clusters: [{{name: c, health_check: {{enabled: false}}, endpoints: [{{address: "{}"}}]}}]
routes:
  - name: api
    cluster: c
    filters: [auth: {{jwt: {{issuer: main}}}}{extra_filters}]
"#,
        up.addr()
    ))
    .await
}

async fn call(gw: &TestGateway, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let mut r = client()
        .get(gw.url("/api"))
        .header("x-request-id", "jwt-req");
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = if status == 200 {
        json!({})
    } else {
        resp.json().await.unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn rs256_with_a_pem_key() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(
        &up,
        &format!("algorithms: [RS256]\n    key_file: {DIR}/rsa-public.pem"),
        "",
    )
    .await;
    assert_eq!(
        call(
            &gw,
            Some(&token(Algorithm::RS256, &rsa(), None, claims("alice")))
        )
        .await
        .0,
        200
    );
    assert!(
        up.last_seen().headers.get("authorization").is_none(),
        "token removed before the backend"
    );
    assert_eq!(gw.log_line("jwt-req").await["consumer"], "alice");

    let (s, b) = call(&gw, None).await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("missing_token")));
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 120);
    let (s, b) = call(&gw, Some(&token(Algorithm::RS256, &rsa(), None, expired))).await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("token_expired")));
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 600);
    let (s, b) = call(&gw, Some(&token(Algorithm::RS256, &rsa(), None, early))).await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (401, Some("token_not_yet_valid"))
    );
    let mut aud = claims("alice");
    aud["aud"] = json!("other");
    let (s, b) = call(&gw, Some(&token(Algorithm::RS256, &rsa(), None, aud))).await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("invalid_audience")));
    // A token choosing another algorithm (HS256, keyed with the public key's bytes) is refused.
    let hs = EncodingKey::from_secret(&std::fs::read(format!("{DIR}/rsa-public.pem")).unwrap());
    let (s, b) = call(
        &gw,
        Some(&token(Algorithm::HS256, &hs, None, claims("mallory"))),
    )
    .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (401, Some("algorithm_not_allowed"))
    );
    let (s, b) = call(&gw, Some("not.a.token")).await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("invalid_token")));
    // An ES256 token signed by someone else's key.
    let (s, _) = call(
        &gw,
        Some(&token(Algorithm::ES256, &ec(), None, claims("eve"))),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn es256_with_a_pem_key() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(
        &up,
        &format!("algorithms: [ES256]\n    key_file: {DIR}/ec-public.pem"),
        "",
    )
    .await;
    assert_eq!(
        call(
            &gw,
            Some(&token(Algorithm::ES256, &ec(), None, claims("bob")))
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn rs256_from_a_jwks_file_by_kid() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(
        &up,
        &format!("algorithms: [RS256]\n    keys_file: {DIR}/jwks.json"),
        "",
    )
    .await;
    assert_eq!(
        call(
            &gw,
            Some(&token(
                Algorithm::RS256,
                &rsa(),
                Some("rsa-1"),
                claims("carol")
            ))
        )
        .await
        .0,
        200
    );
    let (s, _) = call(
        &gw,
        Some(&token(
            Algorithm::RS256,
            &rsa(),
            Some("unknown-kid"),
            claims("carol"),
        )),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn hs256_from_the_environment_and_a_claim_keyed_limit() {
    std::env::set_var(
        "GATEHOUSE_TEST_JWT_SECRET",
        "s3cr3t-for-tests-0123456789abcdef",
    );
    let up = FakeUpstream::start("up").await;
    let gw = gateway(
        &up,
        "algorithms: [HS256]\n    secret_env: GATEHOUSE_TEST_JWT_SECRET",
        ", rate_limit: per-tier",
    )
    .await;
    let key = EncodingKey::from_secret(b"s3cr3t-for-tests-0123456789abcdef");
    let gold = |sub: &str| token(Algorithm::HS256, &key, None, claims(sub));
    // Two different subjects share the "gold" tier's budget of 2.
    assert_eq!(call(&gw, Some(&gold("a"))).await.0, 200);
    assert_eq!(call(&gw, Some(&gold("b"))).await.0, 200);
    assert_eq!(call(&gw, Some(&gold("c"))).await.0, 429);
    let wrong = EncodingKey::from_secret(b"guessed");
    let (s, b) = call(
        &gw,
        Some(&token(Algorithm::HS256, &wrong, None, claims("a"))),
    )
    .await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("invalid_signature")));
}

#[tokio::test]
async fn hs256_from_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt-secret");
    // Mounted secrets usually end with a newline; it is not part of the secret.
    std::fs::write(&secret, "file-s3cr3t-0123456789abcdef-xyz\n").unwrap();
    let up = FakeUpstream::start("up").await;
    let gw = gateway(
        &up,
        &format!("algorithms: [HS256]\n    secret_file: {}", secret.display()),
        "",
    )
    .await;
    let key = EncodingKey::from_secret(b"file-s3cr3t-0123456789abcdef-xyz");
    assert_eq!(
        call(&gw, Some(&token(Algorithm::HS256, &key, None, claims("a"))))
            .await
            .0,
        200
    );
    let with_newline = EncodingKey::from_secret(b"file-s3cr3t-0123456789abcdef-xyz\n");
    let (s, b) = call(
        &gw,
        Some(&token(Algorithm::HS256, &with_newline, None, claims("a"))),
    )
    .await;
    assert_eq!((s, b["reason"].as_str()), (401, Some("invalid_signature")));
}
