//! Markdown and SVG output of scenario outcomes.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::path_quality::{PathReport, Strategy};
use crate::scenario::{LookupStats, Outcome};

fn stats_rows(out: &mut String, what: &str, s: &LookupStats) {
    let _ = writeln!(
        out,
        "| {what} | {} | {:.2}% | {:.0} / {:.0} | {:.1} / {:.0} | {:.2} / {:.2} |",
        s.total,
        s.success() * 100.0,
        s.hops.p50,
        s.hops.p99,
        s.messages.p50,
        s.messages.p99,
        s.latency_rtt.p50,
        s.latency_rtt.p99,
    );
}

/// One scenario as a markdown section.
pub fn markdown(o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n\n{}\n", o.name, o.params);
    let _ = writeln!(
        out,
        "| lookups | count | success | rounds p50 / p99 | messages p50 / p99 | latency in RTTs p50 / p99 |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    if let Some(s) = &o.node_lookups {
        stats_rows(&mut out, "node lookup (k closest)", s);
    }
    if let Some(s) = &o.value_lookups {
        stats_rows(&mut out, "record resolution", s);
    }
    let _ = writeln!(
        out,
        "\n{} events in {:.1} s wall ({:.0} events/s), {:.0} s virtual; mean RTT {:.1} ms; routing table {:.0} contacts per live node (fewest {}); trace {}\n",
        o.events,
        o.wall_secs,
        o.events as f64 / o.wall_secs.max(1e-9),
        o.virtual_secs,
        o.mean_rtt_ms,
        o.table_mean,
        o.table_min,
        &o.trace[..16]
    );
    if !o.timeline.is_empty() {
        let _ = writeln!(out, "| churn step | resolution success |\n| ---: | ---: |");
        for (t, s) in &o.timeline {
            let _ = writeln!(out, "| {t:.0} | {:.2}% |", s * 100.0);
        }
        out.push('\n');
    }
    out
}

/// Draws the hop histogram and latency CDF of an outcome (and its churn timeline) as SVG.
pub fn plots(o: &Outcome, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let slug: String = o
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let series: Vec<(&str, &LookupStats)> = [
        ("node lookup", o.node_lookups.as_ref()),
        ("record resolution", o.value_lookups.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect();
    if !series.is_empty() {
        let file = format!("{slug}-hops.svg");
        let path = dir.join(&file);
        let root = SVGBackend::new(&path, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_hop = series
            .iter()
            .flat_map(|(_, s)| s.hop_samples.iter())
            .copied()
            .max()
            .unwrap_or(1)
            + 1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: lookup rounds", o.name), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0u32..max_hop, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("rounds")
            .y_desc("fraction of lookups")
            .draw()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let n = s.hop_samples.len().max(1) as f64;
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(u32, f64)> = (0..max_hop)
                .map(|h| {
                    (
                        h,
                        s.hop_samples.iter().filter(|x| **x == h).count() as f64 / n,
                    )
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        files.push(file);

        let file = format!("{slug}-latency.svg");
        let path = dir.join(&file);
        let root = SVGBackend::new(&path, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_lat = series
            .iter()
            .flat_map(|(_, s)| s.latency_samples.iter())
            .copied()
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: latency (RTTs, handshakes included)", o.name),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..max_lat * 1.05, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("latency in mean RTTs")
            .y_desc("cumulative fraction")
            .draw()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let mut v = s.latency_samples.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len().max(1) as f64;
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    v.iter().enumerate().map(|(j, x)| (*x, (j + 1) as f64 / n)),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        files.push(file);
    }
    if !o.timeline.is_empty() {
        let file = format!("{slug}-timeline.svg");
        let path = dir.join(&file);
        let root = SVGBackend::new(&path, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let steps = o.timeline.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: resolution success under churn", o.name),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..steps + 1.0, 0f64..1.05f64)?;
        chart
            .configure_mesh()
            .x_desc("churn step")
            .y_desc("success ratio")
            .draw()?;
        chart.draw_series(LineSeries::new(o.timeline.clone(), BLUE.stroke_width(2)))?;
        chart.draw_series(o.timeline.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
        root.present()?;
        files.push(file);
    }
    Ok(files)
}

/// A relay path-quality run as a markdown section.
pub fn path_quality_markdown(r: &PathReport) -> String {
    let p = &r.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Relay path quality: `select` against the fastest and uniform random paths\n\n\
         {} nodes, seed {}, {} relays in {} prefixes ({} declared operators; {} unhealthy, {} \
         without history); mean RTT between two nodes {:.0} ms. Each of {} trials takes a random \
         client and owner; the client knows {} with its measured RTT to each (±10%). Path RTT = client→r1 + r1→r2 + r2→owner (true RTTs). A fully diverse path was \
         possible in {} trials; `select` found no path in {}.\n",
        p.nodes,
        p.seed,
        r.relays,
        r.relay_prefixes,
        r.operators,
        r.unhealthy_relays,
        r.fresh_relays,
        r.mean_rtt_ms,
        r.trials,
        if r.candidates == r.relays {
            "every relay".to_owned()
        } else {
            format!("{} random relays", r.candidates)
        },
        r.full_possible,
        r.failed,
    );
    let _ = writeln!(
        out,
        "| paths | RTT p50 / p90 / p99 (ms) | ÷ fastest p50 / p90 | mean legs c→r1 / r1→r2 / r2→o (ms) | fully diverse | via unhealthy |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for s in &r.strategies {
        let _ = writeln!(
            out,
            "| {} | {:.0} / {:.0} / {:.0} | {:.2} / {:.2} | {:.0} / {:.0} / {:.0} | {:.1}% | {:.1}% |",
            s.strategy.label(),
            s.rtt.p50,
            s.rtt.p90,
            s.rtt.p99,
            s.stretch.p50,
            s.stretch.p90,
            s.legs[0],
            s.legs[1],
            s.legs[2],
            s.full_diversity * 100.0,
            s.unhealthy * 100.0,
        );
    }
    let _ = writeln!(
        out,
        "\nRule violations found by the checks: {}; trace {}\n",
        r.violations.len(),
        &r.trace[..16]
    );
    for (t, v) in r.violations.iter().take(10) {
        let _ = writeln!(out, "- trial {t}: {v:?}");
    }
    if !r.violations.is_empty() {
        out.push('\n');
    }
    out
}

/// Draws the CDF of path RTT per strategy as SVG.
pub fn path_quality_plot(r: &PathReport, dir: &Path) -> anyhow::Result<String> {
    let file = "relay-path-rtt.svg".to_owned();
    let path = dir.join(&file);
    let root = SVGBackend::new(&path, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = r
        .strategies
        .iter()
        .filter(|s| s.strategy != Strategy::UniformAny)
        .map(|s| s.rtt.p99)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Relay path RTT (2 hops)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..max * 1.05, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("path RTT (ms)")
        .y_desc("cumulative fraction")
        .draw()?;
    for (i, s) in r.strategies.iter().enumerate() {
        let mut v = s.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len().max(1) as f64;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(j, x)| (*x, (j + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(s.strategy.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(file)
}
