//! SVG charts (plotters' SVG backend: text is emitted as `<text>` elements, so no font
//! files are needed).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::Results;
use crate::w3_hot_key::Kind;

/// A chart written, for the report.
#[derive(Clone, Debug)]
pub struct Chart {
    /// File name inside the charts directory.
    pub file: String,
    /// What it shows.
    pub title: String,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Draws every chart the results allow into `dir`.
///
/// # Errors
///
/// When a file cannot be written.
pub fn draw(results: &Results, dir: &Path) -> anyhow::Result<Vec<Chart>> {
    let mut out = Vec::new();
    for w3 in &results.w3 {
        let file = format!("handoff-{}node.svg", w3.nodes);
        let title = format!(
            "W3 hand-off latency, 8 contenders, {} node(s): cumulative distribution",
            w3.nodes
        );
        let series: Vec<(String, Vec<(f64, f64)>)> = Kind::ALL
            .iter()
            .filter_map(|&k| w3.variant(k))
            .map(|v| {
                let total = v.handoffs.len().max(1) as f64;
                let mut seen = 0u64;
                let points = v
                    .handoffs
                    .iter_recorded()
                    .map(|x| {
                        seen += x.count_at_value();
                        (x.value_iterated_to() as f64 / 1000.0, seen as f64 / total)
                    })
                    .collect();
                (v.kind.label().to_string(), points)
            })
            .collect();
        cdf(&dir.join(&file), &title, &series)?;
        out.push(Chart { file, title });
    }
    if !results.w2.is_empty() {
        let file = "throughput.svg".to_string();
        let title = "W2-style throughput vs. concurrency (distinct keys)".to_string();
        let mut series = Vec::new();
        for w2 in &results.w2 {
            let pts = |f: fn(&crate::w2_throughput::Level) -> f64| -> Vec<(f64, f64)> {
                w2.levels.iter().map(|l| (l.tasks as f64, f(l))).collect()
            };
            series.push((
                format!("fencelock, {} node(s)", w2.nodes),
                pts(|l| l.fencelock.median),
            ));
            series.push((
                format!("raw redis-rs, {} node(s)", w2.nodes),
                pts(|l| l.raw.median),
            ));
        }
        throughput(&dir.join(&file), &title, &series)?;
        out.push(Chart { file, title });
    }
    Ok(out)
}

fn cdf(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.fold(1.0f64, f64::max).max(lo * 10.0);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("hand-off latency, µs (log scale)")
        .y_desc("fraction of hand-offs ≤ x")
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn throughput(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let x_hi = xs.fold(1.0f64, f64::max);
    let y_hi = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8..x_hi * 1.25).log_scale(), 0f64..y_hi * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("concurrent tasks (log scale)")
        .y_desc("acquire+release pairs per second")
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dashed = i % 2 == 1;
        let style = if dashed {
            color.stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
