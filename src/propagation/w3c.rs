//! W3C Trace Context (`traceparent` + `tracestate`, spec §2 and §5): extract and inject,
//! including the Datadog `dd=` tracestate member.
//!
//! Rules implemented here:
//! - `traceparent` fields are lowercase hex of 2/32/16/2 characters; version `ff` is
//!   forbidden; a version-00 header is exactly 55 characters; a higher version is read in
//!   the version-00 positions and must have `-` or the end after the flags. All-zero ids
//!   are invalid. A `traceparent` on more than one line is invalid (`duplicate_header`).
//! - Trace flags are a bit field: 0x01 `sampled`, 0x02 `random-trace-id` (Level 2). Both are
//!   read with a mask; every other bit is unknown and cleared on output.
//! - If `traceparent` is absent or invalid, `tracestate` is not read at all.
//! - `tracestate` lines are joined with `,`; empty members and spaces/tabs around members
//!   are accepted; the first occurrence of a key wins. A `tracestate` over 4096 bytes or with
//!   non-ASCII bytes is ignored whole (the traceparent still counts). What an invalid member
//!   (bad key, bad or empty value, key or value over 256) or a 33rd member does depends on the
//!   profile's [`TracestateInvalid`]: `drop_member` (default) drops that member alone and keeps
//!   the first 32; `discard_header` ignores the whole header, `dd` member included.
//! - Priority: flag `01` with `s` > 0 keeps `s`, with `s` ≤ 0 gives 1; flag `00` with `s` ≤ 0
//!   keeps `s`, with `s` > 0 gives 0; without `s` the flag gives 1 or 0. (dd-trace-py's
//!   `o:rum` exception is deliberately not followed.)
//! - `dd` member: `s`, `o`, `p` (`0000000000000000` = none), `t.<k>` → `_dd.p.<k>` with `~`
//!   read back as `=`; `t.tid` is ignored (traceparent carries the 128 bits); anything else
//!   is kept raw and forwarded.
//! - Inject: `00-<32 hex>-<span 16 hex>-<flags>`, where flags are 0x01 for a keep and 0x02 when
//!   the trace id is random (kept from the incoming traceparent of the same trace id, set on a
//!   trace stitch starts; Level 2 makes keeping it a MUST); tracestate starts with the
//!   rewritten `dd` member (`s`, `o`, `p` = edge span, `t.tid`, `t.*`, unknown sub-keys; at
//!   most 256 characters, parts that do not fit are dropped), then the other members in order:
//!   at most 31 of them, and when the header would exceed 512 characters, members longer than
//!   128 are dropped first, then members from the right.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use super::context::TraceContext;
use super::{field, parse_dec_i32, parse_hex16, parse_hex_lower, trim_ows, Field, Writer};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

pub(crate) static N_TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT);
pub(crate) static N_TRACESTATE: HeaderName = HeaderName::from_static(TRACESTATE);

/// Headers of the format, for CORS.
pub const HEADERS: [&str; 2] = [TRACEPARENT, TRACESTATE];

/// At most this many tracestate members.
pub const MAX_MEMBERS: usize = 32;
/// Outbound tracestate budget (dd-trace-py).
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Members longer than this are dropped first when over budget.
pub const LONG_MEMBER: usize = 128;
/// The `dd=` member is at most this long on output.
pub const MAX_DD_MEMBER: usize = 256;
/// Incoming tracestate larger than this is ignored.
pub const MAX_INCOMING_TRACESTATE: usize = 4096;
/// Incoming `dd` member larger than this is ignored.
const MAX_INCOMING_DD: usize = 512;

/// trace-flags bit: the caller may have recorded the trace.
pub const FLAG_SAMPLED: u8 = 0x01;
/// trace-flags bit (Level 2): at least the right-most 7 bytes of the trace id are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// `tracestate_invalid` profile key: what an invalid `tracestate` member (or a 33rd member)
/// does to the header. The W3C processing model allows both ("If the `tracestate` header cannot
/// be parsed the vendor MAY discard the entire header. Invalid `tracestate` entries MAY also be
/// discarded."); the README says why `drop_member` is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TracestateInvalid {
    /// Drop the invalid member alone and keep the first 32 members; the `dd` member survives a
    /// bad neighbour.
    #[default]
    DropMember,
    /// Ignore the whole header, the `dd` member included (the W3C test suite's strict level and
    /// the OpenTelemetry SDKs).
    DiscardHeader,
}

impl TracestateInvalid {
    /// Every value, as written in a config file.
    pub const ALL: [TracestateInvalid; 2] = [
        TracestateInvalid::DropMember,
        TracestateInvalid::DiscardHeader,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            TracestateInvalid::DropMember => "drop_member",
            TracestateInvalid::DiscardHeader => "discard_header",
        }
    }

    /// Parse a config name (exact lowercase word).
    pub fn parse(s: &str) -> Option<TracestateInvalid> {
        TracestateInvalid::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// traceparent + tracestate of one request, parsed without allocating (except when
/// `tracestate` arrives on several lines).
#[derive(Clone, Debug)]
pub(crate) struct View<'a> {
    pub trace_id: u128,
    pub parent_id: u64,
    pub priority: Option<i32>,
    /// `p:` of the dd member, when non-zero.
    pub last_parent: Option<u64>,
    /// trace-flags bit 0x02.
    pub random: bool,
    /// Why the tracestate was ignored whole under `discard_header` (`None`: it was not).
    pub tracestate_discarded: Option<&'static str>,
    tracestate: Option<Cow<'a, str>>,
}

