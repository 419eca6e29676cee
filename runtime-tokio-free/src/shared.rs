//! State shared by the driver task and the API handles: the core node behind one lock, and the
//! wakers of whoever waits on it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use vx6_core::{Cause, Failure};

use vx6_core::ServiceName;
use vx6_core::node::{Node as CoreNode, StreamHandle};

use crate::events::NodeEvent;
use crate::node::Resolved;
use crate::runtime::Runtime;

/// Events kept for a reader that does not keep up; older ones are dropped (and counted).
pub(crate) const EVENT_QUEUE: usize = 1024;
/// Incoming streams waiting for an in-process service to accept them; more are refused.
pub(crate) const ACCEPT_QUEUE: usize = 128;

pub(crate) struct Shared {
    pub runtime: Arc<dyn Runtime>,
    state: Mutex<State>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// A waiter's slot for one stream.
#[derive(Default)]
pub(crate) struct StreamSlot {
    pub reader: Option<Waker>,
    pub writer: Option<Waker>,
    /// The owner accepted (client streams), or the application took it (owner streams).
    pub open: bool,
    pub failed: Option<Failure>,
}

impl StreamSlot {
    pub fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// Streams for one in-process service, waiting to be accepted.
#[derive(Default)]
pub(crate) struct AcceptQueue {
    pub waiting: VecDeque<(StreamHandle, Option<vx6_core::NodeId>)>,
    pub waker: Option<Waker>,
}

/// A resolution some `resolve` call waits for.
#[derive(Default)]
pub(crate) struct ResolveSlot {
    pub result: Option<Result<Resolved, Failure>>,
    pub waker: Option<Waker>,
}

pub(crate) struct State {
    pub node: CoreNode,
    pub driver: Option<Waker>,
    pub streams: HashMap<StreamHandle, StreamSlot>,
    pub accept: HashMap<ServiceName, AcceptQueue>,
    pub resolutions: HashMap<u64, ResolveSlot>,
    pub events: VecDeque<NodeEvent>,
    pub events_waker: Option<Waker>,
    pub events_dropped: u64,
    pub shutdown: bool,
    /// The driver has finished; nothing moves any more.
    pub stopped: bool,
    pub stopped_waker: Vec<Waker>,
}

impl State {
    pub fn new(node: CoreNode) -> Self {
        Self {
            node,
            driver: None,
            streams: HashMap::new(),
            accept: HashMap::new(),
            resolutions: HashMap::new(),
            events: VecDeque::new(),
            events_waker: None,
            events_dropped: 0,
            shutdown: false,
            stopped: false,
            stopped_waker: Vec::new(),
        }
    }

    /// Lets the driver run: something changed that may have output.
    pub fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    pub fn slot(&mut self, handle: StreamHandle) -> &mut StreamSlot {
        self.streams.entry(handle).or_default()
    }

    pub fn failure(&self, handle: StreamHandle) -> Option<Failure> {
        if self.stopped {
            return Some(Failure::new(Cause::Closed, "the node has shut down"));
        }
        self.streams.get(&handle).and_then(|s| s.failed.clone())
    }

    pub fn push_event(&mut self, event: NodeEvent) {
        if self.events.len() >= EVENT_QUEUE {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
        if let Some(w) = self.events_waker.take() {
            w.wake();
        }
    }

    /// Wakes everyone who waits on something (at shutdown).
    pub fn wake_all(&mut self) {
        for slot in self.streams.values_mut() {
            slot.wake();
        }
        for q in self.accept.values_mut() {
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
        for r in self.resolutions.values_mut() {
            if let Some(w) = r.waker.take() {
                w.wake();
            }
        }
        if let Some(w) = self.events_waker.take() {
            w.wake();
        }
        for w in self.stopped_waker.drain(..) {
            w.wake();
        }
    }
}

impl Shared {
    pub fn new(runtime: Arc<dyn Runtime>, node: CoreNode) -> Self {
        Self {
            runtime,
            state: Mutex::new(State::new(node)),
        }
    }

    /// The state. A panic while it was held leaves it usable: every update to it is complete
    /// before anything that could panic runs.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
