//! An instance's side of the registry: register, heartbeat, deregister.
//!
//! [`Registrar::start`] runs one loop per registry replica: register, then heartbeat every
//! `heartbeat` (or a third of the TTL the replica announced, if shorter); a heartbeat the
//! replica does not know (it evicted us, or restarted) registers again; an unreachable replica
//! is retried on the next beat. [`Registrar::deregister`] stops the loops and removes the
//! instance from every replica, so clients stop sending before the server drains.

use std::time::Duration;

use flashsale_proto::registry::{
    registry_client::RegistryClient, DeregisterRequest, HeartbeatRequest, Instance, RegisterRequest,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::AddressError;

/// How long one registry call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Keeps one instance registered with every registry replica.
#[derive(Debug)]
pub struct Registrar {
    instance: Instance,
    clients: Vec<RegistryClient<Channel>>,
    loops: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

impl Registrar {
    /// Starts registering `instance` with each replica (`host:port`), heartbeating at most
    /// every `heartbeat`.
    pub fn start(
        replicas: &[String],
        instance: Instance,
        heartbeat: Duration,
    ) -> Result<Self, AddressError> {
        let clients = replicas
            .iter()
            .map(|r| crate::lazy_channel(r).map(RegistryClient::new))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = CancellationToken::new();
        let loops = clients
            .iter()
            .zip(replicas)
            .map(|(client, replica)| {
                tokio::spawn(keep_registered(
                    client.clone(),
                    replica.clone(),
                    instance.clone(),
                    heartbeat.max(Duration::from_millis(10)),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(Self {
            instance,
            clients,
            loops,
            stop,
        })
    }

    /// Stops heartbeating and removes the instance from every replica (each within a second;
    /// a replica that cannot be reached evicts it after the TTL).
    pub async fn deregister(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.loops) {
            let _ = task.await;
        }
        let calls = std::mem::take(&mut self.clients)
            .into_iter()
            .map(|mut client| {
                let request = timed(DeregisterRequest {
                    service: self.instance.service.clone(),
                    address: self.instance.address.clone(),
                });
                async move { client.deregister(request).await }
            });
        for result in futures::future::join_all(calls).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "deregistering failed; the registry evicts after the TTL");
            }
        }
        tracing::info!(service = %self.instance.service, address = %self.instance.address, "deregistered");
    }
}

impl Drop for Registrar {
    /// Dropping stops the heartbeats without deregistering: the registry evicts the instance
    /// after its TTL, as it would after a crash.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn keep_registered(
    mut client: RegistryClient<Channel>,
    replica: String,
    instance: Instance,
    heartbeat: Duration,
    stop: CancellationToken,
) {
    let mut registered = false;
    let mut every = heartbeat;
    loop {
        if registered {
            let beat = client
                .heartbeat(timed(HeartbeatRequest {
                    service: instance.service.clone(),
                    address: instance.address.clone(),
                }))
                .await;
            match beat {
                Ok(reply) if reply.get_ref().known => {}
                Ok(_) => {
                    tracing::info!(%replica, "registry forgot this instance; registering again");
                    registered = false;
                }
                Err(e) => {
                    tracing::debug!(%replica, error = %e, "heartbeat failed");
                    registered = false;
                }
            }
        }
        if !registered {
            match client
                .register(timed(RegisterRequest {
                    instance: Some(instance.clone()),
                }))
                .await
            {
                Ok(reply) => {
                    registered = true;
                    let ttl = Duration::from_millis(reply.get_ref().ttl_ms);
                    every = heartbeat.min(ttl / 3).max(Duration::from_millis(10));
                }
                Err(e) => tracing::warn!(%replica, error = %e, "cannot register; retrying"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