fn hex_field(s: &str, range: std::ops::Range<usize>) -> Option<u128> {
    s.get(range).and_then(parse_hex_lower)
}

/// Parse a traceparent value: (trace id, parent id, flags).
pub(crate) fn parse_traceparent(tp: &str) -> Result<(u128, u64, u8), &'static str> {
    if tp.len() < 55 {
        return Err("bad_length");
    }
    let b = tp.as_bytes();
    let version = hex_field(tp, 0..2).ok_or("bad_version")? as u8;
    if version == 0xff {
        return Err("bad_version");
    }
    if b.get(2) != Some(&b'-') || b.get(35) != Some(&b'-') || b.get(52) != Some(&b'-') {
        return Err("bad_format");
    }
    let trace_id = hex_field(tp, 3..35).ok_or("bad_trace_id")?;
    let parent_id = hex_field(tp, 36..52).ok_or("bad_parent_id")? as u64;
    let flags = hex_field(tp, 53..55).ok_or("bad_flags")? as u8;
    if version == 0 {
        if tp.len() != 55 {
            return Err("bad_length");
        }
    } else if tp.len() > 55 && b.get(55) != Some(&b'-') {
        return Err("bad_format");
    }
    if trace_id == 0 {
        return Err("zero_trace_id");
    }
    if parent_id == 0 {
        return Err("zero_parent_id");
    }
    Ok((trace_id, parent_id, flags))
}

/// The tracestate header, lines joined with `,`; `None` if absent, non-ASCII or too big.
fn tracestate(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut all = headers.get_all(&N_TRACESTATE).iter();
    let first = all.next()?;
    let first = match super::value_str(first) {
        Field::Value(v) => v,
        _ => return None,
    };
    let mut joined: Option<String> = None;
    for more in all {
        let Field::Value(v) = super::value_str(more) else {
            return None;
        };
        let j = joined.get_or_insert_with(|| first.to_owned());
        j.push(',');
        j.push_str(v);
        if j.len() > MAX_INCOMING_TRACESTATE {
            return None;
        }
    }
    match joined {
        Some(j) => Some(Cow::Owned(j)),
        None if first.len() > MAX_INCOMING_TRACESTATE => None,
        None => Some(Cow::Borrowed(first)),
    }
}

/// Is every member valid, and are there at most 32? The reason when not. Empty members do not
/// count (the spec allows them so that joined header lines stay valid); a repeated key is not
/// invalid (the W3C test suite expects the header to be kept; the first one wins).
pub(crate) fn check_tracestate(ts: &str) -> Result<(), &'static str> {
    let mut n = 0;
    for m in ts.split(',') {
        let m = trim_ows(m);
        if m.is_empty() {
            continue;
        }
        match m.split_once('=') {
            Some((k, v)) if key_ok(k) && value_ok(v) => {}
            _ => return Err("tracestate_invalid_member"),
        }
        n += 1;
        if n > MAX_MEMBERS {
            return Err("tracestate_too_many_members");
        }
    }
    Ok(())
}

