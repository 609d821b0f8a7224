//! Gateway integration tests: real HTTP in, real gRPC out, real Redis for rate limits.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrobase_common::config::Env;
use ferrobase_common::jwt::now_secs;
use opentelemetry::trace::TraceId;
use serde_json::{Value, json};
use support::*;

fn unsigned(claims: Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn forged(role: &str) -> String {
    ferrobase_common::jwt::mint_api_key(b"some-other-secret-that-is-long-enough!!", role, 3600)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn refuses_missing_and_invalid_api_keys_like_supabase() {
    let gw = spawn_gateway(&[]).await;
    for path in ["/rest/v1/todos", "/auth/v1/user"] {
        let resp = gw.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(
            json_of(resp).await,
            json!({"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."})
        );
        let now = now_secs();
        let expired = token(json!({"role": "anon", "exp": now - 600}));
        let no_role = token(json!({"iss": "x", "exp": now + 600}));
        for bad in [
            "garbage",
            forged("service_role").as_str(),
            &unsigned(json!({"role": "service_role"})),
            &expired,
            &no_role,
        ] {
            let resp = gw.get(path).header("apikey", bad).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {bad}");
            assert_eq!(
                json_of(resp).await,
                json!({"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."})
            );
        }
    }
}

#[tokio::test]
async fn api_key_may_come_as_a_query_parameter() {
    let gw = spawn_gateway(&[]).await;
    let key = api_key("anon");
    let resp = gw
        .get(&format!("/rest/v1/todos?apikey={key}&select=id"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo = json_of(resp).await;
    assert_eq!(echo["role"], "anon");
    assert_eq!(echo["path"], "/todos");
}

#[tokio::test]
async fn rest_refuses_bad_bearer_tokens_with_postgrest_errors() {
    let gw = spawn_gateway(&[]).await;
    let key = api_key("anon");
    let expired = user_token("6d3c1f5e-0000-4000-8000-000000000001", -600);
    let cases = [
        (expired.as_str(), "PGRST303", "JWT expired"),
        (
            &forged("authenticated"),
            "PGRST301",
            "No suitable key or wrong key type",
        ),
        (
            &unsigned(json!({"role": "service_role"})),
            "PGRST301",
            "No suitable key or wrong key type",
        ),
        ("a.b", "PGRST301", "Expected 3 parts in JWT; got 2"),
    ];
    for (bearer, code, message) in cases {
        let resp = gw
            .get("/rest/v1/todos")
            .header("apikey", &key)
            .header("authorization", format!("Bearer {bearer}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let www = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
        assert_eq!(
            json_of(resp).await,
            json!({"code": code, "details": null, "hint": null, "message": message})
        );
    }
}

#[tokio::test]
async fn forwards_the_verified_caller_the_request_and_its_ids() {
    let gw = spawn_gateway(&[]).await;
    let sub = "6d3c1f5e-0000-4000-8000-000000000002";
    let resp = gw
        .post("/rest/v1/todos?select=id,task&id=eq.1")
        .header("apikey", api_key("anon"))
        .header("authorization", format!("Bearer {}", user_token(sub, 600)))
        .header("x-request-id", "client-chosen-id")
        .header("prefer", "return=representation")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(r#"{"task":"write tests"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id");
    assert_eq!(resp.headers()["content-range"], "0-0/1");
    let echo = json_of(resp).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/todos");
    assert_eq!(echo["query"], "select=id,task&id=eq.1");
    assert_eq!(echo["body"], r#"{"task":"write tests"}"#);
    assert_eq!(echo["role"], "authenticated");
    assert_eq!(echo["subject"], sub);
    assert_eq!(echo["claims"]["email"], "user@example.com");
    assert_eq!(echo["request_id"], "client-chosen-id");
    assert_eq!(echo["remote_addr"], "127.0.0.1");
    assert_eq!(echo["headers"]["prefer"], "return=representation");
    // The caller's own trace headers reach the service untouched (PostgREST exposes them to SQL).
    assert_eq!(
        echo["headers"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(echo["headers"].get("connection").is_none());
}

#[tokio::test]
async fn makes_a_request_id_when_the_client_sends_none_or_a_bad_one() {
    let gw = spawn_gateway(&[]).await;
    for sent in [None, Some("has spaces and ; stuff")] {
        let mut req = gw.get("/rest/v1/x").header("apikey", api_key("anon"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(json_of(resp).await["request_id"], id.as_str());
    }
}

#[tokio::test]
async fn auth_receives_a_bad_bearer_verdict_instead_of_a_refusal() {
    let gw = spawn_gateway(&[]).await;
    let resp = gw
        .get("/auth/v1/user")
        .header("apikey", api_key("anon"))
        .header(
            "authorization",
            format!(
                "Bearer {}",
                user_token("6d3c1f5e-0000-4000-8000-000000000003", -600)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo = json_of(resp).await;
    assert_eq!(echo["path"], "/user");
    assert_eq!(echo["role"], "anon");
    assert_eq!(echo["token_error"], "JWT expired");
    assert_eq!(echo["claims"]["role"], "anon");
}

#[tokio::test]
async fn auth_redirect_routes_need_no_api_key() {
    let gw = spawn_gateway(&[]).await;
    for path in [
        "/auth/v1/verify?token=abc&type=signup",
        "/auth/v1/.well-known/jwks.json",
        "/auth/v1/callback",
    ] {
        let resp = gw.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(json_of(resp).await["role"], "anon");
    }
    // Every other auth route does.
    assert_eq!(
        gw.get("/auth/v1/settings").send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn storage_accepts_a_bearer_alone_and_streams_bodies_both_ways() {
    let gw = spawn_gateway(&[]).await;
    let body: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let resp = gw
        .post("/storage/v1/object/bucket/a/b.bin")
        .header(
            "authorization",
            format!("Bearer {}", api_key("service_role")),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-role"], "service_role");
    assert_eq!(resp.headers()["x-path"], "/object/bucket/a/b.bin");
    let echoed = resp.bytes().await.unwrap();
    assert_eq!(echoed.len(), body.len());
    assert!(
        echoed.as_ref() == body.as_slice(),
        "the body came back changed"
    );

    // Storage decides what a bad token means; the gateway forwards anon.
    let resp = gw
        .post("/storage/v1/object/bucket/x")
        .header(
            "authorization",
            format!("Bearer {}", forged("service_role")),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-role"], "anon");
}

#[tokio::test]
async fn meta_is_for_the_service_role_only() {
    let gw = spawn_gateway(&[]).await;
    let resp = gw.get("/pg/tables").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw
        .get("/pg/tables")
        .header("apikey", api_key("anon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "forbidden");
    assert_eq!(
        body["error"],
        "the database management API requires the service_role key"
    );
    let resp = gw
        .get("/pg/tables")
        .header("apikey", api_key("anon"))
        .header(
            "authorization",
            format!(
                "Bearer {}",
                user_token("6d3c1f5e-0000-4000-8000-000000000004", 600)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = gw
        .get("/pg/tables")
        .header("apikey", api_key("service_role"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await["path"], "/tables");
}

#[tokio::test]
async fn relays_service_statuses_and_headers_and_hides_grpc_failures() {
    let gw = spawn_gateway(&[]).await;
    let resp = gw
        .get("/rest/v1/teapot")
        .header("apikey", api_key("anon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-teapot"], "short and stout");
    assert_eq!(resp.text().await.unwrap(), "i am a teapot");

    let resp = gw
        .get("/rest/v1/grpc-error")
        .header("apikey", api_key("anon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("hunter2"), "{body}");
}

#[tokio::test]
async fn a_service_not_configured_or_down_answers_503_in_each_surface_shape() {
    let closed = format!("http://127.0.0.1:{}", ferrobase_testkit::free_port());
    let env = Env::from_pairs([
        ("FERROBASE_HOST", "127.0.0.1"),
        ("FERROBASE_PORT", "0"),
        ("FERROBASE_METRICS_ADDR", "off"),
        ("FERROBASE_JWT_SECRET", JWT_SECRET),
        ("FERROBASE_REST_URL", closed.as_str()),
    ]);
    let gw = spawn_gateway_with(env).await;
    let key = api_key("service_role");

    let started = Instant::now();
    let resp = gw
        .get("/rest/v1/todos")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a down service must not hang"
    );
    assert_eq!(resp.status(), 503);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "service_unavailable");
    assert!(body.get("details").is_some() && body.get("hint").is_some());

    let resp = gw
        .post("/auth/v1/token?grant_type=password")
        .header("apikey", &key)
        .header("x-supabase-api-version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-supabase-api-version"], "2024-01-01");
    assert_eq!(resp.headers()["x-sb-error-code"], "service_unavailable");
    let body = json_of(resp).await;
    assert_eq!(body["code"], "service_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("auth service is not configured")
    );

    // Without the API version header auth errors use the older shape.
    let resp = gw
        .post("/auth/v1/signup")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    let body = json_of(resp).await;
    assert_eq!(body["code"], 503);
    assert_eq!(body["error_code"], "service_unavailable");
    assert!(body["error_id"].is_string());

    let resp = gw
        .get("/storage/v1/bucket")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(json_of(resp).await["statusCode"], "503");

    let resp = gw
        .get("/pg/tables")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn a_slow_service_times_out_with_504() {
    let gw = spawn_gateway(&[("FERROBASE_REQUEST_TIMEOUT_MS", "300")]).await;
    let started = Instant::now();
    let resp = gw
        .get("/rest/v1/slow")
        .header("apikey", api_key("anon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(json_of(resp).await["code"], "gateway_timeout");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let gw = spawn_gateway(&[("FERROBASE_MAX_BODY_BYTES", "1024")]).await;
    let resp = gw
        .post("/auth/v1/signup")
        .header("apikey", api_key("anon"))
        .header("x-supabase-api-version", "2024-01-01")
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(json_of(resp).await["code"], "request_entity_too_large");
    let resp = gw
        .post("/auth/v1/signup")
        .header("apikey", api_key("anon"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await["body"].as_str().unwrap().len(), 1024);
}

#[tokio::test]
async fn answers_cors_preflights_and_exposes_headers() {
    let gw = spawn_gateway(&[]).await;
    let resp = gw
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/rest/v1/todos", gw.url),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "apikey, authorization, content-type, prefer, x-client-info",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert_eq!(
        h["access-control-allow-headers"],
        "apikey, authorization, content-type, prefer, x-client-info"
    );
    assert_eq!(h["access-control-max-age"], "86400");

    // Refusals carry CORS headers too, or browsers hide the error from the app.
    let resp = gw
        .get("/rest/v1/todos")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "Content-Range",
        "X-Supabase-Api-Version",
        "X-Total-Count",
        "Content-Location",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_realtime_is_501() {
    let gw = spawn_gateway(&[]).await;
    let resp = gw.get("/nope").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        json_of(resp).await,
        json!({"message": "no Route matched with those values"})
    );
    let resp = gw
        .get("/realtime/v1/websocket?apikey=x&vsn=2.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a bad key is refused before anything else"
    );
    let key = api_key("anon");
    let resp = gw
        .get(&format!("/realtime/v1/websocket?apikey={key}&vsn=2.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "not_implemented");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("realtime is not available")
    );
    let resp = gw.get("/health").send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn rate_limits_are_counted_in_redis() {
    let redis = ferrobase_testkit::redis();
    let prefix = ferrobase_testkit::unique_prefix();
    let gw = spawn_gateway(&[
        ("FERROBASE_REDIS_URL", redis.url().as_str()),
        ("FERROBASE_REDIS_PREFIX", prefix.as_str()),
        ("FERROBASE_RATE_LIMITS", "POST /auth/v1/token=3/60"),
    ])
    .await;
    let key = api_key("anon");
    for _ in 0..3 {
        let resp = gw
            .post("/auth/v1/token?grant_type=password")
            .header("apikey", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = gw
        .post("/auth/v1/token?grant_type=password")
        .header("apikey", &key)
        .header("x-supabase-api-version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        json_of(resp).await,
        json!({"code": "over_request_rate_limit", "message": "Request rate limit reached"})
    );
    // Other routes are not limited by that rule.
    let resp = gw
        .post("/auth/v1/signup")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A second gateway replica shares the same budget through Redis.
    let gw2 = spawn_gateway(&[
        ("FERROBASE_REDIS_URL", redis.url().as_str()),
        ("FERROBASE_REDIS_PREFIX", prefix.as_str()),
        ("FERROBASE_RATE_LIMITS", "POST /auth/v1/token=3/60"),
    ])
    .await;
    let resp = gw2
        .post("/auth/v1/token")
        .header("apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn rate_limits_count_by_a_body_field() {
    let redis = ferrobase_testkit::redis();
    let prefix = ferrobase_testkit::unique_prefix();
    let gw = spawn_gateway(&[
        ("FERROBASE_REDIS_URL", redis.url().as_str()),
        ("FERROBASE_REDIS_PREFIX", prefix.as_str()),
        ("FERROBASE_RATE_LIMITS", "POST /auth/v1/otp=2/60 by email"),
    ])
    .await;
    let key = api_key("anon");
    let otp = |body: serde_json::Value| {
        gw.post("/auth/v1/otp")
            .header("apikey", &key)
            .json(&body)
            .send()
    };
    // The address is normalised: case and surrounding spaces spend one budget.
    for email in ["a@example.com", " A@Example.com "] {
        assert_eq!(otp(json!({"email": email})).await.unwrap().status(), 200);
    }
    let resp = otp(json!({"email": "a@example.COM"})).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(json_of(resp).await["error_code"], "over_request_rate_limit");
    // Another address from the same IP has its own budget.
    assert_eq!(
        otp(json!({"email": "b@example.com"}))
            .await
            .unwrap()
            .status(),
        200
    );
    // Bodies without the field (or not JSON) are not counted by the rule.
    for _ in 0..3 {
        assert_eq!(otp(json!({"phone": "123"})).await.unwrap().status(), 200);
        let resp = gw
            .post("/auth/v1/otp")
            .header("apikey", &key)
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Redis holds a digest of the address, never the address itself.
    let mut conn = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains('@')), "{keys:?}");
}

#[tokio::test]
async fn verifies_asymmetric_tokens_from_a_key_set() {
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvWNL3qvF+DP7HrtE
X0j65D/luD5MceCTdK7GrWNE/iihRANCAAQx+4ZfBeffYXmd9sAhocjNNlzDA4rG
0WmDsU9FYy8qz9yZTfmTUVIZj9PZ4W8VKRf+YX1QPPXaLfDZSsYwD3Yk
-----END PRIVATE KEY-----";
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "key-1", "alg": "ES256", "use": "sig",
        "x": "MfuGXwXn32F5nfbAIaHIzTZcwwOKxtFpg7FPRWMvKs8",
        "y": "3JlN-ZNRUhmP09nhbxUpF_5hfVA89dot8NlKxjAPdiQ",
    }]})
    .to_string();
    let gw = spawn_gateway(&[("FERROBASE_JWT_JWKS", jwks.as_str())]).await;
    let sign = |kid: &str, claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let now = now_secs();
    let good = sign(
        "key-1",
        json!({"role": "authenticated", "sub": "u1", "exp": now + 600}),
    );
    let resp = gw
        .get("/rest/v1/t")
        .header("apikey", api_key("anon"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await["subject"], "u1");

    let unknown_kid = sign("key-2", json!({"role": "authenticated", "exp": now + 600}));
    let resp = gw
        .get("/rest/v1/t")
        .header("apikey", api_key("anon"))
        .header("authorization", format!("Bearer {unknown_kid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(resp).await["code"], "PGRST301");
}

#[tokio::test]
async fn the_trace_continues_from_client_through_gateway_to_service() {
    let gw = spawn_gateway(&[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = gw
        .get("/rest/v1/traced")
        .header("apikey", api_key("anon"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let wanted = TraceId::from_hex(trace_id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spans: Vec<_> = spans()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == wanted)
            .collect();
        let edge = spans.iter().find(|s| s.name == "http.request");
        let service = spans.iter().find(|s| s.name == "grpc.server");
        if let (Some(edge), Some(service)) = (edge, service) {
            assert_eq!(edge.parent_span_id.to_string(), "00f067aa0ba902b7");
            assert_eq!(service.parent_span_id, edge.span_context.span_id());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the trace: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exposes_prometheus_metrics() {
    let port = ferrobase_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let gw = spawn_gateway(&[("FERROBASE_METRICS_ADDR", addr.as_str())]).await;
    let resp = gw
        .get("/rest/v1/counted")
        .header("apikey", api_key("anon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("ferrobase_http_requests_total")
                && l.contains(r#"surface="rest""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(text.contains("ferrobase_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn stopping_drains_requests_in_flight_and_refuses_new_ones() {
    let gw = spawn_gateway(&[]).await;
    let url = gw.url.clone();
    let in_flight = tokio::spawn(
        gw.get("/rest/v1/pause")
            .header("apikey", api_key("anon"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.shut_down().await.unwrap();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the request in flight completes");
    assert_eq!(json_of(resp).await["path"], "/pause");
    assert!(
        reqwest::get(format!("{url}/health")).await.is_err(),
        "no new requests after stopping"
    );
}
