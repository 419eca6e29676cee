//! The embedding API: start a node, offer services, resolve names, open streams.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use vx6_core::{Cause, Failure};

use vx6_core::destination::Destination;
use vx6_core::node::{Dial, Node as CoreNode, NodeConfig as CoreConfig, NodeStatus};
pub use vx6_core::node::{NodeLimits, RelayConfig, Route};
use vx6_core::pins::Pins;
use vx6_core::record::{NodeAddress, Transport};
use vx6_core::resolve::Target;
use vx6_core::service::{Access, Backend, Service, ServiceTable};
use vx6_core::{Identity, NodeId, ServiceName, Username};

use crate::driver::Driver;
use crate::error::Error;
use crate::events::Events;
use crate::runtime::Runtime;
use crate::shared::{AcceptQueue, Shared};
use crate::stream::VxStream;

/// How a node starts.
#[derive(Debug)]
pub struct NodeConfig {
    /// The node's key.
    pub identity: Identity,
    /// The username it claims (`alice` of `alice.echo`).
    pub username: Username,
    /// Where it accepts sessions (UDP for QUIC and the DHT; plus TCP in TCP mode). Use a
    /// concrete address: a node on an unspecified one cannot publish where it is.
    pub listen: SocketAddr,
    /// Sessions it dials and accepts.
    pub transport: Transport,
    /// Peers to enter the network through.
    pub bootstrap: Vec<SocketAddr>,
    /// Keys pinned on first use (from an earlier run); new pins arrive as events.
    pub pins: Pins,
    /// Let TCP-backed services point beyond loopback.
    pub allow_non_loopback_targets: bool,
    /// Bounds against hostile or numerous peers.
    pub limits: NodeLimits,
    /// Whether (and within which limits) the node relays circuits for others.
    pub relay: RelayConfig,
    /// How [`Node::connect`] reaches owners: direct, through relays, or `auto` (direct if a
    /// direct session comes up in time, else relays; the default).
    pub route: Route,
}

impl NodeConfig {
    /// QUIC, no bootstrap peers, no pins, loopback targets only.
    pub fn new(identity: Identity, username: Username, listen: SocketAddr) -> Self {
        Self {
            identity,
            username,
            listen,
            transport: Transport::Quic,
            bootstrap: Vec::new(),
            pins: Pins::default(),
            allow_non_loopback_targets: false,
            limits: NodeLimits::default(),
            relay: RelayConfig::default(),
            route: Route::default(),
        }
    }
}

/// What a node knows about being reached from outside ([`Node::reachability`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// The addresses enough peers agree they see the node at (at most one per family).
    pub observed: Vec<SocketAddr>,
    /// Peers whose answers count.
    pub answers: usize,
    /// The translation the observations imply, per family (`true`: IPv4).
    pub mappings: Vec<(bool, vx6_core::reach::Mapping)>,
    /// Whether peers' dial-backs arrive, per family (`true`: IPv4).
    pub dialable: Vec<(bool, vx6_core::reach::Verdict)>,
    /// The relays the node's record names as its way in (when it cannot be dialed).
    pub home_relays: Vec<NodeId>,
}

/// Where a name led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The owner.
    pub node: NodeId,
    /// Where it accepts sessions.
    pub addresses: Vec<NodeAddress>,
}

/// A running node. Cheap to clone; every clone drives the same node. It keeps running until
/// [`Node::shutdown`], even when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Node {
    shared: Arc<Shared>,
    id: NodeId,
    local_addr: SocketAddr,
    transport: Transport,
    route: Route,
}

