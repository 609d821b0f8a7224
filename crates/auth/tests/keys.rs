//! Asymmetric signing keys (`FERROBASE_AUTH_JWT_KEYS`): ES256/RS256 access
//! tokens with `kid`, the published key set, and rotation.

use std::collections::HashSet;

use base64::Engine as _;
use ferrobase_common::jwk::generate_es256;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::support::*;

/// The decoded header of a JWT.
fn header_of(token: &str) -> Value {
    let head = token.split('.').next().unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap_or_else(|e| panic!("jwt header: {e}"));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("jwt header json: {e}"))
}

/// `jwk` with its `key_ops` replaced.
fn with_ops(jwk: &Value, ops: &[&str]) -> Value {
    let mut jwk = jwk.clone();
    jwk["key_ops"] = json!(ops);
    jwk
}

fn keys_var(keys: &[&Value]) -> String {
    Value::Array(keys.iter().map(|k| (*k).clone()).collect()).to_string()
}

/// Verifies `token` with the key of `jwks` its header names, as a client
/// with the published key set would (auth-js `getClaims`).
fn verify_with_published(jwks: &Value, token: &str, alg: Algorithm) -> Value {
    let set: JwkSet =
        serde_json::from_value(jwks.clone()).unwrap_or_else(|e| panic!("key set: {e}"));
    let header = jsonwebtoken::decode_header(token).unwrap_or_else(|e| panic!("header: {e}"));
    assert_eq!(header.alg, alg);
    let Some(kid) = header.kid else {
        panic!("no kid in the header of {token}")
    };
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("{kid} not published"));
    let mut validation = Validation::new(alg);
    validation.set_audience(&["authenticated"]);
    let key = DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("published key {kid}: {e}"));
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("verifying with the published key: {e}"))
        .claims
}

#[tokio::test]
async fn an_es256_signing_key_signs_access_tokens_with_its_kid() {
    let key = generate_es256(true).unwrap();
    let auth = spawn(&[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&key]))]).await;
    let session = auth.sign_up("es256@example.com", "password-1").await;
    let at = s(&session, "access_token");
    let header = header_of(&at);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["typ"], "JWT");

    let jwks = auth.anon("GET", "/.well-known/jwks.json", None).await.body;
    let claims = verify_with_published(&jwks, &at, Algorithm::ES256);
    assert_eq!(claims["email"], "es256@example.com");
    assert_eq!(claims["sub"], session["user"]["id"]);
    // The project secret does not verify it.
    assert!(
        ferrobase_common::jwt::KeyStore::with_secret(ferrobase_testkit::JWT_SECRET.as_bytes())
            .verify(&at)
            .is_err()
    );

    let me = auth.user("GET", "/user", None, &at).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["email"], "es256@example.com");

    // Refreshed tokens are signed the same way.
    let r = auth.refresh(&s(&session, "refresh_token")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(header_of(&s(&r.body, "access_token"))["kid"], key["kid"]);

    // HS256 API keys still verify with the secret.
    let users = auth.admin("GET", "/admin/users", None).await;
    assert_eq!(users.status, 200, "{:?}", users.body);
}

#[tokio::test]
async fn an_rs256_signing_key_signs_access_tokens_with_its_kid() {
    let rsa: Value = serde_json::from_str(ferrobase_testkit::TEST_RSA_JWK).unwrap();
    let auth = spawn(&[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&rsa]))]).await;
    let session = auth.sign_up("rs256@example.com", "password-1").await;
    let at = s(&session, "access_token");
    assert_eq!(header_of(&at)["kid"], "test-rsa-2048");
    let jwks = auth.anon("GET", "/.well-known/jwks.json", None).await.body;
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let claims = verify_with_published(&jwks, &at, Algorithm::RS256);
    assert_eq!(claims["email"], "rs256@example.com");
    let me = auth.user("GET", "/user", None, &at).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
}

