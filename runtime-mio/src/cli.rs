//! Command-line parsing and the subcommands.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vx6_core::pins::Pins;
use vx6_core::record::Transport;
use vx6_core::record::{Freshness, NameClaim};
use vx6_core::registry::RegistryLimits;
use vx6_core::service::{Access, Backend, Service, ServiceTable};
use vx6_core::{Identity, NodeId, Record, SignedRecord, Username};

use crate::clock::{human_until, unix_now};
use crate::daemon::{self, Daemon};
use crate::home::Home;
use crate::spec::{ForwardSpec, ServeSpec, Via, parse_addr, parse_hops};
use crate::{config, identity_file, registry_file};

/// VX6: reach services that listen on localhost, by name, from other machines.
#[derive(Parser)]
#[command(name = "vx6", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node identity and config in the home directory.
    Init {
        #[command(flatten)]
        home: HomeArg,
        /// The username this node claims (a-z, 0-9, '-'; starts with a letter).
        #[arg(long, value_name = "USERNAME")]
        name: Username,
    },
    /// Print this node's id (first line), username and public key.
    Id {
        #[command(flatten)]
        home: HomeArg,
    },
    /// List the records in the local registry.
    Records {
        #[command(flatten)]
        home: HomeArg,
    },
    /// Run the daemon in the foreground (Ctrl-C or SIGTERM stops it).
    Node(NodeArgs),
    /// Resolve username.service through the running daemon: node id, then its addresses.
    Resolve {
        #[command(flatten)]
        home: HomeArg,
        /// username.service, or username.service.<node id prefix>.
        name: String,
    },
    /// Show the relay path the daemon would choose to reach NAME now, and why it passed over
    /// the other relays (or, while a relayed link to NAME is up, the path it uses).
    Path {
        #[command(flatten)]
        home: HomeArg,
        /// username.service, or username.service.<node id prefix>.
        name: String,
        /// Relays on the path.
        #[arg(long, value_name = "N", default_value = "2", value_parser = parse_hops)]
        hops: u8,
    },
    /// Ping NAME's node through the running daemon: straight to it, and through every relay
    /// circuit up to it; each answer says which path it took.
    Ping {
        #[command(flatten)]
        home: HomeArg,
        /// username.service, or username.service.<node id prefix>.
        name: String,
        /// Rounds of probes, half a second apart.
        #[arg(long, value_name = "N", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=100))]
        count: u32,
    },
    /// Change the path policy of a running forward (the one listening on LOCALADDR); its
    /// open connections move with it when it is a managed forward.
    Policy {
        #[command(flatten)]
        home: HomeArg,
        /// The forward's local address, as given to --forward.
        local: String,
        /// direct, relay or auto.
        #[arg(long, value_name = "KIND")]
        via: Option<Via>,
        /// Relays on a relay path.
        #[arg(long, value_name = "N", value_parser = parse_hops)]
        hops: Option<u8>,
        /// Policy settings, as --sla takes them (max-rtt=…,max-loss=…,hold-down=…,strict).
        #[arg(long, value_name = "SETTINGS", value_parser = parse_settings)]
        sla: Option<String>,
    },
    /// Show a running daemon's sessions, services and forwards.
    Status {
        #[command(flatten)]
        home: HomeArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to accept sessions on, e.g. [::]:4433 [config: listen].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Session transport, for listening and for forwards [config: transport; default quic].
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// Offer a local service: NAME=HOST:PORT (repeatable).
    #[arg(long, value_name = "NAME=HOST:PORT")]
    serve: Vec<ServeSpec>,
    /// Let this node use the served services (repeatable).
    #[arg(long, value_name = "NODEID")]
    allow: Vec<NodeId>,
    /// Let every authenticated node use the served services.
    #[arg(long)]
    public: bool,
    /// Allow service targets that are not loopback addresses.
    #[arg(long)]
    allow_remote_targets: bool,
    /// Enter the network through this peer (repeatable) [config: bootstrap].
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<String>,
    /// Listen on LOCALADDR and carry each connection to TARGET: username.service, or
    /// [NODEID@][IPv6]:PORT/SERVICE (repeatable).
    #[arg(long, value_name = "TARGET=LOCALADDR")]
    forward: Vec<ForwardSpec>,
    /// The path of the --forward it follows: direct, relay or auto [config: via; default
    /// auto].
    #[arg(long, value_name = "KIND")]
    via: Vec<Via>,
    /// Relays on the path of the --forward it follows [config: hops; default 2].
    #[arg(long, value_name = "N", value_parser = parse_hops)]
    hops: Vec<u8>,
    /// Path policy of the --forward it follows, making it a managed forward that moves
    /// between direct and relay paths without dropping connections (QUIC):
    /// max-rtt=150ms,max-loss=5%,max-jitter=30ms,hold-down=10s,strict [config: sla, policy].
    #[arg(long, value_name = "SETTINGS", value_parser = parse_settings)]
    sla: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address) [config: metrics].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Publish this address (repeatable) instead of those found: the interfaces' for a
    /// wildcard --listen, and the one peers agree they see [config: announce].
    #[arg(long, value_name = "ADDR")]
    announce: Vec<String>,
    /// Relay circuits for others (limits in the config) [config: relay].
    #[arg(long)]
    relay: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Quic,
    Tcp,
}