fn key_ok(k: &str) -> bool {
    let b = k.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    b.len() <= 256
        && b.iter().all(|&c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

fn value_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.ends_with(' ')
        && v.bytes()
            .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// Valid members of a tracestate: (key, value, raw member).
fn members(ts: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    ts.split(',').filter_map(|m| {
        let m = trim_ows(m);
        let (k, v) = m.split_once('=')?;
        (key_ok(k) && value_ok(v)).then_some((k, v, m))
    })
}

fn dd_member(ts: &str) -> Option<&str> {
    members(ts)
        .find(|(k, _, _)| *k == "dd")
        .map(|(_, v, _)| v)
        .filter(|v| v.len() <= MAX_INCOMING_DD)
}

fn dd_fields(dd: &str) -> impl Iterator<Item = (&str, &str)> {
    dd.split(';').filter_map(|f| f.split_once(':'))
}

/// Combine the traceparent flag with the dd member's `s` (§5).
pub(crate) fn priority_from(sampled: bool, s: Option<i32>) -> i32 {
    match (sampled, s) {
        (true, Some(s)) if s > 0 => s,
        (true, _) => 1,
        (false, Some(s)) if s <= 0 => s,
        (false, _) => 0,
    }
}

/// Parse traceparent (+ tracestate, under `policy`). `Ok(None)`: no traceparent.
pub(crate) fn parse(
    headers: &HeaderMap,
    policy: TracestateInvalid,
) -> Result<Option<View<'_>>, &'static str> {
    let tp = match field(headers, &N_TRACEPARENT) {
        Field::Absent => return Ok(None),
        Field::Duplicate => return Err("duplicate_header"),
        Field::NonAscii => return Err("non_ascii"),
        Field::Value(v) => v,
    };
    let (trace_id, parent_id, flags) = parse_traceparent(tp)?;
    let sampled = flags & FLAG_SAMPLED != 0;
    let mut ts = tracestate(headers);
    let mut tracestate_discarded = None;
    if policy == TracestateInvalid::DiscardHeader {
        if let Some(Err(reason)) = ts.as_deref().map(check_tracestate) {
            tracestate_discarded = Some(reason);
            ts = None;
        }
    }
    let mut s = None;
    let mut last_parent = None;
    if let Some(dd) = ts.as_deref().and_then(dd_member) {
        for (k, v) in dd_fields(dd) {
            match k {
                "s" => s = s.or(parse_dec_i32(v)),
                "p" => last_parent = last_parent.or(parse_hex16(v).filter(|p| *p != 0)),
                _ => {}
            }
        }
    }
    Ok(Some(View {
        trace_id,
        parent_id,
        priority: Some(priority_from(sampled, s)),
        last_parent,
        random: flags & FLAG_RANDOM != 0,
        tracestate_discarded,
        tracestate: ts,
    }))
}

impl View<'_> {
    /// The raw tracestate as received (lines joined), for span links.
    pub(crate) fn raw_tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// Copy other vendors' members and unknown dd sub-keys onto `ctx`.
    pub(crate) fn copy_tracestate(&self, ctx: &mut TraceContext) {
        let Some(ts) = self.tracestate.as_deref() else {
            return;
        };
        ctx.tracestate_others.clear();
        ctx.dd_unknown.clear();
        let mut seen_dd = false;
        for (k, v, raw) in members(ts) {
            if k == "dd" {
                if !seen_dd && v.len() <= MAX_INCOMING_DD {
                    for f in v.split(';') {
                        match f.split_once(':') {
                            Some(("s" | "o" | "p", _)) => {}
                            Some((t, _)) if t.starts_with("t.") => {}
                            Some(_) => ctx.dd_unknown.push(f.to_owned()),
                            None => {}
                        }
                    }
                }
                seen_dd = true;
                continue;
            }
            if ctx.tracestate_others.len() >= MAX_MEMBERS - 1 {
                break;
            }
            let dup = ctx
                .tracestate_others
                .iter()
                .any(|o| o.split_once('=').map(|(ok, _)| ok) == Some(k));
            if !dup {
                ctx.tracestate_others.push(raw.to_owned());
            }
        }
    }

    /// The owned context.
    pub(crate) fn into_context(self) -> TraceContext {
        let mut ctx = TraceContext::new_root(self.trace_id);
        ctx.parent_id = self.parent_id;
        ctx.sampling_priority = self.priority;
        ctx.last_parent_id = self.last_parent;
        ctx.random_trace_id = self.random;
        if let Some(dd) = self.tracestate.as_deref().and_then(dd_member) {
            let mut seen_o = false;
            for (k, v) in dd_fields(dd) {
                if k == "o" && !seen_o {
                    seen_o = true;
                    if !v.is_empty() {
                        ctx.origin = Some(v.replace('~', "="));
                    }
                } else if let Some(name) = k.strip_prefix("t.") {
                    if name.is_empty() || name == "tid" || v.is_empty() {
                        continue;
                    }
                    let key = format!("_dd.p.{name}");
                    if ctx.tag(&key).is_none() {
                        ctx.tags.push((key, v.replace('~', "=")));
                    }
                }
            }
        }
        self.copy_tracestate(&mut ctx);
        ctx
    }
}

/// Extract the W3C context (invalid tracestate members dropped one by one). `Ok(None)`: no
/// traceparent; `Err(reason)`: invalid.
pub fn extract(headers: &HeaderMap) -> Result<Option<TraceContext>, &'static str> {
    extract_with(headers, TracestateInvalid::DropMember)
}

/// [`extract`] with the profile's tracestate policy.
pub fn extract_with(
    headers: &HeaderMap,
    policy: TracestateInvalid,
) -> Result<Option<TraceContext>, &'static str> {
    Ok(parse(headers, policy)?.map(View::into_context))
}

/// Write `traceparent` and `tracestate` for `ctx` with `span_id` as the parent.
pub fn inject(ctx: &TraceContext, span_id: u64, out: &mut HeaderMap) {
    let mut w = Writer::new();
    write(ctx, span_id, &mut w);
    w.flush(out);
}

/// A value for the dd member: `,` `;` `~` and non-printable → `_`, `=` → `~`, and no
/// trailing space.
fn write_dd_value(w: &mut Writer, v: &str) {
    let n = v.len();
    for (i, b) in v.bytes().enumerate() {
        let c = match b {
            b'=' => b'~',
            b',' | b';' | b'~' => b'_',
            b' ' if i + 1 == n => b'_',
            0x20..=0x7e => b,
            _ => b'_',
        };
        w.byte(c);
    }
}