impl Node {
    /// Binds the node's sockets and starts its driver task on `runtime`.
    pub fn start(runtime: Arc<dyn Runtime>, config: NodeConfig) -> Result<Node, Error> {
        let now = runtime.now();
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let id = config.identity.node_id();
        let mut core = CoreConfig::new(
            config.identity,
            Arc::new(rustls::crypto::ring::default_provider()),
            seed,
        );
        core.services = ServiceTable::new(config.allow_non_loopback_targets);
        core.pins = config.pins;
        core.limits = config.limits;
        core.relay = config.relay;
        let mut node = CoreNode::new(now, core)?;
        node.set_unix_time(runtime.unix_time());
        let udp = runtime
            .bind_udp(config.listen)
            .map_err(|e| Error::io(format!("binding UDP {}", config.listen), e))?;
        let local_addr = udp
            .local_addr()
            .map_err(|e| Error::io("reading the UDP address", e))?;
        let listener = match config.transport {
            Transport::Quic => None,
            Transport::Tcp => Some(
                runtime
                    .tcp_listen(local_addr)
                    .map_err(|e| Error::io(format!("binding TCP {local_addr}"), e))?,
            ),
        };
        node.bootstrap(&config.bootstrap);
        let addresses = if local_addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on an unspecified address: no node record is published, so others \
                 cannot reach this node by name"
            );
            Vec::new()
        } else {
            // Its own address, so observations and dial-backs can tell what stands in front.
            node.set_local_addresses(vec![local_addr]);
            // The UDP socket carries QUIC in both modes: relay paths reach owners on it.
            let mut a = vec![NodeAddress {
                transport: config.transport,
                addr: local_addr,
            }];
            if config.transport == Transport::Tcp {
                a.push(NodeAddress {
                    transport: Transport::Quic,
                    addr: local_addr,
                });
            }
            a
        };
        node.publish_self(now, config.username, addresses);
        let shared = Arc::new(Shared::new(runtime.clone(), node));
        let driver = Driver::new(shared.clone(), udp, listener);
        runtime.spawn(Box::pin(driver));
        Ok(Node {
            shared,
            id,
            local_addr,
            transport: config.transport,
            route: config.route,
        })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where it accepts sessions.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sessions, streams and counters, as `vx6 status` shows them.
    pub fn status(&self) -> NodeStatus {
        self.shared.lock().node.status()
    }

    /// The node's Prometheus metrics now (the registry `vx6 node --metrics` serves); register
    /// the application's own metrics in it and encode it with
    /// `prometheus_client::encoding::text::encode`.
    pub fn metrics(&self) -> prometheus_client::registry::Registry {
        self.shared.lock().node.metrics()
    }

    /// What the node knows about being reached from outside, as `vx6 status` shows it.
    pub fn reachability(&self) -> Reachability {
        let st = self.shared.lock();
        let (mappings, answers) = st.node.reachability();
        Reachability {
            observed: st.node.observed_addresses().to_vec(),
            answers,
            mappings,
            dialable: st.node.dial_back_verdicts(),
            home_relays: st.node.home_relays().to_vec(),
        }
    }

    /// The links `auto` streams fell back to (one per owner), and the path each runs on now.
    pub fn auto_links(&self) -> Vec<vx6_core::node::PolicyStatus> {
        self.shared.lock().node.auto_links()
    }

    /// Sets or changes path policy `id`; streams opened with `Route::Policy(id)` follow it,
    /// and a managed link it already runs moves at once.
    pub fn set_policy(&self, id: vx6_core::policy::PolicyId, policy: vx6_core::policy::Policy) {
        let mut st = self.shared.lock();
        let now = self.shared.runtime.now();
        st.node.set_policy(now, id, policy);
        st.wake_driver();
    }

    /// The state of the managed link policy `id` runs, if any.
    pub fn policy_status(
        &self,
        id: vx6_core::policy::PolicyId,
    ) -> Option<vx6_core::node::PolicyStatus> {
        self.shared.lock().node.policy_status(id)
    }

    /// Pings `owner` directly at `addr` (if given) and through every circuit up to it; the
    /// answers arrive as [`NodeEvent::PingReply`] with the id returned.
    pub fn ping(&self, owner: NodeId, addr: Option<SocketAddr>) -> u64 {
        let mut st = self.shared.lock();
        let now = self.shared.runtime.now();
        let (id, _) = st.node.ping(now, owner, addr);
        st.wake_driver();
        id
    }

    /// Keys pinned so far (to keep for the next run's [`NodeConfig::pins`]).
    pub fn pins(&self) -> Pins {
        self.shared.lock().node.pins().clone()
    }

    /// Enters the network through more peers.
    pub fn bootstrap(&self, peers: &[SocketAddr]) {
        let mut st = self.shared.lock();
        st.node.bootstrap(peers);
        st.wake_driver();
    }

    fn add_service(&self, name: ServiceName, service: Service) -> Result<(), Error> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(Error::Shutdown);
        }
        st.node.services_mut().add(name, service)?;
        let now = self.shared.runtime.now();
        st.node.republish(now);
        st.wake_driver();
        Ok(())
    }

    /// Offers the TCP service at `target` (on this machine) as `name`, to whom `access` lets
    /// in, and publishes it.
    pub fn publish(
        &self,
        name: ServiceName,
        target: SocketAddr,
        access: Access,
    ) -> Result<(), Error> {
        self.add_service(
            name,
            Service {
                target: Backend::Tcp(target),
                access,
            },
        )
    }

    /// Offers `name` as a service this application handles itself: accepted streams come out
    /// of the returned [`Incoming`].
    pub fn serve(&self, name: ServiceName, access: Access) -> Result<Incoming, Error> {
        self.add_service(
            name.clone(),
            Service {
                target: Backend::InProcess,
                access,
            },
        )?;
        self.shared
            .lock()
            .accept
            .insert(name.clone(), AcceptQueue::default());
        Ok(Incoming {
            shared: self.shared.clone(),
            service: name,
        })
    }

    /// Stops offering `name`.
    pub fn unpublish(&self, name: &ServiceName) {
        let mut st = self.shared.lock();
        st.node.services_mut().remove(name);
        st.accept.remove(name);
        let now = self.shared.runtime.now();
        st.node.republish(now);
        st.wake_driver();
    }

    /// Resolves `username.service` (or `username.service.<node id prefix>`) to its owner and
    /// addresses.
    pub async fn resolve(&self, name: &str) -> Result<Resolved, Error> {
        let target: Target = name
            .parse()
            .map_err(|e| Error::BadDestination(format!("{name:?}: {e}")))?;
        let id = {
            let mut st = self.shared.lock();
            if st.stopped {
                return Err(Error::Shutdown);
            }
            let now = self.shared.runtime.now();
            let id = st.node.resolve(now, target);
            st.resolutions.entry(id).or_default();
            st.wake_driver();
            id
        };
        let result = poll_fn(|cx| {
            let mut st = self.shared.lock();
            let stopped = st.stopped;
            let Some(slot) = st.resolutions.get_mut(&id) else {
                // Only this future removes its slot, so it is there while the future runs.
                return Poll::Ready(Err(Failure::new(Cause::Closed, "resolution lost")));
            };
            if let Some(r) = slot.result.take() {
                st.resolutions.remove(&id);
                return Poll::Ready(r);
            }
            if stopped {
                return Poll::Ready(Err(Failure::new(Cause::Closed, "the node has shut down")));
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        result.map_err(|failure| Error::Resolve {
            name: name.to_owned(),
            failure,
        })
    }

    /// Opens a stream to `destination`: `username.service` (resolved through the DHT), or
    /// `[NODEID@]ADDR/SERVICE` (direct mode; without the NodeId, the key is pinned on first
    /// use). Returns once the owner accepted it.
    pub async fn connect(&self, destination: &str) -> Result<VxStream, Error> {
        self.connect_via(destination, self.route).await
    }

    /// As [`Node::connect`], by `route` (a relay path needs the owner's node id: a name, or
    /// `NODEID@` in direct mode).
    pub async fn connect_via(&self, destination: &str, route: Route) -> Result<VxStream, Error> {
        let stream = self.open_via(destination, route)?;
        let handle = stream.handle();
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(failure) = st.failure(handle) {
                return Poll::Ready(Err(Error::Stream {
                    destination: destination.to_owned(),
                    failure,
                }));
            }
            let slot = st.slot(handle);
            if slot.open {
                return Poll::Ready(Ok(()));
            }
            slot.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(stream)
    }

    /// Opens a stream to `destination` as [`Node::connect`] does, but returns at once instead
    /// of waiting for the owner's answer: what is written goes out right behind the request,
    /// which saves a round trip (the daemon's forwards work this way). A refusal, or a name
    /// that does not resolve, is the first read's or write's error, whose `get_ref()` is the
    /// [`Failure`].
    pub fn open(&self, destination: &str) -> Result<VxStream, Error> {
        self.open_via(destination, self.route)
    }

    /// As [`Node::open`], by `route`.
    pub fn open_via(&self, destination: &str, route: Route) -> Result<VxStream, Error> {
        let dest: Destination = destination
            .parse()
            .map_err(|e| Error::BadDestination(format!("{destination:?}: {e}")))?;
        let handle = {
            let mut st = self.shared.lock();
            if st.stopped {
                return Err(Error::Shutdown);
            }
            let now = self.shared.runtime.now();
            let handle = match dest {
                Destination::Direct {
                    expected,
                    addr,
                    service,
                } => {
                    let dial = Dial {
                        addr,
                        transport: self.transport,
                        expected,
                    };
                    st.node.open_stream_routed(now, &dial, service, route)
                }
                Destination::Named(target) => {
                    st.node
                        .open_stream_by_name_routed(now, target, self.transport, route)
                }
            };
            st.slot(handle);
            st.wake_driver();
            handle
        };
        // Owned from here: if it is dropped, the stream is aborted.
        Ok(VxStream::new(self.shared.clone(), handle))
    }

    /// The node's events (sessions, pins, refusals).
    pub fn events(&self) -> Events {
        Events {
            shared: self.shared.clone(),
        }
    }

    /// Closes every session and stops the driver; returns once it has stopped.
    pub async fn shutdown(&self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            st.wake_driver();
        }
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.stopped {
                return Poll::Ready(());
            }
            st.stopped_waker.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Streams arriving for an in-process service.
#[derive(Debug)]
pub struct Incoming {
    shared: Arc<Shared>,
    service: ServiceName,
}

impl Incoming {
    /// The next stream a peer opened to this service, or `None` once the node stopped or the
    /// service was withdrawn.
    pub async fn accept(&self) -> Option<VxStream> {
        let handle = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.stopped {
                return Poll::Ready(None);
            }
            let Some(q) = st.accept.get_mut(&self.service) else {
                return Poll::Ready(None);
            };
            match q.waiting.pop_front() {
                Some((handle, _)) => Poll::Ready(Some(handle)),
                None => {
                    q.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        let mut st = self.shared.lock();
        let now = self.shared.runtime.now();
        st.slot(handle).open = true;
        st.node.target_connected(now, handle);
        st.wake_driver();
        drop(st);
        Some(VxStream::new(self.shared.clone(), handle))
    }
}
