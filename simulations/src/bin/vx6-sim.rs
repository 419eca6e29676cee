//! `vx6-sim`: runs the DHT scenarios and writes a markdown report with SVG plots.
//!
//!   vx6-sim --nodes 100000 --out sim-report     # the whole suite at one size
//!   vx6-sim --nodes 1000 --scenario steady       # one scenario
//!   vx6-sim --nodes 10000 --scenario relay-paths # relay path selection against the optimum

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use vx6_simulations::path_quality::{self, PathParams};
use vx6_simulations::report;
use vx6_simulations::scenario::{Outcome, Params, run_churn, run_lookups, run_suite};

/// Deterministic simulation of VX6's DHT.
#[derive(Parser)]
#[command(name = "vx6-sim")]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Lookups measured per scenario.
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// What to run: suite (every DHT scenario, on two bootstraps), steady, dead, adversarial
    /// (20% colluding), hostile (10% adversarial: 5% drop every request, 5% collude), churn;
    /// or relay-paths (relay path selection against the fastest and random paths; not in the
    /// suite).
    #[arg(long)]
    scenario: Option<String>,
    /// Disjoint paths of ordinary lookups in the adversarial and hostile scenarios.
    #[arg(long, default_value_t = 3)]
    paths: usize,
    /// Queries in flight per path (α).
    #[arg(long, default_value_t = 3)]
    alpha: usize,
    /// Random-id lookups each node runs after joining (bucket refresh).
    #[arg(long, default_value_t = 3)]
    refreshes: usize,
    /// Leave the colluding-adversary part out of the suite (it costs more than the rest).
    #[arg(long)]
    no_adversaries: bool,
    /// (client, owner) pairs of the relay-paths scenario.
    #[arg(long, default_value_t = 1000)]
    trials: usize,
    /// Relays each client knows in the relay-paths scenario (0: all of them).
    #[arg(long, default_value_t = 256)]
    candidates: usize,
    /// Directory for report.md and the SVG plots.
    #[arg(long, default_value = "sim-report")]
    out: PathBuf,
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let base = Params {
        lookups: a.lookups,
        publishers: 200,
        churn: 0.05,
        refreshes: a.refreshes,
        ..Params::new(a.nodes, a.seed)
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if a.scenario.as_deref() == Some("relay-paths") {
        return relay_paths(&a, &args);
    }
    let mut md = format!(
        "## DHT simulation, {} nodes, seed {}\n\nCommand: `cargo run --release -p vx6-simulations --bin vx6-sim -- {}`\n\n",
        a.nodes,
        a.seed,
        args.join(" ")
    );
    let outcomes: Vec<Outcome> = match a.scenario.as_deref() {
        None | Some("suite") => run_suite(&base, 10, !a.no_adversaries),
        Some("steady") => vec![run_lookups("steady state", &base)],
        Some("dead") => vec![run_lookups(
            "20% of nodes silently dead",
            &Params { dead: 0.2, ..base },
        )],
        Some("adversarial") => vec![run_lookups(
            &format!("20% colluding adversaries, {} disjoint paths", a.paths),
            &Params {
                adversaries: 0.2,
                paths: a.paths,
                alpha: a.alpha,
                ..base
            },
        )],
        Some("hostile") => vec![run_lookups(
            &format!(
                "10% adversarial nodes (5% drop every request, 5% collude), {} disjoint path(s)",
                a.paths
            ),
            &Params {
                adversaries: 0.05,
                droppers: 0.05,
                paths: a.paths,
                alpha: a.alpha,
                ..base
            },
        )],
        Some("churn") => vec![run_churn("publish and resolve under churn", &base, 10)],
        Some(other) => {
            anyhow::bail!(
                "unknown scenario {other:?} (suite, steady, dead, adversarial, hostile, churn, relay-paths)"
            )
        }
    };
    for o in &outcomes {
        md.push_str(&report::markdown(o));
        for f in report::plots(o, &a.out)? {
            md.push_str(&format!("![{f}]({f})\n\n"));
        }
    }
    if let Some(rss) = rss_mib() {
        md.push_str(&format!(
            "Peak memory (VmHWM): {rss:.0} MiB, {:.1} KiB per simulated node.\n",
            rss * 1024.0 / a.nodes as f64
        ));
    }
    std::fs::write(a.out.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn relay_paths(a: &Args, args: &[String]) -> Result<()> {
    let p = PathParams {
        trials: a.trials,
        candidates: if a.candidates == 0 {
            usize::MAX
        } else {
            a.candidates
        },
        ..PathParams::new(a.nodes, a.seed)
    };
    #[allow(clippy::disallowed_methods)] // wall-clock cost of the run, for the report only
    let started = std::time::Instant::now();
    let r = path_quality::run(&p);
    let wall = started.elapsed().as_secs_f64();
    let mut md = format!(
        "## Relay path simulation, {} nodes, seed {}\n\nCommand: `cargo run --release -p vx6-simulations --bin vx6-sim -- {}`\n\n",
        a.nodes,
        a.seed,
        args.join(" ")
    );
    md.push_str(&report::path_quality_markdown(&r));
    let f = report::path_quality_plot(&r, &a.out)?;
    md.push_str(&format!("![{f}]({f})\n\nRun time {wall:.1} s wall.\n"));
    std::fs::write(a.out.join("report.md"), &md)?;
    print!("{md}");
    anyhow::ensure!(
        r.violations.is_empty(),
        "{} rule violation(s) in path selection",
        r.violations.len()
    );
    Ok(())
}
