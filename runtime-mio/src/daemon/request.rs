//! The control channel's requests: one line each, as the `vx6` subcommands write them.
//!
//! ```text
//! status | status json
//! resolve NAME
//! path HOPS NAME
//! ping COUNT NAME
//! policy LOCALADDR SETTINGS
//! ```

use std::net::SocketAddr;

use vx6_core::policy::Policy;
use vx6_core::resolve::Target;

/// Most rounds one `vx6 ping` asks for.
pub const MAX_PING_COUNT: u32 = 100;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The daemon's state, as text or JSON.
    Status {
        /// JSON rather than text.
        json: bool,
    },
    /// Resolve a name.
    Resolve(Target),
    /// The relay path for a name, with so many hops.
    Path {
        /// Relays.
        hops: u8,
        /// Whose.
        target: Target,
    },
    /// Ping a name's node, so many rounds.
    Ping {
        /// Rounds.
        count: u32,
        /// Whose.
        target: Target,
    },
    /// Change the policy of the forward listening on `local`.
    Policy {
        /// The forward's local address.
        local: SocketAddr,
        /// Settings to apply over its policy (checked to parse).
        settings: String,
    },
}

/// Reads one request line; the error is the reply's reason.
pub fn parse(line: &str) -> Result<Request, String> {
    let line = line.trim();
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let target = |s: &str| s.trim().parse::<Target>().map_err(|e| e.to_string());
    match verb {
        "status" if rest.is_empty() => Ok(Request::Status { json: false }),
        "status" if rest == "json" => Ok(Request::Status { json: true }),
        "resolve" if !rest.is_empty() => Ok(Request::Resolve(target(rest)?)),
        "path" | "ping" => {
            let (n, name) = rest
                .split_once(' ')
                .ok_or_else(|| format!("expected: {verb} N NAME"))?;
            match verb {
                "path" => Ok(Request::Path {
                    hops: crate::spec::parse_hops(n)?,
                    target: target(name)?,
                }),
                _ => Ok(Request::Ping {
                    count: n
                        .parse::<u32>()
                        .ok()
                        .filter(|c| (1..=MAX_PING_COUNT).contains(c))
                        .ok_or_else(|| {
                            format!("{n:?} is not a ping count from 1 to {MAX_PING_COUNT}")
                        })?,
                    target: target(name)?,
                }),
            }
        }
        "policy" => {
            let (local, settings) = rest
                .split_once(' ')
                .ok_or("expected: policy LOCALADDR SETTINGS")?;
            let local = crate::spec::parse_addr(local)?;
            let settings = settings.trim();
            Policy::default()
                .with_settings(settings)
                .map_err(|e| e.to_string())?;
            Ok(Request::Policy {
                local,
                settings: settings.to_owned(),
            })
        }
        _ => Err(format!("unknown request {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_request() {
        assert_eq!(parse("status"), Ok(Request::Status { json: false }));
        assert_eq!(parse("status json\n"), Ok(Request::Status { json: true }));
        assert!(matches!(
            parse("resolve alice.ssh"),
            Ok(Request::Resolve(_))
        ));
        assert!(matches!(
            parse("path 3 alice.ssh"),
            Ok(Request::Path { hops: 3, .. })
        ));
        assert!(matches!(
            parse("ping 5 alice.ssh"),
            Ok(Request::Ping { count: 5, .. })
        ));
        assert_eq!(
            parse("policy 127.0.0.1:2222 via=relay,max-loss=5%"),
            Ok(Request::Policy {
                local: "127.0.0.1:2222".parse().unwrap(),
                settings: "via=relay,max-loss=5%".into()
            })
        );
        for (bad, why) in [
            ("ping 0 alice.ssh", "ping count"),
            ("ping 101 alice.ssh", "ping count"),
            ("ping alice.ssh", "expected: ping N NAME"),
            ("path 9 alice.ssh", "hop count"),
            ("policy 127.0.0.1:2222 max-loss=500%", "max-loss"),
            ("policy nowhere via=relay", "nowhere"),
            ("policy 127.0.0.1:2222", "expected: policy"),
            ("status yaml", "unknown request"),
            ("reboot", "unknown request"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    proptest! {
        /// Any line parses or names the problem; it never panics, and a parsed policy request
        /// holds settings that apply.
        #[test]
        fn any_line_parses_or_is_refused(line in "(status|resolve|path|ping|policy)? ?[ -~]{0,60}") {
            if let Ok(Request::Policy { settings, .. }) = parse(&line) {
                prop_assert!(Policy::default().with_settings(&settings).is_ok());
            }
        }

        /// What the subcommands write reads back as the same request.
        #[test]
        fn written_requests_read_back(count in 1u32..=100, hops in 1u8..=8, port in 1u16..) {
            let ping = parse(&format!("ping {count} alice.ssh")).unwrap();
            let ok = matches!(ping, Request::Ping { count: c, .. } if c == count);
            prop_assert!(ok, "ping");
            let path = parse(&format!("path {hops} alice.ssh")).unwrap();
            let ok = matches!(path, Request::Path { hops: h, .. } if h == hops);
            prop_assert!(ok, "path");
            let policy = parse(&format!("policy 127.0.0.1:{port} via=direct,hold-down=3s")).unwrap();
            let ok = matches!(policy, Request::Policy { local, .. } if local.port() == port);
            prop_assert!(ok, "policy");
        }
    }
}
