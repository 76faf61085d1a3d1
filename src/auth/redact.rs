//! Secrets out of log lines: a URL or query string with its `key`, `token` and other
//! credential parameters (and any `user:password@`) replaced by `REDACTED`. Every log
//! line or error text that shows a URL or a query goes through here.

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &[
    "key",
    "token",
    "access_token",
    "secret",
    "password",
    "sig",
    "signature",
];

pub const REDACTED: &str = "REDACTED";

/// `url` (or a bare path with a query, or a bare query) with every credential replaced.
pub fn url(url: &str) -> String {
    let (before, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = match before.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None if !before.contains('/') && before.contains('=') => ("", Some(before)),
        None => (before, None),
    };
    let mut out = userinfo(base);
    if let Some(query) = query {
        if !base.is_empty() || before.starts_with('?') {
            out.push('?');
        }
        out.push_str(&self::query(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&self::query(fragment));
    }
    out
}

/// `a=1&token=xyz` → `a=1&token=REDACTED`.
pub fn query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let lowered = name.to_ascii_lowercase();
            if pair.contains('=') && SECRET_PARAMS.contains(&lowered.as_str()) {
                format!("{name}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `http://user:pw@host/` → `http://user:REDACTED@host/`.
fn userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            let hidden = if authority.contains(':') && authority.find(':') < authority.find('@') {
                format!("{user}:{REDACTED}")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive_redaction() {
        assert_eq!(
            url("/ws/publish/cam/blob?session=s1&key=hunter2&token=eyJ.x.y"),
            "/ws/publish/cam/blob?session=s1&key=REDACTED&token=REDACTED"
        );
        assert_eq!(
            url("https://hooks.example/in?Token=abc&n=1#access_token=zz"),
            "https://hooks.example/in?Token=REDACTED&n=1#access_token=REDACTED"
        );
        assert_eq!(
            url("http://bob:pa55@auth.local:9000/check?x=1"),
            "http://bob:REDACTED@auth.local:9000/check?x=1"
        );
        assert_eq!(url("key=abc&gen=3"), "key=REDACTED&gen=3");
        assert_eq!(url("http://plain.host/path"), "http://plain.host/path");
        assert_eq!(query("keyframe=1&monkey=2"), "keyframe=1&monkey=2");
        for line in [
            url("/x?key=hunter2"),
            url("http://u:hunter2@h/"),
            query("token=hunter2"),
        ] {
            assert!(!line.contains("hunter2"), "{line}");
        }
    }
}
