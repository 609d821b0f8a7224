//! Email flows: `/otp`, `/magiclink`, `/verify`, `/recover`, `/resend`, PKCE.

use base64::Engine as _;
use serde_json::json;

use crate::support::*;

fn no_autoconfirm() -> [(&'static str, &'static str); 2] {
    [
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
        ("FERROBASE_SMTP_MAX_FREQUENCY", "0"),
    ]
}

#[tokio::test]
async fn otp_creates_users_and_signs_in_with_the_code() {
    let auth = spawn(&[("FERROBASE_SMTP_MAX_FREQUENCY", "0")]).await;
    let r = auth
        .anon(
            "POST",
            "/otp",
            Some(json!({"email": "otp@example.com", "create_user": false})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "otp_disabled");
    let r = auth
        .anon(
            "POST",
            "/otp",
            Some(json!({"email": "otp@example.com", "data": {"k": 1}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({}));
    let mail = auth.last_mail_to("otp@example.com");
    assert_eq!(mail.kind, "magiclink");
    // Wrong code, then the right one as type "email".
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email", "email": "otp@example.com", "token": "000000"})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "otp_expired");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email", "email": "otp@example.com", "token": mail.otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["user_metadata"]["k"], 1);
    // The code is single-use.
    let again = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email", "email": "otp@example.com", "token": mail.otp})),
        )
        .await;
    assert_eq!(again.status, 403);
    // Legacy /magiclink.
    let r = auth
        .anon(
            "POST",
            "/magiclink",
            Some(json!({"email": "otp@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = auth
        .anon("POST", "/otp", Some(json!({"phone": "15550100"})))
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let auth = spawn(&no_autoconfirm()).await;
    auth.anon(
        "POST",
        "/signup",
        Some(json!({"email": "late@example.com", "password": "password-1"})),
    )
    .await;
    let mail = auth.last_mail_to("late@example.com");
    let db = auth.db.connect().await;
    db.execute(
        "update auth.users set confirmation_sent_at = now() - interval '2 days'",
        &[],
    )
    .await
    .unwrap();
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "signup", "token_hash": mail.token_hash})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "otp_expired");
    assert_eq!(r.body["message"], "Token has expired or is invalid");
    let r = auth
        .anon(
            "GET",
            &format!("/verify?token={}&type=signup", mail.token_hash),
            None,
        )
        .await;
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("http://localhost:3000#error=access_denied&error_code=otp_expired"),
        "{loc}"
    );
    assert!(loc.contains("error_description=Email%20link%20is%20invalid%20or%20has%20expired"));
}

#[tokio::test]
async fn verify_link_redirects_with_a_session_and_bad_input_never_confirms() {
    let auth = spawn(&no_autoconfirm()).await;
    auth.anon(
        "POST",
        "/signup",
        Some(json!({"email": "link@example.com", "password": "password-1"})),
    )
    .await;
    let mail = auth.last_mail_to("link@example.com");
    for token in [
        "",
        "x",
        "'; update auth.users set email_confirmed_at = now(); --",
        &"f".repeat(5000),
    ] {
        let r = auth
            .anon(
                "POST",
                "/verify",
                Some(json!({"type": "signup", "token_hash": token})),
            )
            .await;
        assert!(r.status == 403 || r.status == 400, "{token}: {:?}", r.body);
    }
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "bogus", "token_hash": mail.token_hash})),
        )
        .await;
    assert_eq!(r.status, 400);
    let db = auth.db.connect().await;
    let confirmed: bool = db
        .query_one("select email_confirmed_at is not null from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!confirmed);
    assert_eq!(mail.subject, "Confirm Your Signup");
    assert!(mail.body.contains(&mail.link) && mail.body.contains(&mail.otp));
    assert_eq!(mail.redirect_to, "http://localhost:3000");
    // The mailed link, as the browser follows it.
    let path = mail.link.split("/auth/v1").nth(1).unwrap().to_owned();
    let r = auth.anon("GET", &path, None).await;
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("http://localhost:3000#access_token="),
        "{loc}"
    );
    assert!(loc.contains("&token_type=bearer&type=signup"));
    assert!(loc.contains("refresh_token="));
    auth.sign_in("link@example.com", "password-1").await;
}

