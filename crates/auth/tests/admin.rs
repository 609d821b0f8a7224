//! The admin API with the service_role key.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn admin_routes_refuse_everyone_but_admin_roles() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("plain@example.com", "password-1").await;
    let at = s(&session, "access_token");
    for (method, path) in [
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", "/admin/users/00000000-0000-0000-0000-000000000001"),
        ("POST", "/admin/generate_link"),
        ("POST", "/invite"),
    ] {
        let r = auth
            .user(method, path, Some(json!({"email": "x@example.com"})), &at)
            .await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.body["code"], "not_admin");
        assert_eq!(r.body["message"], "User not allowed");
        let r = auth
            .user(
                method,
                path,
                Some(json!({})),
                &ferrobase_testkit::api_key("anon"),
            )
            .await;
        assert_eq!(r.body["code"], "not_admin");
        let r = auth.anon(method, path, Some(json!({}))).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.body["code"], "no_authorization");
    }
    // A forged service_role token.
    let forged = ferrobase_common::jwt::sign_hs256(
        b"some-other-secret-that-is-32-chars-long!!",
        &json!({"role": "service_role"}),
    )
    .unwrap();
    let r = auth.user("GET", "/admin/users", None, &forged).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "bad_jwt");
    // supabase_admin with a non-UUID subject passes.
    let admin = ferrobase_testkit::token(json!({"role": "supabase_admin", "sub": "1234567890"}));
    let r = auth.user("GET", "/admin/users", None, &admin).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn create_get_update_delete_users() {
    let auth = spawn(&[]).await;
    let r = auth
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"email": "Admin.Made@example.com", "password": "made-pass", "email_confirm": true,
                        "user_metadata": {"full_name": "Ada"}, "app_metadata": {"plan": "pro"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["email"], "admin.made@example.com");
    assert_eq!(r.body["app_metadata"]["plan"], "pro");
    assert_eq!(r.body["app_metadata"]["provider"], "email");
    assert!(r.body["email_confirmed_at"].is_string());
    let id = s(&r.body, "id");
    assert!(auth.mails().is_empty(), "admin create sends no mail");
    auth.sign_in("admin.made@example.com", "made-pass").await;

    let r = auth
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"email": "admin.made@example.com"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "email_exists");
    let r = auth
        .admin("POST", "/admin/users", Some(json!({"user_metadata": {}})))
        .await;
    assert_eq!(r.status, 400);

    let r = auth.admin("GET", &format!("/admin/users/{id}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user_metadata"]["full_name"], "Ada");
    let r = auth.admin("GET", "/admin/users/not-a-uuid", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "validation_failed");
    let r = auth
        .admin(
            "GET",
            &format!("/admin/users/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "user_not_found");

    let before = s(
        &auth.sign_in("admin.made@example.com", "made-pass").await,
        "access_token",
    );
    let r = auth
        .admin(
            "PUT",
            &format!("/admin/users/{id}"),
            Some(json!({"password": "changed-pass", "user_metadata": {"x": 1}, "app_metadata": {"plan": null},
                        "role": "editor"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["user_metadata"],
        json!({"full_name": "Ada", "x": 1, "email_verified": true})
    );
    assert!(r.body["app_metadata"].get("plan").is_none());
    assert_eq!(r.body["role"], "editor");
    // The password change logged the user out.
    assert_eq!(
        auth.user("GET", "/user", None, &before).await.body["code"],
        "session_not_found"
    );
    let s2 = auth.sign_in("admin.made@example.com", "changed-pass").await;
    assert_eq!(claims_of(&s(&s2, "access_token"))["role"], "editor");

    let r = auth
        .admin(
            "PUT",
            &format!("/admin/users/{id}"),
            Some(json!({"ban_duration": "24h"})),
        )
        .await;
    assert!(r.body["banned_until"].is_string());
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "admin.made@example.com", "password": "changed-pass"})),
        )
        .await;
    assert_eq!(r.body["code"], "user_banned");
    // Banning ends the user's sessions.
    let r = auth.refresh(&s(&s2, "refresh_token")).await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (400, json!("refresh_token_not_found"))
    );
    let r = auth
        .admin(
            "PUT",
            &format!("/admin/users/{id}"),
            Some(json!({"ban_duration": "none"})),
        )
        .await;
    assert!(r.body.get("banned_until").is_none());
    let r = auth
        .admin(
            "PUT",
            &format!("/admin/users/{id}"),
            Some(json!({"ban_duration": "forever"})),
        )
        .await;
    assert_eq!(r.status, 400);

    let r = auth
        .admin(
            "DELETE",
            &format!("/admin/users/{id}"),
            Some(json!({"should_soft_delete": true})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({}));
    let r = auth.admin("GET", &format!("/admin/users/{id}"), None).await;
    assert!(r.body["deleted_at"].is_string());
    let r = auth
        .admin("DELETE", &format!("/admin/users/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    let r = auth.admin("GET", &format!("/admin/users/{id}"), None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn list_paginates_with_headers_auth_js_parses() {
    let auth = spawn(&[]).await;
    for i in 0..5 {
        auth.admin(
            "POST",
            "/admin/users",
            Some(json!({"email": format!("u{i}@example.com"), "user_metadata": {"full_name": format!("Person {i}")}})),
        )
        .await;
    }
    let r = auth
        .admin("GET", "/admin/users?page=&per_page=", None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["users"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["aud"], "authenticated");
    assert_eq!(r.body["users"][0]["identities"], serde_json::Value::Null);
    assert_eq!(
        r.body["users"][0]["email"], "u4@example.com",
        "newest first"
    );
    assert_eq!(r.header("x-total-count"), Some("5"));

    let r = auth
        .admin("GET", "/admin/users?page=2&per_page=2", None)
        .await;
    let users = r.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["email"], "u2@example.com");
    let link = r.header("link").unwrap().to_owned();
    // auth-js: split(','), page = the single character after the first '=', rel JSON-parsed.
    let mut pages = std::collections::HashMap::new();
    for part in link.split(',') {
        let (url, rel) = part.split_once(';').unwrap();
        let page: u32 = url.split('=').nth(1).unwrap()[..1].parse().unwrap();
        let rel: String = serde_json::from_str(rel.split('=').nth(1).unwrap()).unwrap();
        pages.insert(rel, page);
    }
    assert_eq!(pages["next"], 3);
    assert_eq!(pages["last"], 3);

    let r = auth
        .admin("GET", "/admin/users?filter=Person%203", None)
        .await;
    assert_eq!(r.body["users"].as_array().unwrap().len(), 1);
    let r = auth
        .admin("GET", "/admin/users?sort=email%20asc", None)
        .await;
    assert_eq!(r.body["users"][0]["email"], "u0@example.com");
    let r = auth
        .admin(
            "GET",
            "/admin/users?sort=email;drop%20table%20auth.users",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "unknown sorts fall back to the default");
    let r = auth.admin("GET", "/admin/users?filter=%25", None).await;
    assert_eq!(r.body["users"].as_array().unwrap().len(), 0, "% is literal");
    // As GoTrue (and the auth-js suite): what is not a non-negative integer is refused.
    for bad in ["page=-1&per_page=10", "page=1&per_page=abc"] {
        let r = auth
            .admin("GET", &format!("/admin/users?{bad}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body["code"], "validation_failed");
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .starts_with("Bad Pagination Parameters"),
            "{:?}",
            r.body
        );
    }
    let r = auth
        .admin("GET", "/admin/users?page=0&per_page=0", None)
        .await;
    assert_eq!(r.status, 200, "0 is the default");
}

#[tokio::test]
async fn invite_mails_a_link_that_confirms_the_user() {
    let auth = spawn(&[]).await;
    let r = auth
        .admin(
            "POST",
            "/invite",
            Some(json!({"email": "invitee@example.com", "data": {"team": "a"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["invited_at"].is_string());
    assert_eq!(r.body["user_metadata"]["team"], "a");
    let mail = auth.last_mail_to("invitee@example.com");
    assert_eq!(mail.kind, "invite");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "invite", "token_hash": mail.token_hash})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["user"]["email_confirmed_at"].is_string());
    let r = auth
        .admin(
            "POST",
            "/invite",
            Some(json!({"email": "invitee@example.com"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "email_exists");
}

#[tokio::test]
async fn generate_link_returns_the_link_flattened_and_sends_nothing() {
    let auth = spawn(&[(
        "FERROBASE_AUTH_REDIRECT_ALLOW_LIST",
        "https://app.example.com/**",
    )])
    .await;
    let r = auth
        .admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "magiclink", "email": "gen@example.com", "redirect_to": "https://app.example.com/welcome"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["email"], "gen@example.com");
    assert_eq!(
        r.body["verification_type"], "signup",
        "unknown email: a signup link"
    );
    assert_eq!(r.body["redirect_to"], "https://app.example.com/welcome");
    assert!(s(&r.body, "action_link").contains("type=signup"));
    assert_eq!(s(&r.body, "email_otp").len(), 6);
    assert!(auth.mails().is_empty());
    // The link works.
    let hashed = s(&r.body, "hashed_token");
    let r = auth
        .anon(
            "GET",
            &format!(
                "/verify?token={hashed}&type=signup&redirect_to=https://app.example.com/welcome"
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 303);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with("https://app.example.com/welcome#access_token="),
        "{location}"
    );

    let r = auth
        .admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "recovery", "email": "ghost@example.com"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = auth
        .admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "recovery", "email": "gen@example.com",
               "redirect_to": "https://evil.example.net/"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["verification_type"], "recovery");
    assert_eq!(
        r.body["redirect_to"], "http://localhost:3000",
        "not allowed: the site URL"
    );
    // Email change links answer the type asked for (the clients check it)
    // and link to /verify as an email change.
    for kind in ["email_change_current", "email_change_new"] {
        let r = auth
            .admin(
                "POST",
                "/admin/generate_link",
                Some(json!({"type": kind, "email": "gen@example.com",
                   "new_email": "gen-new@example.com"})),
            )
            .await;
        assert_eq!(r.status, 200, "{kind}: {:?}", r.body);
        assert_eq!(r.body["verification_type"], kind);
        assert_eq!(r.body["new_email"], "gen-new@example.com");
        assert!(
            s(&r.body, "action_link").contains("type=email_change&"),
            "{kind}: {}",
            r.body["action_link"]
        );
    }
    let r = auth
        .admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "bogus", "email": "gen@example.com"})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn the_service_role_api_key_alone_is_enough() {
    let auth = spawn(&[]).await;
    let r = auth
        .call("GET", "/admin/users", None, service_ctx(), &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A bad bearer next to it is still refused.
    let mut ctx = service_ctx();
    ctx.token_error = Some("JWT expired".into());
    let r = auth
        .call(
            "GET",
            "/admin/users",
            None,
            ctx,
            &[("authorization", "Bearer expired")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "bad_jwt");
}
