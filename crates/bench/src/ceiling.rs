//! The ceiling: a bare axum server answering `GET /` with a fixed 50-byte JSON body, run as a
//! process of its own so that its CPU per request is read from `/proc` apart from the
//! client's. What the machine can do for HTTP at all with this client, and what a bare answer
//! costs a server, are the yardsticks every scenario is reported against.
//!
//! The bench starts it by running its own executable as `flashsale bench ceiling-server` (a
//! hidden scenario, [`serve`]), pinned like the spawned server with `--server-cpus`. So it runs
//! on the `flashsale` binary's runtime and allocator, the ones `flashsale dev` runs on (one
//! tokio worker per CPU it may use, mimalloc). It binds `127.0.0.1:0`, prints
//! [`READY_PREFIX`] and its address on stdout, and serves until its stdin closes: the bench
//! holds the write end, so the server ends with the bench even if the bench is killed.
//! Tests start the same server from this crate's `flashsale-bench-ceiling` binary through the
//! same [`CeilingProcess`].

use std::{
    future::IntoFuture,
    io::{Read as _, Write as _},
    net::SocketAddr,
    process::Stdio,
    time::Duration,
};

use axum::{http::header::CONTENT_TYPE, routing::get, Router};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::oneshot,
};

use crate::{cpus::CpuSet, error::BenchError};

/// The hidden scenario that runs the server (`flashsale bench ceiling-server`).
pub const SERVER_SCENARIO: &str = "ceiling-server";
/// What the server prints, followed by its address, once it accepts connections.
pub const READY_PREFIX: &str = "flashsale bench ceiling-server: listening on ";
/// The answer to `GET /`: 50 bytes of JSON.
pub const BODY: &str = r#"{"ok":true,"service":"ceiling","note":"bare axum"}"#;
/// Longest wait for the server's address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The bare server's routes: `GET /` and nothing else.
pub fn app() -> Router {
    Router::new().route(
        "/",
        get(|| async { ([(CONTENT_TYPE, "application/json")], BODY) }),
    )
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Ceiling(format!("{what}: {e}"))
}

/// Runs the server on the current runtime: binds `127.0.0.1:0`, prints its address, serves
/// until stdin closes.
pub async fn serve() -> Result<(), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(failed("binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(failed("reading its address"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_PREFIX}{addr}")
        .and_then(|()| out.flush())
        .map_err(failed("printing its address"))?;
    drop(out);
    // A thread of its own, not tokio's blocking pool: a read of stdin cannot be cancelled, and
    // the runtime would wait for it on the way out.
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("ceiling-stdin".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        })
        .map_err(failed("watching stdin"))?;
    tokio::select! {
        served = axum::serve(listener, app()).into_future() => served.map_err(failed("serving")),
        _ = closed_rx => Ok(()),
    }
}

/// A running ceiling server process; killed when dropped.
pub struct CeilingProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
}

impl CeilingProcess {
    /// The command that runs this executable's hidden ceiling server, pinned to `cpus` when
    /// given.
    pub fn command(cpus: Option<&CpuSet>) -> Result<Command, BenchError> {
        let exe = std::env::current_exe().map_err(failed("finding this executable"))?;
        let mut command = crate::cpus::command(&exe, cpus);
        command.args(["bench", SERVER_SCENARIO]);
        Ok(command)
    }

    /// Starts `command`, which must run [`serve`], and waits for the address it prints.
    pub async fn start(mut command: Command) -> Result<Self, BenchError> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(failed("starting it"))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Ceiling("no stdout".to_owned()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                    return addr.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::Ceiling("it exited or never printed its address".into()))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Ceiling("it exited".to_owned()))?;
        Ok(Self {
            child,
            stdin,
            addr,
            pid,
        })
    }

    /// Stops it: closes its stdin, kills it and waits for it.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_fifty_bytes_of_json() {
        assert_eq!(BODY.len(), 50);
        let v: serde_json::Value = serde_json::from_str(BODY).unwrap();
        assert_eq!(v["ok"], true);
    }

    #[tokio::test]
    async fn a_command_that_prints_no_address_fails_to_start() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo not the line"]);
        let e = CeilingProcess::start(command).await.err().unwrap();
        assert!(e.to_string().contains("never printed its address"), "{e}");
    }
}
