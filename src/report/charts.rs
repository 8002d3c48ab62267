//! The report's charts as SVG text, drawn with `plotters`' SVG backend (text as `<text>` elements, no
//! fonts or scripts needed), to be inlined in the HTML page: line charts of series over steps or epochs,
//! and grouped bar charts (the FLOPs prior against the drawn targets).
//!
//! A long run logs hundreds of thousands of steps; a series is reduced to at most [`MAX_POINTS`] points
//! by averaging runs of consecutive points, which keeps the trend and keeps the page small.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::search::plot::padded_range;

/// Points per drawn series at most.
pub const MAX_POINTS: usize = 800;

/// Chart size in pixels.
const SIZE: (u32, u32) = (1000, 360);

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
    /// A line with a dot at every point (few points: per-epoch values).
    Marked,
    /// A dashed line with a hollow circle at every point (few points).
    DashedMarked,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub stroke: Stroke,
}

impl Series {
    pub fn new(name: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>, stroke: Stroke) -> Series {
        Series { name: name.into(), color, points, stroke }
    }
}

/// One group of bars: a height per x position.
#[derive(Clone, Debug)]
pub struct Bars {
    pub name: String,
    pub color: RGBColor,
    pub values: Vec<(f64, f64)>,
}

/// Colours of the sandwich roles and of a second quantity.
pub const MAX_COLOR: RGBColor = RGBColor(31, 119, 180);
pub const SAMPLED_COLOR: RGBColor = RGBColor(44, 160, 44);
pub const MIN_COLOR: RGBColor = RGBColor(214, 39, 40);
pub const GREY: RGBColor = RGBColor(150, 150, 150);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("report chart: {e}"))
}

/// The finite points of `points`, reduced to at most `max` by averaging runs of consecutive points.
pub fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if finite.len() <= max.max(1) {
        return finite;
    }
    let per = finite.len().div_ceil(max.max(1));
    finite
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (c.iter().map(|p| p.0).sum::<f64>() / n, c.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// An SVG chart with a caption, labelled axes over `x` and `y`, whatever `draw` adds, and the legend of
/// the labelled series when `draw` returns true.
fn svg_chart(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    draw: impl FnOnce(&mut Chart) -> Result<bool>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_err)?;
        if draw(&mut chart)? {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A line chart of `series` (empty series are left out of the legend).
pub fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<String> {
    let drawn: Vec<(&Series, Vec<(f64, f64)>)> =
        series.iter().map(|s| (s, downsample(&s.points, MAX_POINTS))).filter(|(_, p)| !p.is_empty()).collect();
    let (x0, x1) = padded_range(drawn.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), 1.0);
    let (y0, y1) = padded_range(drawn.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 1e-9);
    svg_chart(title, (x_desc, y_desc), x0..x1, y0..y1, |chart| {
        for (s, points) in &drawn {
            let color = s.color;
            let style = color.stroke_width(2);
            let anno = match s.stroke {
                Stroke::Solid => chart.draw_series(LineSeries::new(points.clone(), style)),
                Stroke::Marked => chart.draw_series(LineSeries::new(points.clone(), style).point_size(3)),
                Stroke::Dashed | Stroke::DashedMarked => {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                }
            }
            .map_err(plot_err)?;
            anno.label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], color.stroke_width(2)));
            if s.stroke == Stroke::DashedMarked {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.stroke_width(2))))
                    .map_err(plot_err)?;
            }
        }
        Ok(!drawn.is_empty())
    })
}

/// A grouped bar chart: at each x, one bar per group side by side within `width` (x units).
pub fn bar_chart(title: &str, x_desc: &str, y_desc: &str, groups: &[Bars], width: f64) -> Result<String> {
    let xs = groups.iter().flat_map(|g| g.values.iter().map(|v| v.0));
    let (x0, x1) = padded_range(xs.chain(groups.iter().flat_map(|g| g.values.iter().map(|v| v.0 + width))), 1e-9);
    let top = groups.iter().flat_map(|g| g.values.iter().map(|v| v.1)).filter(|v| v.is_finite()).fold(0.0, f64::max);
    svg_chart(title, (x_desc, y_desc), x0..x1, 0.0..(top * 1.1).max(1e-9), |chart| {
        let n = groups.len().max(1) as f64;
        for (i, g) in groups.iter().enumerate() {
            let color = g.color;
            let bars = g.values.iter().filter(|v| v.1.is_finite()).map(move |&(x, h)| {
                let left = x - width / 2.0 + i as f64 * width / n;
                Rectangle::new([(left, 0.0), (left + width / n, h)], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(g.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x - 6, y - 5), (x + 6, y + 5)], color.filled()));
        }
        Ok(!groups.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_averages_runs_and_drops_non_finite() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert_eq!(downsample(&pts, 20), pts);
        let d = downsample(&pts, 5);
        assert_eq!(d, vec![(0.5, 1.0), (2.5, 5.0), (4.5, 9.0), (6.5, 13.0), (8.5, 17.0)]);
        assert_eq!(downsample(&[(0.0, f64::NAN), (1.0, 1.0)], 5), vec![(1.0, 1.0)]);
        let long: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
        assert!(downsample(&long, MAX_POINTS).len() <= MAX_POINTS);
    }

    #[test]
    fn charts_hold_their_series() {
        let a = Series::new("alpha", MAX_COLOR, vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)], Stroke::Solid);
        let b = Series::new("beta", MIN_COLOR, vec![(1.0, 3.0), (3.0, 2.0)], Stroke::Marked);
        let svg = line_chart("losses", "step", "loss", &[a, b]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("alpha") && svg.contains("beta") && svg.contains("losses"));
        assert!(svg.contains("<polyline"), "lines drawn");
        // No series at all still makes a (blank) chart rather than an error.
        assert!(line_chart("empty", "x", "y", &[]).is_ok());
        let bars = [
            Bars { name: "prior".into(), color: GREY, values: vec![(1.0, 0.5), (2.0, 0.5)] },
            Bars { name: "drawn".into(), color: MIN_COLOR, values: vec![(1.0, 0.25), (2.0, 0.75)] },
        ];
        let svg = bar_chart("targets", "MFLOPs", "fraction", &bars, 0.8).unwrap();
        assert!(svg.matches("<rect").count() >= 5, "4 bars + background");
    }
}
