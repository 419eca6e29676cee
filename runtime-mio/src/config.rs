//! `config.toml` in the home directory.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use vx6_core::Username;

/// The settings a node reads at start. Command-line flags override single values and add to
/// lists. Values use the same syntax as the flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The username this node claims.
    pub name: Username,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--transport`: "quic" or "tcp".
    pub transport: Option<String>,
    /// `--serve`, each `NAME=HOST:PORT`.
    #[serde(default)]
    pub serve: Vec<String>,
    /// `--allow`, node ids.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `--public`.
    #[serde(default)]
    pub public: bool,
    /// `--bootstrap`, peer addresses.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// `--forward`, each `TARGET=LOCALADDR`.
    #[serde(default)]
    pub forward: Vec<String>,
    /// `--allow-remote-targets`.
    #[serde(default)]
    pub allow_remote_targets: bool,
    /// The path forwards take unless `--via` says otherwise: "direct", "relay" or "auto".
    pub via: Option<String>,
    /// Relays on a forward's circuit unless `--hops` says otherwise.
    pub hops: Option<u8>,
    /// Policy settings for every forward (as `--sla`), making them managed forwards.
    pub sla: Option<String>,
    /// Policy settings per forward target (`"alice.ssh" = "max-loss=5%"`), over `sla`.
    #[serde(default)]
    pub policy: std::collections::BTreeMap<String, String>,
    /// `--metrics`: where to serve Prometheus metrics (a loopback address).
    pub metrics: Option<String>,
    /// `--announce`: addresses to publish instead of those found.
    #[serde(default)]
    pub announce: Vec<String>,
    /// `--relay`: relay circuits for others.
    #[serde(default)]
    pub relay: bool,
    /// The operator this relay declares (path selection avoids two relays of one operator).
    pub relay_operator: Option<String>,
    /// Circuits relayed at once, in total.
    pub relay_max_circuits: Option<u32>,
    /// Circuits one peer may have through this relay at once.
    pub relay_max_per_peer: Option<u32>,
    /// Seconds without traffic after which a relayed circuit is torn down.
    pub relay_idle_expiry_secs: Option<u32>,
}

/// The commented file `vx6 init` writes.
pub fn template(name: &Username) -> String {
    format!(
        "# VX6 node configuration, written by `vx6 init`.\n\
         # Command-line flags override what is set here.\n\
         \n\
         # The username this node claims. Its services are reached as {name}.<service>;\n\
         # the claim is signed with this node's key (identity.key).\n\
         name = \"{name}\"\n\
         \n\
         # Settings for `vx6 node` (the flags of the same names override or add to these):\n\
         # listen = \"[::]:4433\"\n\
         # transport = \"quic\"                 # or \"tcp\"\n\
         # serve = [\"ssh=127.0.0.1:22\"]       # offer local services by name\n\
         # allow = [\"<node id>\"]              # who may use them ...\n\
         # public = false                      # ... or everyone (an explicit choice)\n\
         # bootstrap = [\"[fd6a::2]:4433\"]        # any live peer, to enter the network\n\
         # forward = [\"alice.ssh=127.0.0.1:2222\"] # or \"[fd6a::2]:4433/ssh=127.0.0.1:2222\"\n\
         # via = \"auto\"                       # forwards' path: direct, relay or auto\n\
         # hops = 2                            # relays on a relayed path\n\
         # sla = \"max-loss=5%,hold-down=10s\" # path policy for every forward (as --sla)\n\
         # metrics = \"127.0.0.1:9464\"        # Prometheus metrics at /metrics\n\
         # announce = [\"[2001:db8::1]:4433\"] # publish these instead of the addresses found\n\
         # relay = false                       # relay circuits for others\n\
         # relay_operator = \"example-org\"     # who runs this relay\n\
         # relay_max_circuits = 4096\n\
         # relay_max_per_peer = 64\n\
         # relay_idle_expiry_secs = 120\n\
         \n\
         # Path policy per forward target, over `sla` (--sla on the command line wins):\n\
         # [policy]\n\
         # \"alice.ssh\" = \"via=direct,max-rtt=150ms,max-loss=2%,max-jitter=30ms,hold-down=10s\"\n"
    )
}

/// Reads and validates the config at `path`; errors name the file and line.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| {
            1 + text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        });
        let message = e.message().replace('\n', " ");
        match line {
            Some(line) => anyhow!("config file {} line {line}: {message}", path.display()),
            None => anyhow!("config file {}: {message}", path.display()),
        }
    })
}
