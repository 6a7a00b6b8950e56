//! Route matching: host (exact or `*.example.com`) and path (prefix or exact); the longest path
//! wins, then an exact path, then the more specific host, then declaration order. Pure code over
//! plain values.

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// The host, lowercase, without port.
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (stored as `.example.com`), not the apex.
    Suffix(String),
}

impl HostMatch {
    /// Parse a host pattern from the configuration.
    pub fn parse(s: &str) -> Result<HostMatch, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!(
                "`{s}` is not a host name or a `*.example.com` pattern (no port, no scheme)"
            ));
        }
        Ok(if wild {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    /// Does the port-stripped `host` match (ASCII case-insensitively)?
    pub fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        match self {
            HostMatch::Exact(h) => h.as_bytes().eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// Does `prefix` match `path` on a segment boundary? `/api` matches `/api`, `/api/x` and
/// `/api?q`, never `/apix`; a prefix ending in `/` matches everything below it.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    if prefix.ends_with('/') || path.len() == prefix.len() {
        return true;
    }
    matches!(path.as_bytes().get(prefix.len()), Some(b'/') | Some(b'?'))
}

/// Is `path` (a query string may follow) exactly `want`?
pub fn exact_path_matches(want: &str, path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path == want
}

/// The host part of a `Host` header or authority, without port or trailing dot (case kept;
/// matching ignores case). Borrowed: routing allocates nothing.
pub fn host_part(raw: &str) -> &str {
    let h = if raw.starts_with('[') {
        // IPv6 literal: the brackets' content.
        raw.split(']').next().unwrap_or(raw).trim_start_matches('[')
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    h.trim_end_matches('.')
}

/// One route as the router sees it: an optional host pattern and a path prefix.
#[derive(Debug, Clone)]
struct Entry {
    host: Option<HostMatch>,
    path: String,
    /// The path must be equal (a query string may follow), not a prefix.
    exact: bool,
}

/// Routes in match order; [`Router::find`] gives the index a route was declared at.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Declaration indexes, sorted by descending path length, exact paths before prefixes of
    /// the same length, then an exact host before a `*.` pattern before any host, then
    /// declaration order.
    order: Vec<usize>,
    entries: Vec<Entry>,
}

impl Router {
    /// A router over `(host, path, exact)` in declaration order.
    pub fn new<'a>(
        routes: impl IntoIterator<Item = (Option<&'a HostMatch>, &'a str, bool)>,
    ) -> Router {
        let entries: Vec<Entry> = routes
            .into_iter()
            .map(|(host, path, exact)| Entry {
                host: host.cloned(),
                path: path.to_string(),
                exact,
            })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        // Stable sort keeps declaration order among equal keys.
        order.sort_by_key(|&i| {
            let e = &entries[i];
            let host = match e.host {
                Some(HostMatch::Exact(_)) => 0,
                Some(HostMatch::Suffix(_)) => 1,
                None => 2,
            };
            (std::cmp::Reverse(e.path.len()), !e.exact, host)
        });
        Router { order, entries }
    }

    /// The declaration index of the route for this host (see [`host_part`]) and path, if any.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let e = &self.entries[i];
            let path_ok = if e.exact {
                exact_path_matches(&e.path, path)
            } else {
                path_matches(&e.path, path)
            };
            e.host.as_ref().map(|h| h.matches(host)).unwrap_or(true) && path_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router over `(name, host, path)` rows, and a lookup that answers with the name.
    fn router(
        rows: &[(&'static str, Option<&str>, &str)],
    ) -> impl Fn(&str, &str) -> Option<&'static str> {
        let hosts: Vec<Option<HostMatch>> = rows
            .iter()
            .map(|r| r.1.map(|h| HostMatch::parse(h).unwrap()))
            .collect();
        let r = Router::new(hosts.iter().zip(rows).map(|(h, row)| {
            (
                h.as_ref(),
                row.2.trim_end_matches('='),
                row.2.ends_with('='),
            )
        }));
        let names: Vec<&'static str> = rows.iter().map(|r| r.0).collect();
        move |h, p| r.find(h, p).map(|i| names[i])
    }

    #[test]
    fn host_patterns() {
        let rows: &[(&str, &str, bool, &str)] = &[
            ("api.example.com", "api.example.com", true, "exact"),
            ("api.example.com", "www.example.com", false, "other host"),
            ("*.example.com", "a.example.com", true, "subdomain"),
            ("*.example.com", "a.b.example.com", true, "deeper subdomain"),
            (
                "*.example.com",
                "example.com",
                false,
                "apex is not a subdomain",
            ),
            (
                "*.example.com",
                "evil-example.com",
                false,
                "suffix without dot",
            ),
            (
                "*.example.com",
                "example.com.evil.net",
                false,
                "suffix elsewhere",
            ),
        ];
        for (pat, host, want, why) in rows {
            assert_eq!(HostMatch::parse(pat).unwrap().matches(host), *want, "{why}");
        }
        assert!(HostMatch::parse("http://x.com").is_err());
        assert!(HostMatch::parse("x.com:80").is_err());
        assert!(HostMatch::parse("").is_err());
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_part("API.Example.com:8080"), "API.Example.com");
        assert_eq!(host_part("example.com."), "example.com");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert!(HostMatch::parse("api.example.com")
            .unwrap()
            .matches(host_part("API.Example.COM:443")));
        assert!(HostMatch::parse("*.example.com")
            .unwrap()
            .matches("A.EXAMPLE.com"));
    }

    #[test]
    fn path_prefixes_match_on_segments() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/users"));
        assert!(path_matches("/api", "/api?x=1"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
    }

    #[test]
    fn longest_prefix_then_declaration_order() {
        let name = router(&[
            ("root", None, "/"),
            ("api", None, "/api"),
            ("api-v2", None, "/api/v2"),
            ("hosted", Some("*.example.com"), "/api"),
        ]);
        assert_eq!(name("x", "/api/v2/a"), Some("api-v2"));
        assert_eq!(name("x", "/api/v1"), Some("api"));
        // Same prefix length: the route with a host comes first for its hosts.
        assert_eq!(name("a.example.com", "/api"), Some("hosted"));
        assert_eq!(name("example.com", "/api"), Some("api"));
        assert_eq!(name("x", "/other"), Some("root"));
        let only_host = router(&[("h", Some("a.com"), "/")]);
        assert_eq!(only_host("b.com", "/"), None);
        // A catch-all declared first does not shadow a host's routes of the same path; an exact
        // host comes before a pattern; among equals, declaration order.
        let hosts = router(&[
            ("any", None, "/"),
            ("wild", Some("*.a.com"), "/"),
            ("exact", Some("x.a.com"), "/"),
            ("exact-again", Some("x.a.com"), "/"),
        ]);
        assert_eq!(hosts("x.a.com", "/"), Some("exact"));
        assert_eq!(hosts("y.a.com", "/"), Some("wild"));
        assert_eq!(hosts("b.com", "/"), Some("any"));
        // `=` marks an exact path: it wins over a prefix of the same length, matches with a
        // query string, and never below it.
        let exact = router(&[
            ("prefix", None, "/a"),
            ("exact", None, "/a="),
            ("root", None, "/"),
        ]);
        assert_eq!(exact("x", "/a"), Some("exact"));
        assert_eq!(exact("x", "/a?q=1"), Some("exact"));
        assert_eq!(exact("x", "/a/b"), Some("prefix"));
        let only_exact = router(&[("exact", None, "/a/="), ("root", None, "/")]);
        assert_eq!(only_exact("x", "/a/"), Some("exact"));
        assert_eq!(only_exact("x", "/a/b"), Some("root"));
        assert_eq!(only_host("a.com", "/x"), Some("h"));
    }
}
