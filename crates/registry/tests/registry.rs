//! The registry, discovery and balancing over real gRPC servers on loopback.
//!
//! Instances are small tonic servers serving `grpc.health.v1`, each counting the calls it
//! receives; the registry replicas are real `RegistryService` servers. Every test binds port
//! 0 and uses its own registries, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use flashsale_proto::registry::{
    registry_client::RegistryClient, HeartbeatRequest, Instance, RegisterRequest, WatchRequest,
};
use flashsale_registry::{
    BalanceConfig, Balanced, Endpoint, Policy, Registrar, RegistryService, Source,
};
use flashsale_testkit::Eventually;
use tokio::{net::TcpListener, sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{server::TcpIncoming, Server},
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// A registry replica on an ephemeral port; cancel the token to take it down.
async fn registry(ttl: Duration) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let service = RegistryService::new(ttl, stop.clone());
    service.spawn_evictor();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
            .await
    });
    (addr, stop)
}

/// A service instance: a gRPC server counting the calls it gets.
struct TestInstance {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: CancellationToken,
    _health: tonic_health::server::HealthReporter,
}

impl TestInstance {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let counted = InterceptedService::new(health, move |request| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(request)
        });
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            Server::builder()
                .add_service(counted)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener),
                    shutdown.cancelled_owned(),
                )
                .await
        });
        Self {
            addr,
            calls,
            stop,
            _health: reporter,
        }
    }

    fn register(&self, registries: &[String], weight: u32) -> Registrar {
        Registrar::start(
            registries,
            Instance {
                service: "inventory".into(),
                address: self.addr.to_string(),
                weight,
                metadata: [("zone".to_owned(), "test".to_owned())]
                    .into_iter()
                    .collect(),
            },
            Duration::from_millis(100),
        )
        .unwrap()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Waits (up to 10 s) until the resolved set satisfies `ok`; returns when it did.
async fn wait_for_set(
    set: &mut watch::Receiver<Vec<Endpoint>>,
    what: &str,
    ok: impl Fn(&[Endpoint]) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ok(&set.borrow_and_update()) {
            return Instant::now();
        }
        match tokio::time::timeout_at(deadline, set.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!(
                "the resolved set never became: {what}; it is {:?}",
                *set.borrow()
            ),
        }
    }
}

fn has(set: &[Endpoint], addr: SocketAddr) -> bool {
    set.iter().any(|e| e.address == addr.to_string())
}

