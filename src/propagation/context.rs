//! The format-neutral trace context every extractor produces and every injector reads,
//! plus id generation.

use http::HeaderValue;

/// A trace context as carried between services, independent of the wire format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// Never 0. The high 64 bits are 0 for a 64-bit id (upper bits are never invented).
    pub trace_id: u128,
    /// Span id of the caller; 0 = no parent.
    pub parent_id: u64,
    /// Datadog sampling priority; `None` = no decision yet.
    pub sampling_priority: Option<i32>,
    /// `x-datadog-origin` / tracestate `o:` (for example `rum`).
    pub origin: Option<String>,
    /// Propagated tags with the full `_dd.p.` prefix, excluding `_dd.p.tid`
    /// (that one is derived from `trace_id` on inject).
    pub tags: Vec<(String, String)>,
    /// Other vendors' tracestate members, raw `key=value`, in order.
    pub tracestate_others: Vec<String>,
    /// Unknown sub-keys of the incoming `dd=` tracestate member, raw `k:v`, forwarded as is.
    pub dd_unknown: Vec<String>,
    /// `_dd.parent_id`: the last Datadog span id (tracestate `p:` or the merge rule).
    pub last_parent_id: Option<u64>,
    /// `_dd.propagation_error` for the edge span (`extract_max_size`, `malformed_tid <v>`,
    /// `decoding_error`).
    pub propagation_error: Option<String>,
    /// The raw `baggage` to forward byte for byte.
    pub baggage: Option<HeaderValue>,
    /// Links to contexts that were terminated by the merge.
    pub links: Vec<SpanLink>,
    /// W3C Level 2 `random-trace-id` flag (trace-flags bit 0x02): at least the right-most 7
    /// bytes of `trace_id` are random. Read from an incoming `traceparent` with this trace id,
    /// or set when stitch makes the id itself ([`TraceContext::new_trace`]); every outgoing
    /// `traceparent` with this trace id carries it.
    pub random_trace_id: bool,
}

/// A span link to an incoming context that was not continued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: Option<bool>,
    pub tracestate: Option<String>,
    pub attributes: Vec<(&'static str, String)>,
}

impl TraceContext {
    /// A context for a new trace: no parent, no sampling decision, nothing else.
    pub fn new_root(trace_id: u128) -> Self {
        TraceContext {
            trace_id,
            parent_id: 0,
            sampling_priority: None,
            origin: None,
            tags: Vec::new(),
            tracestate_others: Vec::new(),
            dd_unknown: Vec::new(),
            last_parent_id: None,
            propagation_error: None,
            baggage: None,
            links: Vec::new(),
            random_trace_id: false,
        }
    }

    /// A context for a trace stitch starts: a new id from [`new_trace_id`], whose low 64 bits
    /// are random, so the W3C random flag is set (Level 2: "SHOULD be set" when at least the
    /// right-most 7 bytes are random).
    pub fn new_trace() -> Self {
        let mut ctx = TraceContext::new_root(new_trace_id());
        ctx.random_trace_id = true;
        ctx
    }

    /// Replace the value of `key` or append it.
    pub fn set_tag(&mut self, key: &str, value: &str) {
        if let Some(slot) = self.tags.iter_mut().find(|(k, _)| k == key) {
            slot.1.clear();
            slot.1.push_str(value);
        } else {
            self.tags.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Remove `key` if present.
    pub fn remove_tag(&mut self, key: &str) {
        self.tags.retain(|(k, _)| k != key);
    }

    /// Value of the propagated tag `key` (full `_dd.p.` name).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// High 64 bits of the trace id (the `_dd.p.tid` value); 0 for a 64-bit id.
    pub fn trace_id_high(&self) -> u64 {
        (self.trace_id >> 64) as u64
    }

    /// Low 64 bits of the trace id (the `x-datadog-trace-id` value).
    pub fn trace_id_low(&self) -> u64 {
        self.trace_id as u64
    }
}

/// A new 128-bit trace id the way dd-trace 4.x makes them: the high 32 bits are the unix
/// time in seconds, the next 32 bits zero, the low 64 bits random and non-zero (so the
/// right-most 7 bytes W3C Level 2 asks to be random for the `random-trace-id` flag are).
pub fn new_trace_id() -> u128 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    (u128::from(secs) << 96) | u128::from(new_span_id())
}

/// A random, non-zero 64-bit span id.
pub fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_layout_follows_dd_trace() {
        let id = new_trace_id();
        let secs = (id >> 96) as u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) < 5, "high 32 bits are unix seconds");
        assert_eq!((id >> 64) as u32, 0, "bits 64..96 are zero");
        assert_ne!(id as u64, 0);
    }

    #[test]
    fn a_trace_stitch_starts_is_marked_random() {
        let a = TraceContext::new_trace();
        let b = TraceContext::new_trace();
        assert!(a.random_trace_id && b.random_trace_id);
        assert_ne!(
            a.trace_id as u64, b.trace_id as u64,
            "low 64 bits are random"
        );
        assert!(
            !TraceContext::new_root(5).random_trace_id,
            "an id from elsewhere is not"
        );
    }

    #[test]
    fn tags_set_replace_remove() {
        let mut c = TraceContext::new_root(1);
        c.set_tag("_dd.p.dm", "-4");
        c.set_tag("_dd.p.x", "1");
        c.set_tag("_dd.p.dm", "-3");
        assert_eq!(c.tag("_dd.p.dm"), Some("-3"));
        assert_eq!(c.tags.len(), 2);
        assert_eq!(c.tags[0].0, "_dd.p.dm");
        c.remove_tag("_dd.p.dm");
        assert_eq!(c.tag("_dd.p.dm"), None);
        assert_eq!(c.tags.len(), 1);
    }
}
