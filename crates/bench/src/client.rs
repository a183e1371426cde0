//! The bench's HTTP/1.1 client: one keep-alive connection per [`Conn`], written by hand on a
//! tokio `TcpStream` so that it costs as little as possible next to the server it measures.
//!
//! Why not hyper's client, which the bench used until issue 23: for every request it passes the
//! request through an mpsc channel to a connection task of its own and the answer back through a
//! oneshot, builds a `HeaderMap` for the request and another for the response, and arms a timer for
//! the timeout. Profiled, the user-space half of the client was spread thin over those
//! (docs/benchmarks.md, "What limits them"), and the client cost 11–28 µs of CPU per request (a
//! whole core at 90,000 req/s one day, at 32,000–38,000 req/s another), as much as the bare server
//! it measured, on the cores that server needed. Here a request is bytes the workload writes into a
//! reused buffer (one `write`), the answer is read into another reused buffer and only its status
//! line and the headers that frame it are parsed ([`crate::response`]): nothing is allocated per
//! request, no task runs beside the caller, and the timeout is one timer per connection, re-armed
//! at most once per [`REQUEST_TIMEOUT`]. No pipelining: one request in flight per connection, as in
//! wrk without its pipelining script.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use hyper::{
    header::{HeaderName, HeaderValue},
    Method, StatusCode,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::response::{decode_chunked, parse_head, Framing, ProtocolError, MAX_BODY};

/// An answer is given up after this long without it (at most twice this: the connection's
/// timer is re-armed only once it has less than this left).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Spare room kept in the read buffer before each read.
const READ_ROOM: usize = 4096;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT[/]`.
    #[error("unsupported url {0:?}: expected http://HOST[:PORT]")]
    Url(String),
    /// Connecting failed.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),
    /// The server closed the connection before the whole answer.
    #[error("the server closed the connection before answering")]
    Closed,
    /// The answer is not HTTP/1.1 this client understands.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("timed out")]
    Timeout,
}

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: HeaderValue,
}

impl Endpoint {
    /// Parses and resolves `http://HOST[:PORT][/]`.
    pub async fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad());
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        let host = HeaderValue::from_str(authority).map_err(|_| bad())?;
        Ok(Self { addr, host })
    }

    /// An endpoint for a known socket address.
    pub fn from_addr(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self { addr, host }
    }

    /// Appends a request to `out`: the request line, `Host`, `headers`, and for a non-empty
    /// `body` `Content-Type: application/json` and its length.
    pub fn write_request(
        &self,
        out: &mut Vec<u8>,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) {
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers(out, headers);
        if !body.is_empty() {
            out.extend_from_slice(b"content-type: application/json\r\n");
        }
        if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
}

/// Appends `name: value\r\n` for each header.
pub fn write_headers(out: &mut Vec<u8>, headers: &[(HeaderName, HeaderValue)]) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// An answer: its status and body (borrowed from the connection until its next request).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Status.
    pub status: StatusCode,
    /// Body, without transfer coding.
    pub body: &'a [u8],
}