#[tokio::test]
async fn recover_answers_the_same_for_unknown_emails_and_the_code_signs_in() {
    let auth = spawn(&[("FERROBASE_SMTP_MAX_FREQUENCY", "0")]).await;
    auth.sign_up("lost@example.com", "password-1").await;
    let r = auth
        .anon(
            "POST",
            "/recover",
            Some(json!({"email": "ghost@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({}));
    assert!(auth.mails().is_empty());
    let r = auth
        .anon(
            "POST",
            "/recover",
            Some(json!({"email": "lost@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({}));
    let mail = auth.last_mail_to("lost@example.com");
    assert_eq!(mail.kind, "recovery");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "recovery", "email": "lost@example.com", "token": mail.otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        claims_of(&s(&r.body, "access_token"))["amr"][0]["method"],
        "recovery"
    );
    let at = s(&r.body, "access_token");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "password-new"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200);
    auth.sign_in("lost@example.com", "password-new").await;
}

#[tokio::test]
async fn mails_are_rate_limited_per_user() {
    let auth = spawn(&[("FERROBASE_AUTH_AUTOCONFIRM", "false")]).await;
    auth.anon(
        "POST",
        "/signup",
        Some(json!({"email": "often@example.com", "password": "password-1"})),
    )
    .await;
    let r = auth
        .anon(
            "POST",
            "/resend",
            Some(json!({"type": "signup", "email": "often@example.com"})),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["code"], "over_email_send_rate_limit");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("For security purposes")
    );
}

#[tokio::test]
async fn resend_sends_the_confirmation_again() {
    let auth = spawn(&no_autoconfirm()).await;
    auth.anon(
        "POST",
        "/signup",
        Some(json!({"email": "again@example.com", "password": "password-1"})),
    )
    .await;
    let first = auth.last_mail_to("again@example.com");
    let r = auth
        .anon(
            "POST",
            "/resend",
            Some(json!({"type": "signup", "email": "again@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let second = auth.last_mail_to("again@example.com");
    assert_ne!(first.token_hash, second.token_hash);
    // Only the newest code works.
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "signup", "token_hash": first.token_hash})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "signup", "token_hash": second.token_hash})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = auth
        .anon(
            "POST",
            "/resend",
            Some(json!({"type": "nope", "email": "again@example.com"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = auth
        .anon(
            "POST",
            "/resend",
            Some(json!({"type": "signup", "email": "ghost@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200);
}

fn challenge_of(verifier: &str) -> String {
    let digest = ferrobase_auth::crypto::sha256(verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[tokio::test]
async fn pkce_signup_link_gives_a_code_exchanged_for_a_session() {
    let auth = spawn(&no_autoconfirm()).await;
    let verifier = "v".repeat(43) + "-pkce-verifier";
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "pkce@example.com", "password": "password-1",
                        "code_challenge": challenge_of(&verifier), "code_challenge_method": "s256"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mail = auth.last_mail_to("pkce@example.com");
    assert!(mail.token_hash.starts_with("pkce_"));
    let path = mail.link.split("/auth/v1").nth(1).unwrap().to_owned();
    let r = auth.anon("GET", &path, None).await;
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap().to_owned();
    let code = loc
        .split("?code=")
        .nth(1)
        .unwrap_or_else(|| panic!("{loc}"))
        .to_owned();
    // A wrong verifier.
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=pkce",
            Some(json!({"auth_code": code, "code_verifier": "w".repeat(50)})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "bad_code_verifier");
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=pkce",
            Some(json!({"auth_code": code, "code_verifier": verifier})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "pkce@example.com");
    // The flow state is gone after use.
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=pkce",
            Some(json!({"auth_code": code, "code_verifier": verifier})),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "flow_state_not_found");
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=pkce",
            Some(json!({"auth_code": code})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn pkce_codes_expire() {
    let auth = spawn(&[("FERROBASE_SMTP_MAX_FREQUENCY", "0")]).await;
    auth.sign_up("pk2@example.com", "password-1").await;
    let verifier = "a".repeat(64);
    let r = auth
        .anon("POST", "/recover", Some(json!({"email": "pk2@example.com", "code_challenge": verifier, "code_challenge_method": "plain"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mail = auth.last_mail_to("pk2@example.com");
    let r = auth
        .anon(
            "GET",
            &format!("/verify?token={}&type=recovery", mail.token_hash),
            None,
        )
        .await;
    let loc = r.header("location").unwrap().to_owned();
    let code = loc.split("?code=").nth(1).unwrap().to_owned();
    let db = auth.db.connect().await;
    db.execute(
        "update auth.flow_state set auth_code_issued_at = now() - interval '10 minutes'",
        &[],
    )
    .await
    .unwrap();
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=pkce",
            Some(json!({"auth_code": code, "code_verifier": verifier})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "flow_state_expired");
}

#[tokio::test]
async fn mail_goes_through_a_plain_smtp_relay_when_allowed() {
    let smtp = SmtpSink::start().await;
    let port = smtp.port.to_string();
    let auth = spawn(&[
        ("FERROBASE_SMTP_HOST", "127.0.0.1"),
        ("FERROBASE_SMTP_PORT", &port),
        ("FERROBASE_SMTP_USER", "mailer"),
        ("FERROBASE_SMTP_PASS", "secret"),
        ("FERROBASE_SMTP_TLS", "none"),
        ("FERROBASE_SMTP_ADMIN_EMAIL", "auth@ferrobase.test"),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "smtp@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let msg = smtp.next().await;
    assert!(!msg.tls);
    assert_eq!(msg.from, "auth@ferrobase.test");
    assert_eq!(msg.to, "smtp@example.com");
    assert_eq!(msg.auth.as_deref(), Some("\0mailer\0secret"));
    assert!(msg.data.contains("Subject: Confirm Your Signup"));
    let outbox = auth.last_mail_to("smtp@example.com");
    assert!(msg.data.contains(&outbox.otp));
    assert!(msg.data.contains(&outbox.link));
}

#[tokio::test]
async fn mail_goes_over_starttls_and_credentials_never_in_clear() {
    let smtp = SmtpSink::start_tls().await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), smtp.ca_pem.clone().unwrap()).unwrap();
    let port = smtp.port.to_string();
    let ca_path = ca.path().to_string_lossy().into_owned();
    let auth = spawn(&[
        ("FERROBASE_SMTP_HOST", "localhost"),
        ("FERROBASE_SMTP_PORT", &port),
        ("FERROBASE_SMTP_USER", "mailer"),
        ("FERROBASE_SMTP_PASS", "secret"),
        ("FERROBASE_SMTP_CA_FILE", &ca_path),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "tls@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let msg = smtp.next().await;
    assert!(msg.tls, "upgraded with STARTTLS");
    assert_eq!(msg.auth.as_deref(), Some("\0mailer\0secret"));
    assert_eq!(msg.to, "tls@example.com");

    // A relay without TLS gets no credentials in auto mode: the mail fails.
    let plain = SmtpSink::start().await;
    let port = plain.port.to_string();
    let auth = spawn(&[
        ("FERROBASE_SMTP_HOST", "127.0.0.1"),
        ("FERROBASE_SMTP_PORT", &port),
        ("FERROBASE_SMTP_USER", "mailer"),
        ("FERROBASE_SMTP_PASS", "secret"),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "clear@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 500);

    // An untrusted certificate is refused.
    let auth = spawn(&[
        ("FERROBASE_SMTP_HOST", "localhost"),
        ("FERROBASE_SMTP_PORT", &smtp.port.to_string()),
        ("FERROBASE_SMTP_TLS", "starttls"),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "untrusted@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 500);
}

#[tokio::test]
async fn a_failing_smtp_relay_fails_the_signup_without_keeping_the_user() {
    let port = ferrobase_testkit::free_port().to_string();
    let auth = spawn(&[
        ("FERROBASE_SMTP_HOST", "127.0.0.1"),
        ("FERROBASE_SMTP_PORT", &port),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "nomail@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["code"], "unexpected_failure");
    let db = auth.db.connect().await;
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn phone_codes_are_refused_as_expired_once_the_number_is_well_formed() {
    let auth = spawn(&[]).await;
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "sms", "phone": "12345", "token": "123456"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["code"], "otp_expired");
    assert_eq!(r.body["message"], "Token has expired or is invalid");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "phone_change", "phone": "+1 555 0100", "token": "123456"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "sms", "phone": "not-a-number", "token": "123456"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "validation_failed");
    assert_eq!(
        r.body["message"],
        "Invalid phone number format (E.164 required)"
    );
}
