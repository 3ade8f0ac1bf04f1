//! RESP2, the Redis wire protocol: command encoding and a sans-IO reply
//! parser.
//!
//! Hand-written: the `redis` crate drives its connections on tokio or
//! async-std, and a blocking client would stall a worker's whole core.
//! aigw needs five commands over one protocol with five reply types.

use bytes::BufMut;

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `$-1`: no such key.
    Nil,
    Bulk(bytes::Bytes),
    Array(Vec<Reply>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Deepest nesting accepted (SCAN replies are two levels).
const MAX_DEPTH: usize = 4;
/// Longest bulk or array accepted; far above any entry we store.
const MAX_LEN: i64 = 512 << 20;

/// Appends a command as an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.put_u8(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.put_u8(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `buf`: Ok(None) when more bytes are
/// needed, else the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr::memchr(b'\n', rest)?;
    (end > 0 && rest[end - 1] == b'\r').then(|| (&rest[..end - 1], at + end + 1)).or(Some((&[][..], usize::MAX)))
}

fn int(s: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError("bad integer"))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    let Some((text, next)) = line(buf, at + 1) else { return Ok(None) };
    if next == usize::MAX {
        return Err(ProtocolError("line not ended by CRLF"));
    }
    let text_str = || String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(text_str()), next))),
        b'-' => Ok(Some((Reply::Error(text_str()), next))),
        b':' => Ok(Some((Reply::Int(int(text)?), next))),
        b'$' => {
            let n = int(text)?;
            if n == -1 {
                return Ok(Some((Reply::Nil, next)));
            }
            if !(0..=MAX_LEN).contains(&n) {
                return Err(ProtocolError("bad bulk length"));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(ProtocolError("bulk not ended by CRLF"));
            }
            Ok(Some((Reply::Bulk(bytes::Bytes::copy_from_slice(&buf[next..next + n])), next + n + 2)))
        }
        b'*' => {
            let n = int(text)?;
            if n == -1 {
                return Ok(Some((Reply::Nil, next)));
            }
            if !(0..=MAX_LEN).contains(&n) || depth >= MAX_DEPTH {
                return Err(ProtocolError("bad array"));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((r, after)) => {
                        items.push(r);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(items), at)))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE: &[u8] =
        b"+OK\r\n-ERR wrong\r\n:42\r\n$-1\r\n$5\r\nhe\r\nl\r\n*2\r\n$1\r\n0\r\n*2\r\n$3\r\na:b\r\n$0\r\n\r\n";

    fn all(buf: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((r, n)) = parse(&buf[at..]).unwrap() {
            out.push(r);
            at += n;
        }
        assert_eq!(at, buf.len());
        out
    }

    #[test]
    fn parses_every_reply_type() {
        let r = all(WIRE);
        assert_eq!(r[0], Reply::Simple("OK".into()));
        assert_eq!(r[1], Reply::Error("ERR wrong".into()));
        assert_eq!(r[2], Reply::Int(42));
        assert_eq!(r[3], Reply::Nil);
        assert_eq!(r[4], Reply::Bulk(bytes::Bytes::from_static(b"he\r\nl")));
        assert_eq!(
            r[5],
            Reply::Array(vec![
                Reply::Bulk(bytes::Bytes::from_static(b"0")),
                Reply::Array(vec![Reply::Bulk(bytes::Bytes::from_static(b"a:b")), Reply::Bulk(bytes::Bytes::new())]),
            ])
        );
    }

    #[test]
    fn split_at_every_offset_needs_more_then_agrees() {
        let whole = all(WIRE);
        for cut in 0..WIRE.len() {
            // A prefix never errors; it parses whole replies and then asks
            // for more.
            let mut at = 0;
            let mut got = Vec::new();
            while let Some((r, n)) = parse(&WIRE[at..cut]).unwrap() {
                got.push(r);
                at += n;
            }
            assert_eq!(got[..], whole[..got.len()], "cut {cut}");
            assert_eq!(all(&WIRE[at..]), whole[got.len()..], "cut {cut}");
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"+OK\n").is_err());
        assert!(parse(b"$-5\r\n").is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