#[tokio::test]
async fn the_key_set_lists_public_parameters_only_over_http_and_grpc() {
    let old = generate_es256(false).unwrap();
    let new = generate_es256(true).unwrap();
    let rsa: Value = serde_json::from_str(ferrobase_testkit::TEST_RSA_JWK).unwrap();
    let rsa = with_ops(&rsa, &["verify"]);
    let auth = spawn(&[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&old, &new, &rsa]))]).await;

    let r = auth.anon("GET", "/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
    let keys = r.body["keys"].as_array().unwrap();
    let kids: Vec<&Value> = keys.iter().map(|k| &k["kid"]).collect();
    // The signing key first, then the others in configuration order.
    assert_eq!(kids, [&new["kid"], &old["kid"], &rsa["kid"]]);
    for key in keys {
        let names: HashSet<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: HashSet<&str> = if key["kty"] == "EC" {
            ["kty", "kid", "alg", "key_ops", "crv", "x", "y"].into()
        } else {
            ["kty", "kid", "alg", "key_ops", "n", "e"].into()
        };
        assert_eq!(names, expected, "{key}");
        assert_eq!(key["key_ops"], json!(["verify"]));
    }
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!((&keys[0]["x"], &keys[0]["y"]), (&new["x"], &new["y"]));
    assert_eq!(keys[2]["n"], rsa["n"]);
    let body = r.body.to_string();
    for private in [
        &old["d"], &new["d"], &rsa["d"], &rsa["p"], &rsa["q"], &rsa["qi"],
    ] {
        assert!(!body.contains(private.as_str().unwrap()));
    }

    // The gateway gets the same set over gRPC.
    assert_eq!(auth.served_jwks().await, r.body);
}

#[tokio::test]
async fn rotation_keeps_demoted_keys_verifying_until_they_are_removed() {
    let k1 = generate_es256(true).unwrap();
    let k2 = generate_es256(true).unwrap();
    let k1_demoted = with_ops(&k1, &["verify"]);

    // HS256 only, then a first asymmetric key.
    let hs = spawn(&[]).await;
    let hs_session = hs.sign_up("rotate@example.com", "password-1").await;
    let t0 = s(&hs_session, "access_token");
    assert_eq!(header_of(&t0)["alg"], "HS256");
    assert_eq!(
        hs.anon("GET", "/.well-known/jwks.json", None).await.body,
        json!({"keys": []})
    );
    let first = spawn_beside(&hs, &[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&k1]))]).await;
    let me = first.user("GET", "/user", None, &t0).await;
    assert_eq!(
        me.status, 200,
        "an HS256 token after the switch: {:?}",
        me.body
    );
    let s1 = first.sign_in("rotate@example.com", "password-1").await;
    let t1 = s(&s1, "access_token");
    assert_eq!(header_of(&t1)["kid"], k1["kid"]);

    // A new signing key; the old one only verifies.
    let second = spawn_beside(
        &hs,
        &[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&k2, &k1_demoted]))],
    )
    .await;
    let me = second.user("GET", "/user", None, &t1).await;
    assert_eq!(me.status, 200, "a token of the demoted key: {:?}", me.body);
    let r = second.refresh(&s(&s1, "refresh_token")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t2 = s(&r.body, "access_token");
    assert_eq!(header_of(&t2)["kid"], k2["kid"]);

    // The old key removed: its tokens are refused, the others still work.
    let third = spawn_beside(&hs, &[("FERROBASE_AUTH_JWT_KEYS", &keys_var(&[&k2]))]).await;
    let me = third.user("GET", "/user", None, &t1).await;
    assert_eq!(me.status, 403, "{:?}", me.body);
    assert_eq!(me.body["code"], "bad_jwt");
    assert!(
        me.body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JWT: unable to parse or verify signature"),
        "{:?}",
        me.body
    );
    for token in [&t2, &t0] {
        let me = third.user("GET", "/user", None, token).await;
        assert_eq!(me.status, 200, "{:?}", me.body);
    }
}
