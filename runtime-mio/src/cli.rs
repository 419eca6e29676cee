//! Command-line parsing and the subcommands.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vx6_core::record::{Freshness, NameClaim};
use vx6_core::registry::RegistryLimits;
use vx6_core::{Identity, Record, SignedRecord, Username};

use crate::clock::{human_until, unix_now};
use crate::home::Home;
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
    let cli = Cli::try_parse().unwrap_or_else(|err| {
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
    });
    match cli.command {
        Command::Init { home, name } => init(&home.locate()?, &name),
        Command::Id { home } => id(&home.locate()?),
        Command::Records { home } => records(&home.locate()?),
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

    println!("{}", identity.node_id());
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
    println!("{}", identity.node_id());
    println!("username: {}", config.name);
    println!("public-key: {}", identity.public_key().to_hex());
    Ok(())
}

fn records(home: &Home) -> Result<()> {
    let now = unix_now();
    let registry = registry_file::load(&home.registry(), RegistryLimits::default(), now)?;
    println!(
        "{:<11} {:<52} {:<24} {:>12}  EXPIRES",
        "KIND", "OWNER", "NAME", "SEQ"
    );
    for signed in registry.iter() {
        let record = signed.record();
        let name = match record {
            Record::Node(n) => format!("{} addresses", n.addresses.len()),
            Record::Service(s) => s.service.to_string(),
            Record::NameClaim(c) => c.username.to_string(),
        };
        println!(
            "{:<11} {:<52} {:<24} {:>12}  {}",
            record.kind().label(),
            signed.owner(),
            name,
            record.seq(),
            human_until(record.expires_at(), now)
        );
    }
    Ok(())
}