/// A `t.` key: `,` `=` `;` `:` `~`, space and non-printable → `_`.
fn write_dd_key(w: &mut Writer, k: &str) {
    for b in k.bytes() {
        let c = match b {
            b',' | b'=' | b';' | b':' | b'~' | b' ' => b'_',
            0x21..=0x7e => b,
            _ => b'_',
        };
        w.byte(c);
    }
}

/// Append one `;part` (no `;` right after `dd=`) to the dd member, rolled back if the member
/// would exceed `limit`.
fn dd_part(w: &mut Writer, member_start: usize, limit: usize, part: impl FnOnce(&mut Writer)) {
    let before = w.pos();
    if before > member_start + 3 {
        w.byte(b';');
    }
    part(w);
    if w.pos() - member_start > limit {
        w.rollback(before);
    }
}

fn other_ok(m: &str) -> bool {
    match m.split_once('=') {
        Some((k, v)) => k != "dd" && key_ok(k) && value_ok(v),
        None => false,
    }
}

pub(crate) fn write(ctx: &TraceContext, span_id: u64, w: &mut Writer) {
    let mut flags = 0;
    if ctx.sampling_priority.is_some_and(|p| p > 0) {
        flags |= FLAG_SAMPLED;
    }
    if ctx.random_trace_id {
        flags |= FLAG_RANDOM;
    }
    w.begin();
    w.bytes(b"00-");
    w.hex(ctx.trace_id, 32);
    w.byte(b'-');
    w.hex(u128::from(span_id), 16);
    w.byte(b'-');
    w.hex(u128::from(flags), 2);
    w.end(&N_TRACEPARENT);

    w.begin();
    let start = w.pos();
    w.bytes(b"dd=");
    if let Some(p) = ctx.sampling_priority {
        dd_part(w, start, MAX_DD_MEMBER, |w| {
            w.bytes(b"s:");
            w.dec_i32(p);
        });
    }
    if let Some(o) = ctx.origin.as_deref().filter(|o| !o.is_empty()) {
        // Leave room for `;p:<16 hex>`.
        dd_part(w, start, MAX_DD_MEMBER - 19, |w| {
            w.bytes(b"o:");
            write_dd_value(w, o);
        });
    }
    dd_part(w, start, MAX_DD_MEMBER, |w| {
        w.bytes(b"p:");
        w.hex(u128::from(span_id), 16);
    });
    let high = ctx.trace_id_high();
    if high != 0 {
        dd_part(w, start, MAX_DD_MEMBER, |w| {
            w.bytes(b"t.tid:");
            w.hex(u128::from(high), 16);
        });
    }
    for (k, v) in &ctx.tags {
        let Some(name) = k.strip_prefix("_dd.p.") else {
            continue;
        };
        if name.is_empty() || name == "tid" || v.is_empty() {
            continue;
        }
        dd_part(w, start, MAX_DD_MEMBER, |w| {
            w.bytes(b"t.");
            write_dd_key(w, name);
            w.byte(b':');
            write_dd_value(w, v);
        });
    }
    for u in &ctx.dd_unknown {
        if u.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && !matches!(b, b',' | b'=' | b';'))
            && !u.ends_with(' ')
        {
            dd_part(w, start, MAX_DD_MEMBER, |w| w.bytes(u.as_bytes()));
        }
    }
    let dd_len = w.pos() - start;

    // Choose which other members fit (§2): at most 31 beside dd, 512 characters in all.
    let mut keep = [false; MAX_MEMBERS];
    let mut total = dd_len;
    let mut count = 0;
    for (i, m) in ctx.tracestate_others.iter().enumerate() {
        if count >= MAX_MEMBERS - 1 {
            break;
        }
        if other_ok(m) {
            keep[i] = true;
            total += 1 + m.len();
            count += 1;
        }
    }
    let others = &ctx.tracestate_others;
    if total > MAX_TRACESTATE_LEN {
        for (i, m) in others.iter().enumerate().take(MAX_MEMBERS) {
            if keep[i] && m.len() > LONG_MEMBER {
                keep[i] = false;
                total -= 1 + m.len();
            }
        }
    }
    let mut i = others.len().min(MAX_MEMBERS);
    while total > MAX_TRACESTATE_LEN && i > 0 {
        i -= 1;
        if keep[i] {
            keep[i] = false;
            total -= 1 + others[i].len();
        }
    }
    for (i, m) in others.iter().enumerate().take(MAX_MEMBERS) {
        if keep[i] {
            w.byte(b',');
            w.bytes(m.as_bytes());
        }
    }
    w.end(&N_TRACESTATE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{headers, Pairs};

    const C: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    const TP_C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SPAN: u64 = 0x00f067aa0ba902b7;

    enum Exp {
        Absent,
        Invalid(&'static str),
        /// trace, parent, priority, origin, tags `k=v,..`, others `,`-joined, last parent.
        Ok(
            u128,
            u64,
            i32,
            Option<&'static str>,
            &'static str,
            &'static str,
            Option<u64>,
        ),
    }

    #[test]
    fn extract_table() {
        let long_ts = format!("dd=s:1,big={}", "x".repeat(4100));
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let many = many.join(",");
        let rows: Vec<(&str, Pairs, Exp)> = vec![
            ("§2 absent traceparent", vec![("tracestate", "dd=s:2;o:rum")], Exp::Absent),
            ("§2 W3C example, sampled", vec![("traceparent", TP_C)], Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§8 RUM tracecontext shape", vec![
                ("traceparent", "00-000000000000000056d05416d0047b61-2d0a92c6677ca6be-01"), ("tracestate", "dd=s:1;o:rum")],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, 1, Some("rum"), "", "", None)),
            ("§8 RUM all mode drop", vec![
                ("traceparent", "00-000000000000000056d05416d0047b61-2d0a92c6677ca6be-00"), ("tracestate", "dd=s:0;o:rum")],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, 0, Some("rum"), "", "", None)),
            ("§10.3 other vendors kept in order", vec![("traceparent", TP_C), ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")],
                Exp::Ok(C, SPAN, 1, None, "", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", None)),
            ("§5 flag 01 + s:2 gives 2", vec![("traceparent", TP_C), ("tracestate", "dd=s:2")], Exp::Ok(C, SPAN, 2, None, "", "", None)),
            ("§10.5 flag 01 + s:-1 gives 1", vec![("traceparent", TP_C), ("tracestate", "dd=s:-1")], Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§10.6 flag 00 + s:2 gives 0", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), ("tracestate", "dd=s:2")],
                Exp::Ok(C, SPAN, 0, None, "", "", None)),
            ("§10.7 flag 00 + s:-1 gives -1", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), ("tracestate", "dd=s:-1")],
                Exp::Ok(C, SPAN, -1, None, "", "", None)),
            ("§5 flags tested with a mask (03 is sampled)", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")],
                Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§5 deliberate: 01 + s:0;o:rum gives 1 (Python: 0)", vec![("traceparent", TP_C), ("tracestate", "dd=s:0;o:rum")],
                Exp::Ok(C, SPAN, 1, Some("rum"), "", "", None)),
            ("§10.19 t.usr.id ~ read back as =", vec![("traceparent", TP_C), ("tracestate", "dd=s:2;o:rum;t.dm:-4;t.usr.id:dXNlcjE~")],
                Exp::Ok(C, SPAN, 2, Some("rum"), "_dd.p.dm=-4,_dd.p.usr.id=dXNlcjE=", "", None)),
            ("§2 p: gives _dd.parent_id", vec![("traceparent", TP_C), ("tracestate", "dd=s:1;p:0123456789abcdef")],
                Exp::Ok(C, SPAN, 1, None, "", "", Some(0x0123456789abcdef))),
            ("§2 p:0000000000000000 means none", vec![("traceparent", TP_C), ("tracestate", "dd=p:0000000000000000")],
                Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§2 t.tid ignored (traceparent carries 128 bits)", vec![("traceparent", TP_C), ("tracestate", "dd=t.tid:4bf92f3577b34da6")],
                Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§2 tracestate lines joined with ,", vec![("traceparent", TP_C), ("tracestate", "dd=s:2"), ("tracestate", "congo=x")],
                Exp::Ok(C, SPAN, 2, None, "", "congo=x", None)),
            ("§2 empty members and OWS accepted", vec![("traceparent", TP_C), ("tracestate", " , congo=x ,\t,rojo=y")],
                Exp::Ok(C, SPAN, 1, None, "", "congo=x,rojo=y", None)),
            ("§2 bad member dropped alone (uppercase key, no =), OWS trimmed", vec![("traceparent", TP_C), ("tracestate", "Congo=x,rojo=y ,novalue,ok=1")],
                Exp::Ok(C, SPAN, 1, None, "", "rojo=y,ok=1", None)),
            ("§2 duplicate key: first wins", vec![("traceparent", TP_C), ("tracestate", "a=1,a=2")], Exp::Ok(C, SPAN, 1, None, "", "a=1", None)),
            ("§2 multi-tenant key accepted", vec![("traceparent", TP_C), ("tracestate", "t@sys=1")], Exp::Ok(C, SPAN, 1, None, "", "t@sys=1", None)),
            ("§2 tracestate over 4096 ignored whole", vec![("traceparent", TP_C), ("tracestate", long_ts.as_str())], Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§2 at most 31 others beside dd", vec![("traceparent", TP_C), ("tracestate", many.as_str())], Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§10.12 higher version with future fields", vec![("traceparent", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-will-be-like")],
                Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("§2 higher version: flags must be followed by -", vec![("traceparent", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09what")], Exp::Invalid("bad_format")),
            ("§2 higher version shorter than 55", vec![("traceparent", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")], Exp::Invalid("bad_length")),
            ("§10 extra: version 00 with extra text", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00")], Exp::Invalid("bad_length")),
            ("§10.11 version ff forbidden", vec![("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")], Exp::Invalid("bad_version")),
            ("§10.13 uppercase hex invalid", vec![("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")], Exp::Invalid("bad_trace_id")),
            ("§10.14 all-zero trace id invalid", vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "dd=s:2;o:rum")], Exp::Invalid("zero_trace_id")),
            ("§2 all-zero parent id invalid", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")], Exp::Invalid("zero_parent_id")),
            ("§2 bad flags hex", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g")], Exp::Invalid("bad_flags")),
            ("§2 wrong separator", vec![("traceparent", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")], Exp::Invalid("bad_format")),
            ("§2 traceparent twice is invalid", vec![("traceparent", TP_C), ("traceparent", TP_C)], Exp::Invalid("duplicate_header")),
            ("non-ASCII traceparent invalid", vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}")], Exp::Invalid("non_ascii")),
            ("non-ASCII tracestate ignored whole", vec![("traceparent", TP_C), ("tracestate", "dd=s:2,congo=\u{e9}")], Exp::Ok(C, SPAN, 1, None, "", "", None)),
            ("OWS around traceparent trimmed", vec![("traceparent", " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ")], Exp::Ok(C, SPAN, 1, None, "", "", None)),
        ];
        assert!(rows.len() >= 30);
        for (rule, hs, exp) in rows {
            let got = extract(&headers(&hs));
            match (exp, got) {
                (Exp::Absent, Ok(None)) => {}
                (Exp::Invalid(r), Err(g)) => assert_eq!(r, g, "{rule}"),
                (Exp::Ok(t, p, prio, origin, tags, others, lp), Ok(Some(c))) => {
                    assert_eq!(c.trace_id, t, "{rule}");
                    assert_eq!(c.parent_id, p, "{rule}");
                    assert_eq!(c.sampling_priority, Some(prio), "{rule}");
                    assert_eq!(c.origin.as_deref(), origin, "{rule}");
                    let joined: Vec<String> =
                        c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    assert_eq!(joined.join(","), tags, "{rule}");
                    if rule.contains("at most 31") {
                        assert_eq!(c.tracestate_others.len(), 31, "{rule}");
                    } else {
                        assert_eq!(c.tracestate_others.join(","), others, "{rule}");
                    }
                    assert_eq!(c.last_parent_id, lp, "{rule}");
                }
                (_, got) => panic!("{rule}: unexpected {got:?}"),
            }
        }
    }

    fn injected(ctx: &TraceContext) -> (String, String) {
        let mut h = HeaderMap::new();
        inject(ctx, SPAN, &mut h);
        (
            h[TRACEPARENT].to_str().unwrap().to_owned(),
            h[TRACESTATE].to_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn inject_table() {
        let mut rum = TraceContext::new_root(6255592339373587297);
        rum.sampling_priority = Some(1);
        rum.origin = Some("rum".into());
        let mut b = TraceContext::new_root(0x640cfd8d00000000_64fe8b2a57d3eff7);
        b.sampling_priority = Some(2);
        b.set_tag("_dd.p.dm", "-4");
        b.set_tag("_dd.p.usr.id", "dXNlcjE=");
        let mut c3 = TraceContext::new_root(C);
        c3.sampling_priority = Some(1);
        c3.tracestate_others = vec!["congo=t61rcWkgMzE".into(), "rojo=00f067aa0ba902b7".into()];
        c3.dd_unknown = vec!["x:y".into()];
        let mut drop = TraceContext::new_root(5);
        drop.sampling_priority = Some(-1);
        let nodecision = TraceContext::new_root(5);
        let mut weird = TraceContext::new_root(5);
        weird.origin = Some("a,b;c~d=e ".into());
        weird.set_tag("_dd.p.k ey", "v");
        let mut many = TraceContext::new_root(5);
        many.tracestate_others = (0..40).map(|i| format!("k{i}=v")).collect();
        let mut long = TraceContext::new_root(5);
        long.tracestate_others = vec![
            format!("a={}", "x".repeat(200)),
            format!("b={}", "y".repeat(100)),
            format!("c={}", "z".repeat(150)),
            format!("d={}", "w".repeat(150)),
            "e=1".into(),
        ];
        let mut bigtags = TraceContext::new_root(5);
        for i in 0..20 {
            bigtags.set_tag(&format!("_dd.p.tag{i}"), "0123456789");
        }
        let rows: Vec<(&str, &TraceContext, &str, &str)> = vec![
            ("§10.1 RUM 64-bit: zero high half, s;o;p", &rum,
                "00-000000000000000056d05416d0047b61-00f067aa0ba902b7-01", "dd=s:1;o:rum;p:00f067aa0ba902b7"),
            ("§10.4 prio 2 + dm, 128-bit with t.tid", &b,
                "00-640cfd8d0000000064fe8b2a57d3eff7-00f067aa0ba902b7-01",
                "dd=s:2;p:00f067aa0ba902b7;t.tid:640cfd8d00000000;t.dm:-4;t.usr.id:dXNlcjE~"),
            ("§10.3 dd first, others kept in order, unknown dd sub-keys forwarded", &c3,
                TP_C, "dd=s:1;p:00f067aa0ba902b7;t.tid:4bf92f3577b34da6;x:y,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ("§5 prio -1: flag 00, s:-1", &drop, "00-00000000000000000000000000000005-00f067aa0ba902b7-00", "dd=s:-1;p:00f067aa0ba902b7"),
            ("§5 no decision: flag 00, s omitted", &nodecision, "00-00000000000000000000000000000005-00f067aa0ba902b7-00", "dd=p:00f067aa0ba902b7"),
            ("§2 value and key substitutions", &weird, "00-00000000000000000000000000000005-00f067aa0ba902b7-00",
                "dd=o:a_b_c_d~e_;p:00f067aa0ba902b7;t.k_ey:v"),
        ];
        for (rule, ctx, tp, ts) in rows {
            let (gtp, gts) = injected(ctx);
            assert_eq!(gtp, tp, "{rule}");
            assert_eq!(gts, ts, "{rule}");
        }
        let (_, ts) = injected(&many);
        assert_eq!(ts.split(',').count(), MAX_MEMBERS, "§2 32 members at most");
        assert!(
            ts.ends_with(",k30=v"),
            "§2 members dropped from the right: {ts}"
        );
        let (_, ts) = injected(&long);
        assert!(ts.len() <= MAX_TRACESTATE_LEN, "§2 512 budget");
        let keys: Vec<&str> = ts
            .split(',')
            .map(|m| m.split('=').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["dd", "b", "e"],
            "§2 long members (>128) dropped first: {ts}"
        );
        let (_, ts) = injected(&bigtags);
        assert!(
            ts.len() <= MAX_DD_MEMBER,
            "§2 dd member at most 256: {}",
            ts.len()
        );
        assert!(ts.contains("p:00f067aa0ba902b7"));
    }

    #[test]
    fn priority_rules() {
        assert_eq!(priority_from(true, Some(2)), 2);
        assert_eq!(priority_from(true, Some(0)), 1);
        assert_eq!(priority_from(false, Some(1)), 0);
        assert_eq!(priority_from(false, Some(-1)), -1);
        assert_eq!(priority_from(false, None), 0);
        assert_eq!(priority_from(true, None), 1);
    }

    /// Level 2 trace flags: 0x01 and 0x02 are read with a mask and kept on output; every other
    /// bit is cleared. (traceparent in, random flag read, traceparent out with the edge span.)
    #[test]
    #[rustfmt::skip]
    fn random_flag_table() {
        let rows: &[(&str, bool, &str, &str)] = &[
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", true,  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", "random, not sampled: 02 stays 02 (Level 1 wrote 00)"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true,  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", "random and sampled: 03 stays 03"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "unset stays unset (Level 2 MUST)"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "nothing set"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", true,  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", "unknown bits 0x04..0x80 cleared, the two known kept"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe", true,  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", "random read with a mask, not by equality"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-05", false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "0x04 is not the random bit"),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0a-future", true, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", "higher version: flags read in the 00 positions, version written as 00"),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-will-be-like", false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "§10.12 unchanged: 09 is written as 01"),
        ];
        for &(tp, random, out, why) in rows {
            let ctx = extract(&headers(&[("traceparent", tp)])).unwrap().unwrap();
            assert_eq!(ctx.random_trace_id, random, "{why}");
            let (got, _) = injected(&ctx);
            assert_eq!(got, out, "{why}");
        }
        let mut fresh = TraceContext::new_trace();
        fresh.sampling_priority = Some(1);
        assert!(injected(&fresh).0.ends_with("-03"), "a trace stitch starts is random");
        fresh.sampling_priority = Some(0);
        assert!(injected(&fresh).0.ends_with("-02"));
    }

    /// `tracestate_invalid`: the same headers under both policies. Columns: tracestate lines,
    /// priority, origin, other members kept, reason the header was discarded (discard_header).
    /// The traceparent is TP_C (flag 01), so a lost `dd` member shows as priority 1 and no origin.
    #[test]
    #[rustfmt::skip]
    fn tracestate_policy_table() {
        use TracestateInvalid::{DiscardHeader, DropMember};
        let key257 = format!("{}=1", "z".repeat(257));
        let key256 = format!("{}=1", "z".repeat(256));
        let with_key257 = format!("dd=s:2;o:rum,{key257},congo=x");
        let with_key256 = format!("dd=s:2;o:rum,{key256}");
        let others31: Vec<String> = (1..=31).map(|i| format!("k{i:02}=v")).collect();
        let full32 = format!("dd=s:2;o:rum,{}", others31.join(","));
        let over33 = format!("{full32},k32=v");
        let full32_with_empties = format!(" ,{full32},,\t,");
        let lines32: Vec<String> = others31.chunks(10).map(|c| c.join(",")).collect();
        let long = format!("dd=s:2,big={}", "x".repeat(4100));
        type Row<'a> = (Vec<&'a str>, TracestateInvalid, i32, Option<&'a str>, &'a str, Option<&'a str>, &'a str);
        let o31 = others31.join(",");
        let rows: Vec<Row<'_>> = vec![
            (vec!["dd=s:2;o:rum,congo=x"],          DropMember,    2, Some("rum"), "congo=x", None, "valid header: kept"),
            (vec!["dd=s:2;o:rum,congo=x"],          DiscardHeader, 2, Some("rum"), "congo=x", None, "valid header: kept"),
            (vec!["dd=s:2;o:rum,foo=,congo=x"],     DropMember,    2, Some("rum"), "congo=x", None, "empty value: that member alone is dropped, dd survives"),
            (vec!["dd=s:2;o:rum,foo=,congo=x"],     DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "empty value: whole header ignored, dd with it"),
            (vec!["FOO=1,dd=s:2;o:rum,congo=x"],    DropMember,    2, Some("rum"), "congo=x", None, "uppercase key dropped alone"),
            (vec!["FOO=1,dd=s:2;o:rum,congo=x"],    DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "uppercase key: header ignored"),
            (vec!["foo=bar=baz,dd=s:2;o:rum"],      DropMember,    2, Some("rum"), "",        None, "= in a value: member dropped"),
            (vec!["foo=bar=baz,dd=s:2;o:rum"],      DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "= in a value: header ignored"),
            (vec!["@foo=1,dd=s:2;o:rum,bar=2"],     DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "key starting with @: header ignored (W3C test suite)"),
            (vec!["foo@=1,dd=s:2;o:rum,bar=2"],     DiscardHeader, 2, Some("rum"), "foo@=1,bar=2", None, "@ inside a key is valid (current key grammar)"),
            (vec![with_key257.as_str()],            DropMember,    2, Some("rum"), "congo=x", None, "key of 257: member dropped"),
            (vec![with_key257.as_str()],            DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "key of 257: header ignored"),
            (vec![with_key256.as_str()],            DiscardHeader, 2, Some("rum"), key256.as_str(), None, "key of 256: valid"),
            (vec!["dd=,congo=x"],                   DropMember,    1, None,        "congo=x", None, "an invalid dd member is dropped like any other"),
            (vec!["dd=,congo=x"],                   DiscardHeader, 1, None,        "",        Some("tracestate_invalid_member"), "an invalid dd member discards the header"),
            (vec![full32.as_str()],                 DiscardHeader, 2, Some("rum"), o31.as_str(), None, "32 members: kept"),
            (vec![full32_with_empties.as_str()],    DiscardHeader, 2, Some("rum"), o31.as_str(), None, "empty members do not count toward 32"),
            (vec![over33.as_str()],                 DropMember,    2, Some("rum"), o31.as_str(), None, "33 members: the first 32 kept, dd among them"),
            (vec![over33.as_str()],                 DiscardHeader, 1, None,        "",        Some("tracestate_too_many_members"), "33 members: header ignored"),
            (vec!["dd=s:2;o:rum,foo=1,foo=2"],      DiscardHeader, 2, Some("rum"), "foo=1", None, "a repeated key is not invalid: first wins (W3C test suite keeps the header)"),
            (vec!["dd=s:2;o:rum,foo=1,foo=2"],      DropMember,    2, Some("rum"), "foo=1", None, "a repeated key: first wins"),
            (vec![""],                              DiscardHeader, 1, None,        "",        None, "an empty header must be accepted"),
            (vec![long.as_str()],                   DiscardHeader, 1, None,        "",        None, "over 4096 bytes: ignored whole under both policies (size rule)"),
            (vec![long.as_str()],                   DropMember,    1, None,        "",        None, "over 4096 bytes: ignored whole under both policies (size rule)"),
        ];
        let mut split = vec![("traceparent", TP_C), ("tracestate", "dd=s:2;o:rum")];
        split.extend(lines32.iter().map(|l| ("tracestate", l.as_str())));
        let split = headers(&split);
        let view = parse(&split, DiscardHeader).unwrap().unwrap();
        assert_eq!(view.tracestate_discarded, None, "32 members over 5 lines (W3C test suite): kept");
        assert_eq!(view.into_context().tracestate_others.join(","), o31);
        for (lines, policy, prio, origin, others, discarded, why) in rows {
            let mut hs = vec![("traceparent", TP_C)];
            hs.extend(lines.iter().map(|l| ("tracestate", *l)));
            let hs = headers(&hs);
            let view = parse(&hs, policy).unwrap().unwrap();
            assert_eq!(view.tracestate_discarded, discarded, "{why} ({})", policy.name());
            let c = view.into_context();
            assert_eq!(c.sampling_priority, Some(prio), "{why} ({})", policy.name());
            assert_eq!(c.origin.as_deref(), origin, "{why} ({})", policy.name());
            assert_eq!(c.tracestate_others.join(","), others, "{why} ({})", policy.name());
        }
    }

    #[test]
    fn tracestate_invalid_names() {
        for t in TracestateInvalid::ALL {
            assert_eq!(TracestateInvalid::parse(t.name()), Some(t));
        }
        assert_eq!(TracestateInvalid::parse("discard"), None);
        assert_eq!(TracestateInvalid::default(), TracestateInvalid::DropMember);
    }
}