#[derive(clap::Args)]
struct HomeArg {
    /// Home directory [default: $VX6_HOME, else the platform's data directory].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

impl HomeArg {
    fn locate(self) -> Result<Home> {
        Home::locate(self.home)
    }
}

/// Parses the command line and runs the command. Usage errors exit here, with clap's code 2 and
/// a one-line reason; `--help` and `--version` print and exit 0.
pub fn run() -> Result<()> {
    let usage = |err: clap::Error| -> ! {
        if !err.use_stderr() {
            err.exit();
        }
        let rendered = err.to_string();
        let reason = rendered
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ");
        eprintln!("vx6: error: {reason} (see `vx6 --help`)");
        std::process::exit(2);
    };
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| usage(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage(e));
    match cli.command {
        Command::Node(mut args) => {
            let sub = matches.subcommand_matches("node").expect("parsed as node");
            if let Err(reason) = attach_routes(sub, &mut args) {
                eprintln!("vx6: error: {reason} (see `vx6 node --help`)");
                std::process::exit(2);
            }
            node(args)
        }
        Command::Path { home, name, hops } => path(&home.locate()?, &name, hops),
        other => run_other(other),
    }
}

/// Gives each `--via` and `--hops` to the `--forward` before it on the command line.
fn attach_routes(m: &clap::ArgMatches, args: &mut NodeArgs) -> Result<(), String> {
    let forwards: Vec<usize> = m
        .indices_of("forward")
        .map_or(Vec::new(), Iterator::collect);
    let owner = |at: usize, flag: &str| -> Result<usize, String> {
        forwards
            .iter()
            .rposition(|f| *f < at)
            .ok_or_else(|| format!("{flag} must follow the --forward it applies to"))
    };
    let mut via: Vec<Option<Via>> = vec![None; forwards.len()];
    let mut hops: Vec<Option<u8>> = vec![None; forwards.len()];
    let mut sla: Vec<Option<String>> = vec![None; forwards.len()];
    let sla_at: Vec<usize> = m.indices_of("sla").map_or(Vec::new(), Iterator::collect);
    for (at, s) in sla_at.into_iter().zip(&args.sla) {
        let i = owner(at, "--sla")?;
        if sla[i].replace(s.clone()).is_some() {
            return Err(format!("two --sla for --forward {}", args.forward[i].local));
        }
    }
    let via_at: Vec<usize> = m.indices_of("via").map_or(Vec::new(), Iterator::collect);
    for (at, v) in via_at.into_iter().zip(&args.via) {
        let i = owner(at, "--via")?;
        if via[i].replace(*v).is_some() {
            return Err(format!("two --via for --forward {}", args.forward[i].local));
        }
    }
    let hops_at: Vec<usize> = m.indices_of("hops").map_or(Vec::new(), Iterator::collect);
    for (at, h) in hops_at.into_iter().zip(&args.hops) {
        let i = owner(at, "--hops")?;
        if hops[i].replace(*h).is_some() {
            return Err(format!(
                "two --hops for --forward {}",
                args.forward[i].local
            ));
        }
    }
    for (i, f) in args.forward.iter_mut().enumerate() {
        if via[i] == Some(Via::Direct) && hops[i].is_some() {
            return Err(format!(
                "--hops for --forward {} that goes --via direct",
                f.local
            ));
        }
        f.via = via[i];
        f.hops = hops[i];
        f.sla = sla[i].take();
    }
    Ok(())
}

/// A policy's settings, checked when given (the daemon applies them over the forward's).
fn parse_settings(s: &str) -> Result<String, String> {
    vx6_core::policy::Policy::default()
        .with_settings(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn run_other(command: Command) -> Result<()> {
    match command {
        Command::Init { home, name } => init(&home.locate()?, &name),
        Command::Id { home } => id(&home.locate()?),
        Command::Records { home } => records(&home.locate()?),
        Command::Status { home, json } => status(&home.locate()?, json),
        Command::Resolve { home, name } => resolve(&home.locate()?, &name),
        Command::Ping { home, name, count } => ping(&home.locate()?, &name, count),
        Command::Policy {
            home,
            local,
            via,
            hops,
            sla,
        } => policy(&home.locate()?, &local, via, hops, sla),
        Command::Node(_) | Command::Path { .. } => unreachable!("handled in run"),
    }
}

fn init(home: &Home, name: &Username) -> Result<()> {
    for existing in [home.identity(), home.config()] {
        if existing.exists() {
            bail!(
                "{} already exists; refusing to overwrite an existing node (remove it yourself \
                 if you really mean to replace this node's identity)",
                existing.display()
            );
        }
    }
    home.create()?;
    let identity = Identity::generate(&mut rand_core::OsRng);
    identity_file::create(&home.identity(), &identity)?;
    std::fs::write(home.config(), config::template(name))
        .with_context(|| format!("writing config file {}", home.config().display()))?;

    // The node's own name claim goes into the registry at once, so peers it syncs with learn it.
    let now = unix_now();
    let claim = SignedRecord::sign(
        &identity,
        Record::NameClaim(NameClaim {
            seq: now,
            expires_at: now + Freshness::default().max_lifetime_secs,
            username: name.clone(),
        }),
    )
    .context("signing the name claim")?;
    let mut registry = registry_file::load(&home.registry(), RegistryLimits::default(), now)?;
    registry
        .insert(claim, now)
        .context("storing the name claim")?;
    registry_file::save(&home.registry(), &registry)?;

    print_stdout(&format!("{}\n", identity.node_id()))?;
    eprintln!(
        "vx6: created node {name} in {}; its identity is {}",
        home.dir().display(),
        home.identity().display()
    );
    Ok(())
}

fn id(home: &Home) -> Result<()> {
    let identity = identity_file::load(&home.identity())?;
    let config = config::load(&home.config())?;
    print_stdout(&format!(
        "{}\nusername: {}\npublic-key: {}\n",
        identity.node_id(),
        config.name,
        identity.public_key().to_hex()
    ))
}

fn records(home: &Home) -> Result<()> {
    let now = unix_now();
    let registry = registry_file::load(&home.registry(), RegistryLimits::default(), now)?;
    use std::fmt::Write;
    let mut text = format!(
        "{:<11} {:<52} {:<24} {:>12}  EXPIRES\n",
        "KIND", "OWNER", "NAME", "SEQ"
    );
    for signed in registry.iter() {
        let record = signed.record();
        let name = match record {
            Record::Node(n) => format!("{} addresses", n.addresses.len()),
            Record::Service(s) => s.service.to_string(),
            Record::NameClaim(c) => c.username.to_string(),
        };
        let _ = writeln!(
            text,
            "{:<11} {:<52} {:<24} {:>12}  {}",
            record.kind().label(),
            signed.owner(),
            name,
            record.seq(),
            human_until(record.expires_at(), now)
        );
    }
    print_stdout(&text)
}

/// Raises the soft limit on open files to the hard one: every forwarded connection holds a
/// descriptor in the daemon, and the usual soft limit (1024) would cap them at about that.
#[cfg(unix)]
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open file limit: {limit}"),
        Err(e) => tracing::warn!("raising the open file limit: {e}"),
    }
}

/// The policy that manages forward `f`, if settings make it a managed forward: the config's
/// `sla` for every forward, then its `policy` entry for the forward's target, then `--sla`,
/// each over the last, on top of the forward's path and hops.
fn managed_policy(
    f: &ForwardSpec,
    config: &config::Config,
    default_via: Via,
    default_hops: u8,
    transport: Transport,
) -> Result<Option<vx6_core::policy::Policy>> {
    use vx6_core::policy::{Policy, Prefer};
    let target = f.target.to_string();
    let layers = [
        ("config sla", config.sla.as_deref()),
        (
            "config policy",
            config.policy.get(&target).map(String::as_str),
        ),
        ("--sla", f.sla.as_deref()),
    ];
    if layers.iter().all(|(_, s)| s.is_none()) {
        return Ok(None);
    }
    let mut policy = Policy {
        prefer: match f.via.unwrap_or(default_via) {
            Via::Direct => Prefer::Direct,
            Via::Relay => Prefer::Relay,
            Via::Auto => Prefer::Auto,
        },
        hops: f.hops.unwrap_or(default_hops),
        ..Policy::default()
    };
    for (what, settings) in layers {
        if let Some(s) = settings {
            policy = policy
                .with_settings(s)
                .map_err(|e| anyhow::anyhow!("{what} for --forward {}: {e}", f.local))?;
        }
    }
    // Flags given on the command line win over the config's settings.
    if let Some(v) = f.via {
        policy.prefer = match v {
            Via::Direct => Prefer::Direct,
            Via::Relay => Prefer::Relay,
            Via::Auto => Prefer::Auto,
        };
    }
    if let Some(h) = f.hops {
        policy.hops = h;
    }
    if transport == Transport::Tcp {
        bail!(
            "a path policy (--sla, or sla/policy in the config) for --forward {} needs --transport quic: a TLS/TCP session cannot move between paths",
            f.local
        );
    }
    Ok(Some(policy))
}

fn node(args: NodeArgs) -> Result<()> {
    let home = args.home.locate()?;
    let identity = identity_file::load(&home.identity())?;
    let config = config::load(&home.config())?;
    let cfg = |what: &str, e: String| {
        anyhow::anyhow!("config file {}: {what}: {e}", home.config().display())
    };

    let listen = match (&args.listen, &config.listen) {
        (Some(l), _) => parse_addr(l).map_err(|e| anyhow::anyhow!("--listen: {e}"))?,
        (None, Some(l)) => parse_addr(l).map_err(|e| cfg("listen", e))?,
        (None, None) => bail!("no listen address: pass --listen ADDR or set listen in the config"),
    };
    let transport = match (args.transport, config.transport.as_deref()) {
        (Some(TransportArg::Quic), _) | (None, None | Some("quic")) => Transport::Quic,
        (Some(TransportArg::Tcp), _) | (None, Some("tcp")) => Transport::Tcp,
        (None, Some(other)) => {
            return Err(cfg(
                "transport",
                format!("{other:?} is neither \"quic\" nor \"tcp\""),
            ));
        }
    };
    let mut serves = Vec::new();
    for s in &config.serve {
        serves.push(s.parse::<ServeSpec>().map_err(|e| cfg("serve", e))?);
    }
    serves.extend(args.serve);
    let mut allow = std::collections::BTreeSet::new();
    for a in &config.allow {
        allow.insert(
            a.parse::<NodeId>()
                .map_err(|e| cfg("allow", e.to_string()))?,
        );
    }
    allow.extend(args.allow);
    let public = args.public || config.public;
    if !serves.is_empty() && allow.is_empty() && !public {
        bail!(
            "--serve needs --allow NODEID or --public: who may use a service is an explicit choice"
        );
    }
    if public && !allow.is_empty() {
        bail!("--public and --allow contradict each other: choose one");
    }
    let access = if public {
        Access::Public
    } else {
        Access::Allow(allow)
    };
    let mut services = ServiceTable::new(args.allow_remote_targets || config.allow_remote_targets);
    for s in serves {
        services
            .add(
                s.name.clone(),
                Service {
                    target: Backend::Tcp(s.target),
                    access: access.clone(),
                },
            )
            .map_err(|e| anyhow::anyhow!("--serve {}: {e}", s.name))?;
    }
    let mut forwards = Vec::new();
    for f in &config.forward {
        forwards.push(f.parse::<ForwardSpec>().map_err(|e| cfg("forward", e))?);
    }
    forwards.extend(args.forward);
    let default_via = match config.via.as_deref() {
        None => Via::Auto,
        Some(v) => v.parse::<Via>().map_err(|e| cfg("via", e))?,
    };
    let default_hops = match config.hops {
        None => vx6_core::node::DEFAULT_HOPS,
        Some(h) => parse_hops(&h.to_string()).map_err(|e| cfg("hops", e))?,
    };
    for f in &mut forwards {
        f.policy = managed_policy(f, &config, default_via, default_hops, transport)?;
        f.via.get_or_insert(default_via);
        if f.via != Some(Via::Direct) {
            f.hops.get_or_insert(default_hops);
        }
    }
    let mut announce = Vec::new();
    for a in &config.announce {
        announce.push(parse_addr(a).map_err(|e| cfg("announce", e))?);
    }
    for a in &args.announce {
        announce.push(parse_addr(a).map_err(|e| anyhow::anyhow!("--announce: {e}"))?);
    }
    if let Some(a) = announce
        .iter()
        .find(|a| a.ip().is_unspecified() || a.port() == 0)
    {
        bail!("--announce {a}: announce an address and port others can dial");
    }
    let metrics = match args.metrics.as_deref().or(config.metrics.as_deref()) {
        None => None,
        Some(m) => {
            let addr = parse_addr(m).map_err(|e| anyhow::anyhow!("--metrics: {e}"))?;
            if !addr.ip().is_loopback() {
                bail!("--metrics {addr}: serve metrics on a loopback address (127.0.0.1 or [::1])");
            }
            Some(addr)
        }
    };
    let mut relay = vx6_core::node::RelayConfig {
        enabled: args.relay || config.relay,
        ..Default::default()
    };
    if let Some(op) = &config.relay_operator {
        relay.operator = Some(
            op.parse()
                .map_err(|e: vx6_core::names::NameError| cfg("relay_operator", e.to_string()))?,
        );
    }
    let positive = |what: &str, v: Option<u32>, into: &mut u32| -> Result<()> {
        match v {
            Some(0) => Err(cfg(what, "must be at least 1".into())),
            Some(v) => {
                *into = v;
                Ok(())
            }
            None => Ok(()),
        }
    };
    positive(
        "relay_max_circuits",
        config.relay_max_circuits,
        &mut relay.limits.max_circuits,
    )?;
    positive(
        "relay_max_per_peer",
        config.relay_max_per_peer,
        &mut relay.limits.max_per_peer,
    )?;
    positive(
        "relay_idle_expiry_secs",
        config.relay_idle_expiry_secs,
        &mut relay.limits.idle_expiry_secs,
    )?;

    let mut bootstrap = Vec::new();
    for b in config.bootstrap.iter() {
        bootstrap.push(parse_addr(b).map_err(|e| cfg("bootstrap", e))?);
    }
    for b in &args.bootstrap {
        bootstrap.push(parse_addr(b).map_err(|e| anyhow::anyhow!("--bootstrap: {e}"))?);
    }

    let pins_path = home.dir().join("known_peers");
    let pins = match std::fs::read_to_string(&pins_path) {
        Ok(text) => {
            Pins::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", pins_path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pins::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pins_path.display())),
    };

    crate::logging::init()?;
    #[cfg(unix)]
    raise_open_file_limit();
    let daemon = Daemon::bind(daemon::Options {
        identity,
        listen,
        transport,
        services,
        forwards,
        pins,
        pins_path,
        control_path: Some(home.dir().join("control.sock")),
        bootstrap,
        name: config.name.clone(),
        registry_path: home.registry(),
        relay,
        metrics,
        announce,
    })?;
    let node_id = daemon.node_id();
    tracing::info!(
        "node {node_id} ({}) listening on {} over {transport:?}",
        config.name,
        daemon
            .listen_addr()
            .map_or_else(|| listen.to_string(), |a| a.to_string())
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {node_id}")?;
        out.flush()?;
    }
    daemon.run()
}

fn resolve(home: &Home, name: &str) -> Result<()> {
    name.parse::<vx6_core::resolve::Target>()
        .map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
    let reply = daemon::request(
        &home.dir().join("control.sock"),
        &format!("resolve {name}"),
        daemon::ANSWER_WITHIN,
    )?;
    if let Some(err) = reply.strip_prefix("error: ") {
        bail!("{}", err.trim());
    }
    print_stdout(&reply)
}

fn path(home: &Home, name: &str, hops: u8) -> Result<()> {
    name.parse::<vx6_core::resolve::Target>()
        .map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
    let reply = daemon::request(
        &home.dir().join("control.sock"),
        &format!("path {hops} {name}"),
        daemon::ANSWER_WITHIN,
    )?;
    if let Some(err) = reply.strip_prefix("error: ") {
        bail!("{}", err.trim());
    }
    print_stdout(&reply)
}

fn ping(home: &Home, name: &str, count: u32) -> Result<()> {
    name.parse::<vx6_core::resolve::Target>()
        .map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
    let reply = daemon::request(
        &home.dir().join("control.sock"),
        &format!("ping {count} {name}"),
        // The name's resolution, then the rounds half a second apart, then the last answers.
        daemon::ANSWER_WITHIN + std::time::Duration::from_millis(500) * count,
    )?;
    if let Some(err) = reply.strip_prefix("error: ") {
        bail!("{}", err.trim());
    }
    print_stdout(&reply)
}

fn policy(
    home: &Home,
    local: &str,
    via: Option<Via>,
    hops: Option<u8>,
    sla: Option<String>,
) -> Result<()> {
    let local = parse_addr(local).map_err(|e| anyhow::anyhow!("{local:?}: {e}"))?;
    let mut settings: Vec<String> = Vec::new();
    if let Some(v) = via {
        let v = match v {
            Via::Direct => "direct",
            Via::Relay => "relay",
            Via::Auto => "auto",
        };
        settings.push(format!("via={v}"));
    }
    if let Some(h) = hops {
        settings.push(format!("hops={h}"));
    }
    settings.extend(sla);
    if settings.is_empty() {
        bail!("nothing to change: give --via, --hops or --sla");
    }
    let reply = daemon::request(
        &home.dir().join("control.sock"),
        &format!("policy {local} {}", settings.join(",")),
        daemon::ANSWER_WITHIN,
    )?;
    if let Some(err) = reply.strip_prefix("error: ") {
        bail!("{}", err.trim());
    }
    print_stdout(&reply)
}

fn status(home: &Home, json: bool) -> Result<()> {
    let reply = daemon::request(
        &home.dir().join("control.sock"),
        if json { "status json" } else { "status" },
        daemon::ANSWER_WITHIN,
    )?;
    if let Some(err) = reply.strip_prefix("error: ") {
        bail!("daemon: {}", err.trim());
    }
    print_stdout(&reply)
}

/// Writes to stdout; a reader that went away (`vx6 id | head -1`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
