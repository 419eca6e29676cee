//! Prometheus metrics over HTTP, from the daemon's own loop (no thread, no HTTP library):
//! `GET /metrics` on a loopback address gets the node's registry, encoded by
//! `prometheus-client` as OpenMetrics text when the client accepts it (Prometheus does), else
//! in the classic text format (`text/plain; version=0.0.4`), which `curl` and `promtool check
//! metrics` read. Each client sends one request and gets one answer, then the connection
//! closes; clients are bounded in number, request size and time.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// Clients served at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 16;
/// Longest request head read; a client that sends more gets 431 and is closed.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request and take the answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// The content type Prometheus asks for and `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format.
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Client {
    socket: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    off: usize,
    deadline: Instant,
}

/// The listener and its clients.
pub struct MetricsServer {
    listener: TcpListener,
    clients: HashMap<Token, Client>,
    /// A client left a full table: those waiting in the listen queue can be taken now.
    freed: bool,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (or `HEAD`).
    Metrics {
        /// Whether the body is wanted.
        body: bool,
        /// Whether the client accepts OpenMetrics text.
        openmetrics: bool,
    },
    /// Anything else, answered with this status line.
    Refused(&'static str),
}

/// Reads a request head: `None` until it is complete.
pub fn parse(head: &[u8]) -> Option<Request> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| head.windows(2).position(|w| w == b"\n\n"))?;
    let text = std::str::from_utf8(&head[..end]).ok();
    let line = text.and_then(|t| t.lines().next()).unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) || parts.next().is_some() {
        return Some(Request::Refused("400 Bad Request"));
    }
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    let openmetrics = text.is_some_and(|t| {
        t.lines().skip(1).any(|h| {
            h.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("accept")
                    && value.contains("application/openmetrics-text")
            })
        })
    });
    Some(match (method, path) {
        (Some("GET"), Some("/metrics")) => Request::Metrics {
            body: true,
            openmetrics,
        },
        (Some("HEAD"), Some("/metrics")) => Request::Metrics {
            body: false,
            openmetrics,
        },
        (Some("GET" | "HEAD"), _) => Request::Refused("404 Not Found"),
        _ => Request::Refused("405 Method Not Allowed"),
    })
}

fn response(status: &str, content_type: &str, body: &[u8], send_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

impl MetricsServer {
    /// Listens on `addr` under `token`.
    pub fn bind(registry: &Registry, addr: SocketAddr, token: Token) -> Result<Self> {
        let mut listener =
            TcpListener::bind(addr).with_context(|| format!("binding --metrics {addr}"))?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Self {
            listener,
            clients: HashMap::new(),
            freed: false,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Whether `token` is one of its clients.
    pub fn owns(&self, token: Token) -> bool {
        self.clients.contains_key(&token)
    }

    /// Whether a client left a full table since this was last asked.
    pub fn take_freed(&mut self) -> bool {
        std::mem::take(&mut self.freed)
    }

    /// Accepts clients while there is room; returns their tokens.
    pub fn accept(
        &mut self,
        registry: &Registry,
        now: Instant,
        mut next_token: impl FnMut() -> Token,
    ) -> Vec<Token> {
        let mut accepted = Vec::new();
        while self.clients.len() < MAX_CLIENTS {
            let mut socket = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("metrics accept: {e}");
                    break;
                }
            };
            let token = next_token();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if registry.register(&mut socket, token, interest).is_ok() {
                self.clients.insert(
                    token,
                    Client {
                        socket,
                        request: Vec::new(),
                        reply: Vec::new(),
                        off: 0,
                        deadline: now + DEADLINE,
                    },
                );
                accepted.push(token);
            }
        }
        accepted
    }

    /// Reads the client's request and, once it is whole, answers it with `render()`'s text
    /// for `GET /metrics`; writes what is left of an answer.
    pub fn serve(&mut self, registry: &Registry, token: Token, render: impl FnOnce() -> String) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if c.reply.is_empty() {
            let mut buf = [0u8; 1024];
            let mut eof = false;
            loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return self.close(registry, token),
                }
                if c.request.len() > MAX_REQUEST {
                    c.reply = response(
                        "431 Request Header Fields Too Large",
                        "text/plain",
                        b"request too large\n",
                        true,
                    );
                    break;
                }
            }
            if c.reply.is_empty() {
                match parse(&c.request) {
                    // Gone before asking: its place is free at once.
                    None if eof => return self.close(registry, token),
                    None => return,
                    Some(Request::Metrics { body, openmetrics }) => {
                        let text = render();
                        c.reply = match openmetrics {
                            true => response("200 OK", OPENMETRICS, text.as_bytes(), body),
                            false => {
                                let text = classic(&text);
                                response("200 OK", CLASSIC, text.as_bytes(), body)
                            }
                        };
                    }
                    Some(Request::Refused(status)) => {
                        let body = format!("{status}: only GET /metrics is served\n");
                        c.reply = response(status, "text/plain", body.as_bytes(), true);
                    }
                }
            }
        }
        while c.off < c.reply.len() {
            match c.socket.write(&c.reply[c.off..]) {
                Ok(n) => c.off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(registry, token);
    }

    /// Closes clients past their deadline.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.close(registry, t);
        }
    }

    /// The soonest client deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients.values().map(|c| c.deadline).min()
    }

    fn close(&mut self, registry: &Registry, token: Token) {
        self.freed |= self.clients.len() >= MAX_CLIENTS;
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = registry.deregister(&mut c.socket);
        }
    }
}

/// OpenMetrics text as the classic text format has it: a counter's HELP and TYPE name its
/// `_total` series, and there are no UNIT lines nor `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = help.replace(rest) {
                out.push_str(&format!("# HELP {h}\n"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics {
                body: true,
                openmetrics: false
            })
        );
        assert_eq!(
            parse(
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
            ),
            Some(Request::Metrics {
                body: true,
                openmetrics: true
            })
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Request::Metrics {
                body: false,
                openmetrics: false
            })
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), None, "incomplete");
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Request::Refused("404 Not Found"))
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Refused("405 Method Not Allowed"))
        );
        assert_eq!(
            parse(b"\xff\xfe\r\n\r\n"),
            Some(Request::Refused("400 Bad Request"))
        );
    }

    #[test]
    fn classic_text_names_counters_by_their_series() {
        let om = "# HELP vx6_forwarded_bytes Bytes.\n# TYPE vx6_forwarded_bytes counter\n\
                  # UNIT vx6_forwarded_bytes bytes\nvx6_forwarded_bytes_total{path=\"direct\"} 5\n\
                  # HELP vx6_streams Open.\n# TYPE vx6_streams gauge\nvx6_streams 2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP vx6_forwarded_bytes_total Bytes.\n# TYPE vx6_forwarded_bytes_total counter\n\
             vx6_forwarded_bytes_total{path=\"direct\"} 5\n\
             # HELP vx6_streams Open.\n# TYPE vx6_streams gauge\nvx6_streams 2\n"
        );
    }

    proptest! {
        /// Any bytes: no panic; a complete head always gets an answer.
        #[test]
        fn any_request_is_answered_or_awaited(head in prop::collection::vec(any::<u8>(), 0..300)) {
            let complete = head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
            prop_assert_eq!(parse(&head).is_some(), complete);
        }
    }
}