/// One keep-alive HTTP/1.1 connection; reconnects by itself for the request after one that
/// failed or that the server answered with `Connection: close`.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    input: Vec<u8>,
    body: Vec<u8>,
    request: Vec<u8>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    /// A connection to `endpoint`, not opened yet (the first request opens it).
    pub fn new(endpoint: &Endpoint) -> Self {
        Self {
            addr: endpoint.addr,
            stream: None,
            input: Vec::with_capacity(2 * READ_ROOM),
            body: Vec::with_capacity(READ_ROOM),
            request: Vec::new(),
            timer: None,
        }
    }

    /// Opens a connection (TCP_NODELAY).
    pub async fn open(endpoint: &Endpoint) -> Result<Self, ClientError> {
        let mut conn = Self::new(endpoint);
        conn.connect().await?;
        Ok(conn)
    }

    /// Connects (again) now, unless connected.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| ClientError::Connect(self.addr, e))?;
            stream
                .set_nodelay(true)
                .map_err(|e| ClientError::Connect(self.addr, e))?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends `request` (complete HTTP/1.1 request bytes) and reads the answer, within
    /// [`REQUEST_TIMEOUT`]. After an error the connection is closed; the next request opens
    /// a new one.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer<'_>, ClientError> {
        self.connect().await?;
        let now = Instant::now();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(now + 2 * REQUEST_TIMEOUT)));
        if timer.deadline() < now + REQUEST_TIMEOUT {
            timer.as_mut().reset(now + 2 * REQUEST_TIMEOUT);
        }
        let result = match self.stream.as_mut() {
            Some(stream) => tokio::select! {
                biased;
                r = round_trip(stream, &mut self.input, &mut self.body, request) => r,
                () = timer.as_mut() => Err(ClientError::Timeout),
            },
            None => Err(ClientError::Closed),
        };
        match result {
            Ok((status, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(Answer {
                    status,
                    body: &self.body,
                })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    /// Sends one request built from its parts ([`Endpoint::write_request`]) and returns the
    /// status and a copy of the body.
    pub async fn send(
        &mut self,
        endpoint: &Endpoint,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let mut request = std::mem::take(&mut self.request);
        request.clear();
        endpoint.write_request(&mut request, method, path, headers, body);
        let result = self
            .exchange(&request)
            .await
            .map(|a| (a.status, a.body.to_vec()));
        self.request = request;
        result
    }
}

/// Reads more of the answer into `input`; `Ok(0)` at the end of the stream.
async fn read_more(stream: &mut TcpStream, input: &mut Vec<u8>) -> Result<usize, ClientError> {
    if input.capacity() - input.len() < READ_ROOM {
        input.reserve(4 * READ_ROOM);
    }
    stream.read_buf(input).await.map_err(ClientError::Io)
}

/// Like [`read_more`], failing at the end of the stream.
async fn read_some(stream: &mut TcpStream, input: &mut Vec<u8>) -> Result<(), ClientError> {
    match read_more(stream, input).await? {
        0 => Err(ClientError::Closed),
        _ => Ok(()),
    }
}

/// Writes `request`, reads its answer's head into `input` and its body into `body`; returns
/// the status and whether the connection closes after it.
async fn round_trip(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    body: &mut Vec<u8>,
    request: &[u8],
) -> Result<(StatusCode, bool), ClientError> {
    input.clear();
    body.clear();
    stream.write_all(request).await.map_err(ClientError::Io)?;
    let head = loop {
        match parse_head(input)? {
            // `100 Continue` and other interim answers precede the real one.
            Some(h) if (100..200).contains(&h.status) => {
                if h.status == 101 {
                    return Err(ProtocolError("unexpected 101 Switching Protocols").into());
                }
                input.drain(..h.len);
            }
            Some(h) => break h,
            None => read_some(stream, input).await?,
        }
    };
    let end = match head.framing {
        Framing::Empty => head.len,
        Framing::Length(n) => {
            let end = head.len + n;
            while input.len() < end {
                read_some(stream, input).await?;
            }
            body.extend_from_slice(&input[head.len..end]);
            end
        }
        Framing::Chunked => loop {
            if let Some(n) = decode_chunked(&input[head.len..], body)? {
                break head.len + n;
            }
            read_some(stream, input).await?;
        },
        Framing::UntilClose => {
            while read_more(stream, input).await? > 0 {
                if input.len() - head.len > MAX_BODY {
                    return Err(ProtocolError("body too large").into());
                }
            }
            body.extend_from_slice(&input[head.len..]);
            input.len()
        }
    };
    if input.len() > end {
        return Err(ProtocolError("bytes after the answer (none was asked for)").into());
    }
    let status = StatusCode::from_u16(head.status).map_err(|_| ProtocolError("bad status code"))?;
    Ok((status, head.close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncBufReadExt, BufReader},
        net::TcpListener,
    };

    /// A server answering each request (read up to its blank line; bodies are not expected)
    /// with the next of `answers`, on one connection, then closing it.
    async fn scripted(answers: Vec<&'static [u8]>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::from_addr(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            for answer in answers {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() {
                        break;
                    }
                }
                // Split in two writes so that the client must read more than once.
                let (a, b) = answer.split_at(answer.len() / 2);
                write.write_all(a).await.unwrap();
                write.flush().await.unwrap();
                write.write_all(b).await.unwrap();
            }
        });
        endpoint
    }

    #[test]
    fn requests_are_written_in_full() {
        let e = Endpoint::from_addr("127.0.0.1:8080".parse().unwrap());
        let mut out = Vec::new();
        let ua = [(
            hyper::header::USER_AGENT,
            HeaderValue::from_static("flashsale-bench"),
        )];
        e.write_request(&mut out, &Method::POST, "/x", &ua, b"{}");
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /x HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: flashsale-bench\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
        out.clear();
        e.write_request(&mut out, &Method::GET, "/", &[], b"");
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
        out.clear();
        e.write_request(&mut out, &Method::POST, "/", &[], b"");
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("content-length: 0\r\n\r\n"));
    }

    #[tokio::test]
    async fn answers_are_read_by_their_framing_on_one_connection() {
        let endpoint = scripted(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
            b"HTTP/1.1 409 Conflict\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno",
        ])
        .await;
        let mut conn = Conn::open(&endpoint).await.unwrap();
        let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let a = conn.exchange(get).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body), (202, &b"hello"[..]));
        let a = conn.exchange(get).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body), (200, &b"abcde"[..]));
        let a = conn.exchange(get).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body), (304, &b""[..]));
        let a = conn.exchange(get).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body), (409, &b"no"[..]));
        // `Connection: close`: the next request opens a new connection, which the scripted
        // server no longer accepts.
        assert!(conn.stream.is_none());
    }

    #[tokio::test]
    async fn a_server_closing_midway_or_sending_garbage_is_an_error() {
        let endpoint = scripted(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let mut conn = Conn::open(&endpoint).await.unwrap();
        let e = conn.exchange(b"GET / HTTP/1.1\r\n\r\n").await.unwrap_err();
        assert!(matches!(e, ClientError::Closed), "{e}");
        assert!(conn.stream.is_none());

        let endpoint = scripted(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab"]).await;
        let mut conn = Conn::open(&endpoint).await.unwrap();
        let e = conn.exchange(b"GET / HTTP/1.1\r\n\r\n").await.unwrap_err();
        assert!(e.to_string().contains("bytes after the answer"), "{e}");

        let endpoint = scripted(vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]).await;
        let mut conn = Conn::open(&endpoint).await.unwrap();
        let e = conn.exchange(b"GET / HTTP/1.1\r\n\r\n").await.unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::from_addr(listener.local_addr().unwrap());
        let mut conn = Conn::open(&endpoint).await.unwrap();
        // Accepted but never answered; with the clock paused, time advances once idle.
        let _peer = listener.accept().await.unwrap();
        let started = Instant::now();
        let e = conn.exchange(b"GET / HTTP/1.1\r\n\r\n").await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout), "{e}");
        let waited = started.elapsed();
        assert!(
            waited >= REQUEST_TIMEOUT && waited <= 2 * REQUEST_TIMEOUT,
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn urls_are_checked() {
        for bad in ["https://x", "http://", "ftp://a:1", "http:///path"] {
            assert!(
                matches!(Endpoint::parse(bad).await, Err(ClientError::Url(_))),
                "{bad}"
            );
        }
        let e = Endpoint::parse("http://127.0.0.1:9/").await.unwrap();
        assert_eq!(e.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:9");
    }
}
