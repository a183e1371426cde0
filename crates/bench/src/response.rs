//! Reading an HTTP/1.1 response from bytes, for [`crate::client`]: the status line, the three
//! headers that frame the message (`Content-Length`, `Transfer-Encoding`, `Connection`), and a
//! chunked body. Pure functions over a buffer, so every case is tested without a socket.
//!
//! What it accepts: `HTTP/1.0` and `HTTP/1.1` status lines; a body framed by `Content-Length`,
//! by `Transfer-Encoding: chunked` (extensions and trailers skipped) or by the end of the
//! connection; no body for `1xx`, `204` and `304`. Anything else is a [`ProtocolError`].

/// Longest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The response broke HTTP/1.1 (or this client's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed response: {0}")]
pub struct ProtocolError(pub &'static str);

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`1xx`, `204`, `304`).
    Empty,
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code (100–999).
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection closes after this response.
    pub close: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// Position of the first `\r\n\r\n` in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Whether the comma-separated `value` holds `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn parse_usize(digits: &[u8], radix: u32) -> Option<usize> {
    let s = std::str::from_utf8(digits.trim_ascii()).ok()?;
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    usize::from_str_radix(s, radix).ok()
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, ProtocolError> {
    let Some(end) = head_end(buf) else {
        return if buf.len() > MAX_HEAD {
            Err(ProtocolError("head too long"))
        } else {
            Ok(None)
        };
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii_end());
    let status_line = lines.next().unwrap_or_default();
    let (version, rest) = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, b' ', rest @ ..] => (*minor, rest),
        _ => return Err(ProtocolError("no HTTP/1.x status line")),
    };
    let status = match rest {
        [a, b, c, tail @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ') =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ProtocolError("bad status code")),
    };
    if status < 100 {
        return Err(ProtocolError("bad status code"));
    }
    let mut close = version == b'0';
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ProtocolError("header line without a colon"));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_usize(value, 10).ok_or(ProtocolError("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ProtocolError("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a final `chunked` frames the body; any other coding runs to the close.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                close = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                close = true;
            } else if has_token(value, b"keep-alive") && version == b'0' {
                close = false;
            }
        }
    }
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(ProtocolError("body too large"));
        }
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        framing,
        close,
        len: end + 4,
    }))
}

/// Decodes the chunked body at the start of `buf` into `out` (cleared first): `Ok(Some(n))`
/// once complete, `n` being the bytes it took (trailers included); `Ok(None)` while incomplete.
pub fn decode_chunked(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, ProtocolError> {
    out.clear();
    let mut at = 0;
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = parse_usize(size_part, 16).ok_or(ProtocolError("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, each ending in CRLF, then an empty line.
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if size > MAX_BODY - out.len() {
            return Err(ProtocolError("body too large"));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(ProtocolError("chunk not followed by CRLF"));
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_keep_alive_json_answer() {
        let raw = "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
                   Content-Length: 17\r\n\r\n{\"order_id\":\"x\"}\n";
        let h = head(raw);
        assert_eq!(h.status, 202);
        assert_eq!(h.framing, Framing::Length(17));
        assert!(!h.close);
        assert_eq!(&raw.as_bytes()[h.len..], b"{\"order_id\":\"x\"}\n");
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"),
            Ok(None)
        );
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_head(&long), Err(ProtocolError("head too long")));
    }

    #[test]
    fn framing_by_status_and_headers() {
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.close);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        // The status line's reason may be absent.
        assert_eq!(
            head("HTTP/1.1 409\r\nContent-Length: 0\r\n\r\n").status,
            409
        );
    }

    #[test]
    fn connection_close_and_http_1_0() {
        assert!(
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n")
                .close
        );
        assert!(head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").close);
        assert!(
            !head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").close
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        for (raw, why) in [
            ("HTTP/2 200 OK\r\n\r\n", "no HTTP/1.x status line"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "no HTTP/1.x status line"),
            ("HTTP/1.1 20x OK\r\n\r\n", "bad status code"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "bad status code"),
            ("HTTP/1.1 099 Low\r\n\r\n", "bad status code"),
            (
                "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                "header line without a colon",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                "body too large",
            ),
        ] {
            assert_eq!(
                parse_head(raw.as_bytes()),
                Err(ProtocolError(why)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn chunked_bodies_decode_once_complete() {
        let raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut out = Vec::new();
        let n = decode_chunked(raw, &mut out).unwrap().unwrap();
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&raw[n..], b"NEXT");
        // Every prefix is incomplete, never an error.
        for cut in 0..n {
            assert_eq!(
                decode_chunked(&raw[..cut], &mut out),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(decode_chunked(b"0\r\n\r\n", &mut out), Ok(Some(5)));
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let mut out = Vec::new();
        assert_eq!(
            decode_chunked(b"zz\r\n", &mut out),
            Err(ProtocolError("bad chunk size"))
        );
        assert_eq!(
            decode_chunked(b"2\r\nabc\r\n", &mut out),
            Err(ProtocolError("chunk not followed by CRLF"))
        );
        assert_eq!(
            decode_chunked(b"FFFFFFFF\r\n", &mut out),
            Err(ProtocolError("body too large"))
        );
        assert_eq!(
            decode_chunked(b"FFFFFFFFFFFFFFFF\r\n", &mut out),
            Err(ProtocolError("body too large"))
        );
    }
}
