//! Input checks shared by the routes: emails, phones, passwords, redirects.

use serde_json::json;

use crate::api::ApiError;
use crate::config::AuthConfig;

/// The longest password bcrypt reads.
const MAX_PASSWORD_BYTES: usize = 72;
const MAX_EMAIL_LEN: usize = 255;

/// Lower-cases and checks an email address.
pub fn email(raw: &str) -> Result<String, ApiError> {
    let e = raw.trim().to_lowercase();
    let invalid = || {
        ApiError::new(
            400,
            "validation_failed",
            "Unable to validate email address: invalid format",
        )
    };
    if e.is_empty() || e.len() > MAX_EMAIL_LEN {
        return Err(invalid());
    }
    let (local, domain) = e.rsplit_once('@').ok_or_else(invalid)?;
    let ok_chars = |s: &str| {
        s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>()[]\\,;:\"@".contains(c))
    };
    if local.is_empty()
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || !ok_chars(local)
        || !ok_chars(domain)
    {
        return Err(invalid());
    }
    Ok(e)
}

/// Strips `+` and spaces and checks E.164.
pub fn phone(raw: &str) -> Result<String, ApiError> {
    let p: String = raw
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| *c != ' ')
        .collect();
    let ok =
        (2..=15).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()) && !p.starts_with('0');
    if ok {
        Ok(p)
    } else {
        Err(ApiError::new(
            400,
            "validation_failed",
            "Invalid phone number format (E.164 required)",
        ))
    }
}

/// Why a password is weak, if it is (`length`, `characters`).
pub fn password_weakness(
    config: &AuthConfig,
    password: &str,
) -> Option<(String, Vec<&'static str>)> {
    let mut reasons = Vec::new();
    let mut messages = Vec::new();
    if password.chars().count() < config.password_min_length {
        reasons.push("length");
        messages.push(format!(
            "Password should be at least {} characters.",
            config.password_min_length
        ));
    }
    let groups = &config.password_required_characters;
    if !groups.is_empty()
        && !groups
            .iter()
            .all(|g| password.chars().any(|c| g.contains(c)))
    {
        reasons.push("characters");
        messages.push(format!(
            "Password should contain at least one character of each: {}.",
            groups.join(", ")
        ));
    }
    (!reasons.is_empty()).then(|| (messages.join(" "), reasons))
}

/// Refuses a weak password with 422 `weak_password`, a too long one with 400.
pub fn password(config: &AuthConfig, password: &str) -> Result<(), ApiError> {
    if password.contains('\0') {
        return Err(ApiError::new(
            400,
            "validation_failed",
            "Password cannot contain NUL characters",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            400,
            "validation_failed",
            format!("Password cannot be longer than {MAX_PASSWORD_BYTES} characters"),
        ));
    }
    if let Some((message, reasons)) = password_weakness(config, password) {
        let mut e = ApiError::new(422, "weak_password", message);
        e.extra = Some(json!({"weak_password": {"reasons": reasons}}));
        return Err(e);
    }
    Ok(())
}

/// The redirect target to use: `requested` when it is the site URL's host or
/// matches an allow-list glob, else the site URL.
pub fn redirect_to(config: &AuthConfig, requested: Option<&str>) -> String {
    let Some(r) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return config.site_url.clone();
    };
    if r.len() > 2048 || r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return config.site_url.clone();
    }
    let same_host = match (origin_host(r), origin_host(&config.site_url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if same_host || config.redirect_allow_list.iter().any(|g| glob_match(g, r)) {
        r.to_owned()
    } else {
        config.site_url.clone()
    }
}

fn origin_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    };
    Some(host.to_lowercase())
}

/// Glob match: `**` matches anything, `*` anything but `/` and `.`, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => (0..=t.len()).any(|i| go(&p[2..], &t[i..])),
            Some('*') => {
                for i in 0..=t.len() {
                    if go(&p[1..], &t[i..]) {
                        return true;
                    }
                    if i < t.len() && (t[i] == '/' || t[i] == '.') {
                        return false;
                    }
                }
                false
            }
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    p.len() <= 512 && go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_emails_and_phones() {
        assert_eq!(email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in [
            "",
            "a",
            "a@b",
            "@x.com",
            "a b@x.com",
            "a@x..com",
            "a@.com",
            "x@y.com'; drop table--",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(phone("+1 555 0100").unwrap(), "15550100");
        assert!(phone("0123").is_err());
        assert!(phone("12ab").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "http://localhost:3000/**",
            "http://localhost:3000/a/b"
        ));
        assert!(glob_match(
            "https://*.example.com/*",
            "https://app.example.com/x"
        ));
        assert!(!glob_match(
            "https://*.example.com/*",
            "https://evil.com/.example.com/x"
        ));
        assert!(!glob_match(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
    }
}
