//! Header rewriting, both directions: the request head toward the
//! upstream, and which of the upstream's response headers the client (or
//! the cache) gets. The response head itself is written by
//! `http::respond::Head`; bodies pass as they are.

use bytes::{BufMut, BytesMut};

use crate::{
    cache::{CacheStatus, entry::stored_header},
    config::ProviderKind,
    http::{is_hop_by_hop, list_tokens, response::ParsedResponse, write},
    providers::CREDENTIAL_HEADERS,
    service::Request,
    upstream::{Upstream, exchange::Outgoing},
};

/// Bodies up to this size go in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// Names listed in a Connection header are hop-by-hop for this message.
fn connection_listed<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<&'a [u8]> {
    headers.filter(|(n, _)| n.eq_ignore_ascii_case(b"connection")).flat_map(|(_, v)| list_tokens(v)).collect()
}

fn listed(names: &[&[u8]], name: &[u8]) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The request as the upstream gets it: same method, path under the
/// provider's base path, the client's end-to-end headers minus credentials
/// (unless passthrough), plus Host, X-Forwarded-For, the provider's own
/// headers and an exact Content-Length.
///
/// With `identity` the client's Accept-Encoding is not forwarded, so the
/// upstream answers uncompressed and the tap can read the usage (the OpenAI
/// SDKs send `Accept-Encoding: gzip, deflate`; a gzipped JSON body would
/// hide its tokens).
///
/// `key_header` is the header that carried the client's gateway key: it is
/// never forwarded, whatever `passthrough_auth` says.
pub fn upstream_request(
    req: &Request,
    up: &Upstream,
    rest: &[u8],
    body: &bytes::Bytes,
    identity: bool,
    key_header: Option<&str>,
) -> Outgoing {
    let head = &req.head;
    let method = head.method();
    let mut out = BytesMut::with_capacity(512 + up.injected.len() + body.len().min(COALESCE_BODY));
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(up.url.path_prefix.as_bytes());
    if rest.is_empty() || rest[0] == b'?' {
        out.put_u8(b'/');
    }
    out.put_slice(rest);
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(up.url.host_header.as_bytes());
    out.put_slice(b"\r\n");

    let dropped = connection_listed(head.headers());
    let mut forwarded_for: Option<&[u8]> = None;
    let mut has_anthropic_version = false;
    for (name, value) in head.headers() {
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for = Some(value);
            continue;
        }
        let skip = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || (identity && name.eq_ignore_ascii_case(b"accept-encoding"))
            || name.len() > 7 && name[..7].eq_ignore_ascii_case(b"x-aigw-")
            || (!up.passthrough_auth && CREDENTIAL_HEADERS.iter().any(|c| c.eq_ignore_ascii_case(name)))
            || key_header.is_some_and(|k| name.eq_ignore_ascii_case(k.as_bytes()))
            || up.injected_names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || listed(&dropped, name);
        if skip {
            continue;
        }
        has_anthropic_version |= name.eq_ignore_ascii_case(b"anthropic-version");
        write::header(&mut out, name, value);
    }
    out.put_slice(b"X-Forwarded-For: ");
    if let Some(prev) = forwarded_for {
        out.put_slice(prev);
        out.put_slice(b", ");
    }
    write::put_ip(&mut out, req.peer.ip());
    out.put_slice(b"\r\n");
    out.put_slice(&up.injected);
    if let (ProviderKind::Anthropic, false, Some(v)) = (up.kind, has_anthropic_version, &up.default_anthropic_version) {
        write::header(&mut out, b"anthropic-version", v);
    }
    if !body.is_empty() || matches!(method, b"POST" | b"PUT" | b"PATCH") {
        write::header_u64(&mut out, b"Content-Length", body.len() as u64);
    }
    write::end_head(&mut out);
    let body = if body.len() <= COALESCE_BODY {
        out.put_slice(body);
        None
    } else {
        Some(body.clone())
    };
    Outgoing {
        head: out,
        body,
        idempotent: matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"),
        head_request: method == b"HEAD",
    }
}

/// The `x-aigw-cache-status` line of an answer (empty where the cache
/// does not apply).
pub fn cache_line(status: Option<CacheStatus>) -> &'static [u8] {
    status.map_or(b"", CacheStatus::line)
}

/// The upstream's end-to-end response headers, as the client gets them:
/// hop-by-hop ones and its framing out (the gateway frames the body
/// itself, unless it has none), its `x-ratelimit-*` out when the gateway
/// sends its own lines.
pub fn upstream_lines(out: &mut BytesMut, raw: &[u8], resp: &ParsedResponse, has_body: bool, drop_ratelimit: bool) {
    let all = || resp.headers.iter().map(|h| (&raw[h.name.clone()], &raw[h.value.clone()]));
    let dropped = connection_listed(all());
    for (name, value) in all() {
        let skip = is_hop_by_hop(name)
            || (has_body && name.eq_ignore_ascii_case(b"content-length"))
            || name.eq_ignore_ascii_case(b"x-aigw-request-id")
            || (drop_ratelimit && is_ratelimit_header(name))
            || listed(&dropped, name);
        if !skip {
            write::header(out, name, value);
        }
    }
}

/// The upstream's end-to-end headers a cache entry keeps, as header lines.
pub fn stored_headers(raw: &[u8], resp: &ParsedResponse) -> bytes::Bytes {
    let all = || resp.headers.iter().map(|h| (&raw[h.name.clone()], &raw[h.value.clone()]));
    let dropped = connection_listed(all());
    // No more than the raw head: one allocation, no regrowth.
    let mut out = BytesMut::with_capacity(raw.len());
    for (name, value) in all() {
        if !is_hop_by_hop(name) && !listed(&dropped, name) && stored_header(name) {
            write::header(&mut out, name, value);
        }
    }
    out.freeze()
}

/// The upstream's own `x-ratelimit-*` headers give way to the gateway's
/// when a gateway limit applies: two sets under one name would confuse
/// every SDK.
fn is_ratelimit_header(name: &[u8]) -> bool {
    name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-ratelimit-")
}

/// Copies stored header lines, leaving out `x-ratelimit-*` ones when the
/// gateway adds its own.
pub fn copy_stored(out: &mut BytesMut, lines: &[u8], drop_ratelimit: bool) {
    if !drop_ratelimit {
        out.extend_from_slice(lines);
        return;
    }
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if !is_ratelimit_header(line) {
            out.extend_from_slice(line);
        }
    }
}
