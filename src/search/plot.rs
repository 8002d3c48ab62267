//! `pareto.svg`: top-1 against MFLOPs (or latency in ms, in a latency search), every evaluated subnet as a grey dot and the non-dominated front
//! as a red line with dots. Drawn with `plotters`' SVG backend, which writes text as SVG `<text>`
//! elements (its built-in size estimate lays them out), so no system font is needed.

use std::path::Path;

use plotters::prelude::*;

use super::pareto::Point;
use crate::error::{Error, Result};
use crate::util::atomic::write_atomic;

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("pareto plot: {e}"))
}

/// (lo, hi) of `values` with a 5 % margin (and a minimum span, so one point still makes a range).
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, min_span: f64) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(min_span);
    let mid = (lo + hi) / 2.0;
    (mid - 0.55 * span, mid + 0.55 * span)
}

/// The x axis's label in an accuracy-vs-FLOPs search.
pub const MFLOPS_AXIS: &str = "MFLOPs (multiply-accumulates / 1e6)";

/// The SVG text of the plot; `x_label` names the cost axis ([`MFLOPS_AXIS`], or latency in ms).
pub fn render_svg(all: &[Point], front: &[Point], title: &str, x_label: &str) -> Result<String> {
    let (x0, x1) = padded_range(all.iter().map(|p| p.mflops), 1e-3);
    let (y0, y1) = padded_range(all.iter().map(|p| p.top1), 1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc(x_label).y_desc("top-1 (%)").draw().map_err(plot_err)?;
        let grey = RGBColor(140, 140, 140);
        chart
            .draw_series(all.iter().map(|p| Circle::new((p.mflops, p.top1), 3, grey.mix(0.6).filled())))
            .map_err(plot_err)?
            .label(format!("evaluated ({})", all.len()))
            .legend(move |(x, y)| Circle::new((x, y), 3, grey.filled()));
        chart
            .draw_series(LineSeries::new(front.iter().map(|p| (p.mflops, p.top1)), RED.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("Pareto front ({})", front.len()))
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], RED.stroke_width(2)));
        chart.draw_series(front.iter().map(|p| Circle::new((p.mflops, p.top1), 4, RED.filled()))).map_err(plot_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Renders and writes the plot atomically.
pub fn write_svg(path: &Path, all: &[Point], front: &[Point], title: &str, x_label: &str) -> Result<()> {
    let svg = render_svg(all, front, title, x_label)?;
    write_atomic(path, |w| w.write_all(svg.as_bytes()).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_points_and_front() {
        let all =
            [Point { mflops: 1.0, top1: 50.0 }, Point { mflops: 2.0, top1: 70.0 }, Point { mflops: 1.5, top1: 40.0 }];
        let svg = render_svg(&all, &all[..2], "test", "latency (ms)").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Pareto front (2)") && svg.contains("evaluated (3)"));
        assert!(svg.matches("<circle").count() >= 5, "3 dots, 2 front dots");
        assert!(svg.contains("latency (ms)"));
        assert!(render_svg(&[], &[], "empty", MFLOPS_AXIS).is_ok());
    }
}
