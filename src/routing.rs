//! Route matching: host (exact or `*.example.com`) and path prefix; the longest prefix wins,
//! then declaration order. Pure code over plain values.

use crate::config::Route;

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

/// Routes in match order.
#[derive(Debug, Clone)]
pub struct Router {
    /// Indexes into the config's routes, sorted by descending prefix length, then declaration.
    order: Vec<usize>,
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        // Stable sort keeps declaration order among equal prefix lengths.
        order.sort_by(|&a, &b| routes[b].path.len().cmp(&routes[a].path.len()));
        Router {
            order,
            routes: routes.to_vec(),
        }
    }

    /// The index of the route for this host (see [`host_part`]) and path, if any.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let r = &self.routes[i];
            r.host.as_ref().map(|h| h.matches(host)).unwrap_or(true) && path_matches(&r.path, path)
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;

    fn route(name: &str, host: Option<&str>, path: &str) -> Route {
        Route {
            name: name.into(),
            host: host.map(|h| HostMatch::parse(h).unwrap()),
            path: path.into(),
            target: Target::Echo,
            cors: None,
            propagation: 0,
        }
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
        let r = Router::new(&[
            route("root", None, "/"),
            route("api", None, "/api"),
            route("api-v2", None, "/api/v2"),
            route("hosted", Some("*.example.com"), "/api"),
        ]);
        let name = |h: &str, p: &str| r.find(h, p).map(|i| r.routes()[i].name.clone());
        assert_eq!(name("x", "/api/v2/a").as_deref(), Some("api-v2"));
        assert_eq!(name("x", "/api/v1").as_deref(), Some("api"));
        // Same prefix length: declaration order, so the hostless "api" route comes first.
        assert_eq!(name("a.example.com", "/api").as_deref(), Some("api"));
        assert_eq!(name("x", "/other").as_deref(), Some("root"));
        let only_host = Router::new(&[route("h", Some("a.com"), "/")]);
        assert_eq!(only_host.find("b.com", "/"), None);
        assert_eq!(only_host.find("a.com", "/x"), Some(0));
    }
}