async fn check(client: &mut HealthClient<Balanced>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_secs(2));
    client.check(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_balancing_splits_ten_thousand_calls_by_weight() {
    let (registry, _registry_stop) = registry(Duration::from_secs(3)).await;
    let registries = vec![registry];
    let instances = [
        TestInstance::start().await,
        TestInstance::start().await,
        TestInstance::start().await,
    ];
    let weights = [1u32, 1, 2];
    let _registrars: Vec<Registrar> = instances
        .iter()
        .zip(weights)
        .map(|(i, w)| i.register(&registries, w))
        .collect();
    let shutdown = CancellationToken::new();
    let mut set = Source::Registry(registries.clone())
        .resolve("inventory", &shutdown)
        .unwrap();
    wait_for_set(&mut set, "three instances", |s| s.len() == 3).await;
    assert_eq!(
        set.borrow().iter().map(|e| e.weight).sum::<u32>(),
        4,
        "the registry carries the weights"
    );
    let balanced = Balanced::over(
        set,
        &BalanceConfig {
            policy: Policy::Weighted,
            ..BalanceConfig::default()
        },
    );

    const CALLS: usize = 10_000;
    const TASKS: usize = 8;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut client = HealthClient::new(balanced.clone());
            tokio::spawn(async move {
                for _ in 0..CALLS / TASKS {
                    check(&mut client).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counts: Vec<usize> = instances.iter().map(TestInstance::calls).collect();
    assert_eq!(counts.iter().sum::<usize>(), CALLS, "{counts:?}");
    eprintln!("weights 1:1:2 split {counts:?} over {CALLS} calls");
    // Each instance's share of the calls is within 10 percentage points of its weight's share
    // (25 %, 25 %, 50 %): p2c steers around an instance that a loaded machine slows down for
    // a while, so the split wanders a few points. Ignoring the weights (a third each) puts the
    // weight-2 instance 17 points off.
    for (count, weight) in counts.iter().zip(weights) {
        let share = *count as f64 / CALLS as f64;
        let wanted = f64::from(weight) / 4.0;
        assert!(
            (share - wanted).abs() <= 0.10,
            "weights 1:1:2 split {counts:?}: {:.1}% where {:.0}% is wanted",
            share * 100.0,
            wanted * 100.0
        );
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_evicted_within_the_ttl_and_nothing_fails_after_eviction() {
    // 3 s: long enough that a loaded machine's stalls do not decide, and clear of the victim's
    // ejection cool-downs (it is ejected for 2 s right after the kill, then for 4 s more), so
    // no call that starts after the eviction can be offered the dead instance.
    let ttl = Duration::from_secs(3);
    let (registry, _registry_stop) = registry(ttl).await;
    let registries = vec![registry];
    let instances = [
        TestInstance::start().await,
        TestInstance::start().await,
        TestInstance::start().await,
    ];
    let mut registrars: Vec<Option<Registrar>> = instances
        .iter()
        .map(|i| Some(i.register(&registries, 1)))
        .collect();
    let shutdown = CancellationToken::new();
    let mut set = Source::Registry(registries)
        .resolve("inventory", &shutdown)
        .unwrap();
    wait_for_set(&mut set, "three instances", |s| s.len() == 3).await;
    let balanced = Balanced::over(set.clone(), &BalanceConfig::default());

    // The rush: every call records when it started and whether it succeeded.
    let running = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut client = HealthClient::new(balanced.clone());
            let (running, done) = (Arc::clone(&running), Arc::clone(&done));
            tokio::spawn(async move {
                let mut log = Vec::new();
                while running.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = check(&mut client).await.is_ok();
                    log.push((started, ok));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                log
            })
        })
        .collect();
    let wait_calls = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            Eventually::new(
                format!("{n} calls (the rush stalled)"),
                Duration::from_secs(20),
            )
            .every(Duration::from_millis(5))
            .until(|| async { done.load(Ordering::Relaxed) >= n })
            .await;
        }
    };
    wait_calls(300).await;

    // Kill instance 2: it stops answering and stops heartbeating, without deregistering.
    let victim = &instances[2];
    let calls_before_kill = victim.calls();
    assert!(calls_before_kill > 0, "the victim was in rotation");
    registrars[2] = None;
    victim.stop.cancel();
    let killed_at = Instant::now();
    let evicted_at = wait_for_set(&mut set, "without the killed instance", |s| {
        !has(s, victim.addr) && s.len() == 2
    })
    .await;
    let took = evicted_at - killed_at;
    // Lease ≤ TTL after the last heartbeat, plus one evictor tick (TTL/4), plus slack for a
    // loaded machine.
    assert!(
        took <= ttl + ttl / 4 + Duration::from_secs(2),
        "evicted {took:?} after the kill (TTL {ttl:?})"
    );
    // Count from the end of the 50 ms the balancer may take to hear of the eviction: calls are
    // fast enough that a thousand may start inside that window. (A genuine wait: that allowance
    // is part of what is tested.)
    tokio::time::sleep_until(evicted_at + Duration::from_millis(50)).await;
    let after = done.load(Ordering::Relaxed);
    wait_calls(after + 1_000).await;
    running.store(false, Ordering::Relaxed);

    let mut after_eviction = 0;
    for task in tasks {
        for (started, ok) in task.await.unwrap() {
            // Calls that started once the balancer had the news must all succeed.
            if started > evicted_at + Duration::from_millis(50) {
                after_eviction += 1;
                assert!(
                    ok,
                    "a call {:?} after eviction failed",
                    started - evicted_at
                );
            }
        }
    }
    assert!(
        after_eviction >= 500,
        "only {after_eviction} calls after eviction"
    );
    assert!(instances[0].calls() > 0 && instances[1].calls() > 0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_working_when_a_registry_replica_goes_away() {
    // Long enough that no stall of a loaded machine lets a heartbeating instance's lease lapse.
    let ttl = Duration::from_secs(2);
    let (first, first_stop) = registry(ttl).await;
    let (second, _second_stop) = registry(ttl).await;
    let registries = vec![first, second];
    let a = TestInstance::start().await;
    let b = TestInstance::start().await;
    let _ra = a.register(&registries, 1);
    let rb = b.register(&registries, 1);
    let shutdown = CancellationToken::new();
    let mut set = Source::Registry(registries.clone())
        .resolve("inventory", &shutdown)
        .unwrap();
    wait_for_set(&mut set, "a and b", |s| s.len() == 2).await;
    let mut client = HealthClient::new(Balanced::over(set.clone(), &BalanceConfig::default()));
    for _ in 0..100 {
        check(&mut client).await.unwrap();
    }

    // One replica goes away: the merged set stays, and every call still succeeds.
    first_stop.cancel();
    for _ in 0..200 {
        check(&mut client).await.unwrap();
    }
    assert_eq!(set.borrow().len(), 2);

    // The survivor alone still tells about new instances and evictions.
    let c = TestInstance::start().await;
    let _rc = c.register(&registries, 1);
    wait_for_set(&mut set, "a, b and c", |s| has(s, c.addr) && s.len() == 3).await;
    let before = c.calls();
    for _ in 0..300 {
        check(&mut client).await.unwrap();
    }
    assert!(c.calls() > before, "the new instance gets traffic");
    drop(rb);
    b.stop.cancel();
    wait_for_set(&mut set, "without b", |s| !has(s, b.addr) && s.len() == 2).await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_without_heartbeats_last_with_them_and_deregistering_is_immediate() {
    // Long enough that a loaded machine's stalls do not decide: a heartbeating lease lapses
    // only if its registrar stalls for nearly 2 s.
    let ttl = Duration::from_secs(2);
    let (registry, _stop) = registry(ttl).await;
    let mut raw = RegistryClient::new(flashsale_registry::lazy_channel(&registry).unwrap());
    let mut stream = raw
        .watch(WatchRequest {
            service: "order".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .instances
        .is_empty());

    // Bad input is refused and changes nothing.
    let bad = raw
        .register(RegisterRequest {
            instance: Some(Instance {
                service: String::new(),
                address: "127.0.0.1:1".into(),
                weight: 1,
                metadata: BTreeMap::new().into_iter().collect(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // Registered once, never heartbeated: pushed in, then evicted within 1.25 TTL (+ slack).
    let once = Instance {
        service: "order".into(),
        address: "127.0.0.1:1".into(),
        weight: 3,
        metadata: [("zone".to_owned(), "a".to_owned())].into_iter().collect(),
    };
    let registered_at = Instant::now();
    let reply = raw
        .register(RegisterRequest {
            instance: Some(once.clone()),
        })
        .await
        .unwrap();
    assert_eq!(u128::from(reply.get_ref().ttl_ms), ttl.as_millis());
    let pushed = stream.message().await.unwrap().unwrap();
    assert_eq!(pushed.instances, vec![once.clone()]);
    let evicted = stream.message().await.unwrap().unwrap();
    assert!(evicted.instances.is_empty());
    let took = registered_at.elapsed();
    assert!(
        took >= ttl && took <= ttl + ttl / 4 + Duration::from_secs(2),
        "evicted after {took:?}"
    );
    let beat = raw
        .heartbeat(HeartbeatRequest {
            service: "order".into(),
            address: "127.0.0.1:1".into(),
        })
        .await
        .unwrap();
    assert!(
        !beat.get_ref().known,
        "an evicted instance must register again"
    );

    // A registrar heartbeats: it outlives several TTLs.
    let instance = TestInstance::start().await;
    let registrar = Registrar::start(
        std::slice::from_ref(&registry),
        Instance {
            service: "order".into(),
            address: instance.addr.to_string(),
            weight: 1,
            metadata: BTreeMap::new().into_iter().collect(),
        },
        Duration::from_millis(50),
    )
    .unwrap();
    let joined = stream.message().await.unwrap().unwrap();
    assert_eq!(joined.instances.len(), 1);
    // Nothing is pushed for two TTLs: the lease is kept alive.
    let quiet = tokio::time::timeout(ttl * 2, stream.message()).await;
    assert!(
        quiet.is_err(),
        "the set changed while heartbeating: {quiet:?}"
    );

    // Deregistering removes it at once (well before the lease would run out).
    let leaving = Instant::now();
    registrar.deregister().await;
    let left = stream.message().await.unwrap().unwrap();
    assert!(left.instances.is_empty());
    assert!(leaving.elapsed() < ttl, "{:?}", leaving.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_list_balances_over_every_address() {
    let instances = [TestInstance::start().await, TestInstance::start().await];
    let shutdown = CancellationToken::new();
    let set = Source::Static(instances.iter().map(|i| i.addr.to_string()).collect())
        .resolve("inventory", &shutdown)
        .unwrap();
    let mut client = HealthClient::new(Balanced::over(set, &BalanceConfig::default()));
    for _ in 0..400 {
        check(&mut client).await.unwrap();
    }
    for i in &instances {
        assert!(i.calls() > 100, "{} of 400 calls", i.calls());
    }
    shutdown.cancel();
}
