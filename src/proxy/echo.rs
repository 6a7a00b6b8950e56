//! The built-in `builtin:echo` upstream: a JSON description of the request as stitch would send
//! it upstream, so a user can see what stitch does to headers, and the client address stitch
//! found.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};

/// The echo body for a request whose headers were already rewritten, from `client` (the address
/// stitch found through its trusted proxies).
pub fn body(req: &RequestHeader, client: Option<IpAddr>) -> Vec<u8> {
    let mut headers = Map::new();
    for (name, value) in req.headers.iter() {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            None => {
                headers.insert(name.as_str().to_string(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
        }
    }
    let doc = json!({
        "method": req.method.as_str(),
        "path": req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
        "client": client.map(|c| c.to_string()),
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}
