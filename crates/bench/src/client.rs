//! A minimal HTTP/1.1 client: one keep-alive connection per task, no pooling, no extra layers,
//! so that the client costs as little as possible next to the server it measures.

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    client::conn::http1::{self, SendRequest},
    header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST},
    Method, Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for one response before the connection is given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT[/]`.
    #[error("unsupported url {0:?}: expected http://HOST[:PORT]")]
    Url(String),
    /// Connecting failed.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built (e.g. a header value with illegal bytes).
    #[error("building request: {0}")]
    Build(#[from] hyper::http::Error),
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

    /// Starts a request to `path` with the `Host` header set.
    pub fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
    }

    /// A JSON request with the given extra headers.
    pub fn json(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut b = self.request(method, path);
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in headers {
            b = b.header(k, v);
        }
        Ok(b.body(Full::new(body))?)
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY) and spawns its driver task.
    pub async fn open(endpoint: &Endpoint) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(endpoint.addr)
            .await
            .map_err(|e| ClientError::Connect(endpoint.addr, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::Connect(endpoint.addr, e))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the peer closes it; either way
            // the next send reports it.
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole response, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}
