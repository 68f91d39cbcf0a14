//! The HTML report's charts, drawn by plotters into SVG strings that the page inlines: lines
//! with a band over seeds (time to accuracy, training loss) and bars with confidence whiskers
//! (seconds per epoch, peak memory, time to first step).
//!
//! plotters' SVG backend writes text as `<text>` elements with a generic font family, so the
//! charts need no font file and fetch nothing; it escapes that text itself.

use anyhow::anyhow;
use parallax_core::record::{EpochRecord, RunRecord};
use parallax_core::stats::Interval;
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;

/// Width and height of a line chart, in SVG user units (the page scales it to its column).
const LINE_SIZE: (u32, u32) = (720, 380);
/// Width and height of a bar chart.
const BAR_SIZE: (u32, u32) = (360, 300);
const FONT: &str = "sans-serif";

/// The colour of a backend: the same in every chart and report, by its row in the registry.
pub fn colour(backend: &str) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0xd9, 0x5f, 0x02),
        RGBColor(0x1f, 0x78, 0xb4),
        RGBColor(0x75, 0x70, 0xb3),
        RGBColor(0x1b, 0x9e, 0x77),
        RGBColor(0xe7, 0x29, 0x8a),
        RGBColor(0x66, 0xa6, 0x1e),
        RGBColor(0xa6, 0x76, 0x1d),
        RGBColor(0x66, 0x66, 0x66),
    ];
    let row = parallax_registry::BACKENDS
        .iter()
        .position(|entry| entry.name == backend)
        .unwrap_or(PALETTE.len() - 1);
    PALETTE[row % PALETTE.len()]
}

/// The colour as CSS writes it.
pub fn css_colour(backend: &str) -> String {
    let RGBColor(r, g, b) = colour(backend);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One point of a line over seeds: where it lies, the mean over seeds, and the band (the
/// lowest and highest seed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    /// The x value (the median over seeds where it varies, as training seconds do).
    pub x: f64,
    /// The mean over seeds.
    pub mean: f64,
    /// The lowest seed's value.
    pub low: f64,
    /// The highest seed's value.
    pub high: f64,
    /// Seeds at this point.
    pub seeds: usize,
}

/// One backend's line over seeds.
#[derive(Clone, Debug)]
pub struct Band {
    /// The backend.
    pub backend: String,
    /// Its points, in epoch order.
    pub points: Vec<BandPoint>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Each backend's line over its runs, epoch by epoch: `x` and `y` read an epoch's values.
/// Runs that stopped early count for the epochs they finished; values that are not finite
/// (a diverged loss) are left out.
pub fn bands(
    records: &[&RunRecord],
    x: impl Fn(&EpochRecord) -> f64,
    y: impl Fn(&EpochRecord) -> f64,
) -> Vec<Band> {
    let mut backends: Vec<&str> = Vec::new();
    for record in records {
        if !backends.contains(&record.backend.as_str()) {
            backends.push(&record.backend);
        }
    }
    backends
        .into_iter()
        .map(|backend| {
            let runs: Vec<&&RunRecord> = records.iter().filter(|r| r.backend == backend).collect();
            let epochs = runs.iter().map(|r| r.epochs.len()).max().unwrap_or(0);
            let points = (0..epochs)
                .filter_map(|index| {
                    let finished: Vec<&EpochRecord> = runs
                        .iter()
                        .filter_map(|r| r.epochs.get(index))
                        .filter(|e| x(e).is_finite() && y(e).is_finite())
                        .collect();
                    if finished.is_empty() {
                        return None;
                    }
                    let mut xs: Vec<f64> = finished.iter().map(|e| x(e)).collect();
                    let ys: Vec<f64> = finished.iter().map(|e| y(e)).collect();
                    Some(BandPoint {
                        x: median(&mut xs),
                        mean: ys.iter().sum::<f64>() / ys.len() as f64,
                        low: ys.iter().copied().fold(f64::INFINITY, f64::min),
                        high: ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        seeds: ys.len(),
                    })
                })
                .collect();
            Band {
                backend: backend.to_string(),
                points,
            }
        })
        .collect()
}

/// A range that holds `values` with a little room on each side, and some width when they are
/// all equal.
fn padded(values: impl Iterator<Item = f64>, floor: Option<f64>) -> std::ops::Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    if !low.is_finite() || !high.is_finite() {
        return 0.0..1.0;
    }
    let room = if high > low {
        (high - low) * 0.06
    } else {
        low.abs().max(1.0) * 0.05
    };
    let start = floor.map_or(low - room, |floor| floor.max(low - room));
    start..high + room
}

/// The look every chart's axes and grid share: labels large enough to read once the page
/// scales the chart down, and a light grid.
fn house_style<'a, 'b, 'm, XT, YT, X, Y, DB>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
    DB: DrawingBackend,
{
    mesh.label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
}

/// An error of plotters' SVG backend, as anyhow's.
fn drawing<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("drawing a chart: {error:?}")
}

/// A line chart of `bands`, one line per backend with its band over seeds, as SVG.
pub fn line_chart(
    x_description: &str,
    y_description: &str,
    bands: &[Band],
    x_floor: Option<f64>,
) -> anyhow::Result<String> {
    // The legend goes where the lines end least: below them when they rise, above when they
    // fall.
    let rising = bands
        .iter()
        .filter_map(|band| Some(band.points.last()?.mean - band.points.first()?.mean))
        .sum::<f64>()
        >= 0.0;
    let legend_at = if rising {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, LINE_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let points = || bands.iter().flat_map(|band| band.points.iter());
        let x_range = padded(points().map(|p| p.x), x_floor);
        let y_range = padded(points().flat_map(|p| [p.low, p.high]), None);
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(72)
            .build_cartesian_2d(x_range, y_range)
            .map_err(drawing)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_description).y_desc(y_description);
        house_style(&mut mesh).draw().map_err(drawing)?;
        for band in bands {
            let colour = colour(&band.backend);
            if band.points.iter().any(|p| p.high > p.low) {
                let outline: Vec<(f64, f64)> = band
                    .points
                    .iter()
                    .map(|p| (p.x, p.high))
                    .chain(band.points.iter().rev().map(|p| (p.x, p.low)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        outline,
                        colour.mix(0.18).filled(),
                    )))
                    .map_err(drawing)?;
            }
            chart
                .draw_series(LineSeries::new(
                    band.points.iter().map(|p| (p.x, p.mean)),
                    colour.stroke_width(2),
                ))
                .map_err(drawing)?
                .label(band.backend.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(
                    band.points
                        .iter()
                        .map(|p| Circle::new((p.x, p.mean), 3, colour.filled())),
                )
                .map_err(drawing)?;
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 16))
            .draw()
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

/// One bar: a backend's mean over seeds and the 95% interval of that mean, when there are
/// several seeds.
#[derive(Clone, Debug)]
pub struct Bar {
    /// The backend.
    pub backend: String,
    /// The mean.
    pub value: f64,
    /// The 95% interval of the mean (Student's t), for two or more seeds.
    pub interval: Option<Interval>,
}

/// A bar chart, one bar per backend with its whisker, as SVG; `format` writes a value.
pub fn bar_chart(
    y_description: &str,
    bars: &[Bar],
    format: &dyn Fn(f64) -> String,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, BAR_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let top = bars
            .iter()
            .map(|bar| bar.interval.map_or(bar.value, |i| i.high.max(bar.value)))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let top = if top > 0.0 { top * 1.15 } else { 1.0 };
        let names: Vec<String> = bars.iter().map(|bar| bar.backend.clone()).collect();
        let label = |x: &SegmentValue<i32>| -> String {
            match x {
                SegmentValue::CenterOf(index) => usize::try_from(*index)
                    .ok()
                    .and_then(|index| names.get(index).cloned())
                    .unwrap_or_default(),
                _ => String::new(),
            }
        };
        let count = i32::try_from(bars.len().max(1)).unwrap_or(i32::MAX);
        // plotters' integer ranges include their end: 0..count-1 holds one segment per bar.
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(72)
            .build_cartesian_2d((0..count - 1).into_segmented(), 0.0..top)
            .map_err(drawing)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .y_desc(y_description)
            .x_label_formatter(&label);
        house_style(&mut mesh).draw().map_err(drawing)?;
        for (i, bar) in (0..count).zip(bars) {
            if !bar.value.is_finite() {
                continue;
            }
            let colour = colour(&bar.backend);
            let mut rectangle = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), bar.value),
                ],
                colour.mix(0.75).filled(),
            );
            rectangle.set_margin(0, 0, 14, 14);
            chart
                .draw_series(std::iter::once(rectangle))
                .map_err(drawing)?;
            let centre = SegmentValue::CenterOf(i);
            if let Some(interval) = bar.interval {
                let whisker = BLACK.stroke_width(2);
                chart
                    .draw_series([PathElement::new(
                        vec![
                            (centre.clone(), interval.low),
                            (centre.clone(), interval.high),
                        ],
                        whisker,
                    )])
                    .map_err(drawing)?;
                chart
                    .draw_series([interval.low, interval.high].map(|y| {
                        EmptyElement::at((centre.clone(), y))
                            + PathElement::new(vec![(-8, 0), (8, 0)], whisker)
                    }))
                    .map_err(drawing)?;
            }
            let top_of_bar = bar.interval.map_or(bar.value, |i| i.high.max(bar.value));
            chart
                .draw_series(std::iter::once(Text::new(
                    format(bar.value),
                    (centre, top_of_bar + top * 0.02),
                    (FONT, 16).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )))
                .map_err(drawing)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(backend: &str, seed: u64, accuracies: &[f64]) -> RunRecord {
        let path = crate::cargo::repo_root().join("fixtures/records/v1-tch-mlp.json");
        let mut record = RunRecord::load(&path).unwrap();
        record.backend = backend.into();
        record.seed = seed;
        let template = record.epochs[0].clone();
        record.epochs = accuracies
            .iter()
            .enumerate()
            .map(|(i, &accuracy)| EpochRecord {
                epoch: i as u32 + 1,
                test_accuracy: accuracy,
                elapsed_training_seconds: (i + 1) as f64 * (1.0 + seed as f64 * 0.1),
                ..template.clone()
            })
            .collect();
        record
    }

    #[test]
    fn a_band_spans_the_seeds_and_its_x_is_their_median() {
        let runs = [
            record("tch", 1, &[0.5, 0.7]),
            record("tch", 2, &[0.6, 0.8]),
            record("tch", 3, &[0.7]),
            record("tf", 1, &[0.4, f64::NAN]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let bands = bands(&refs, |e| e.elapsed_training_seconds, |e| e.test_accuracy);
        assert_eq!(bands.len(), 2);
        let first = bands[0].points[0];
        assert_eq!((first.low, first.high, first.seeds), (0.5, 0.7, 3));
        assert!((first.mean - 0.6).abs() < 1e-12);
        assert!((first.x - 1.2).abs() < 1e-12, "{first:?}");
        // The run that stopped after one epoch counts only there.
        assert_eq!(bands[0].points[1].seeds, 2);
        // A NaN is left out rather than drawn.
        assert_eq!(bands[1].points.len(), 1);
    }

    #[test]
    fn charts_are_svg_with_every_backend_named_and_escaped() {
        let runs = [
            record("tch", 1, &[0.5, 0.7]),
            record("<tf>", 1, &[0.4, 0.6]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let bands = bands(&refs, |e| e.elapsed_training_seconds, |e| e.test_accuracy);
        let svg = line_chart("training seconds", "test accuracy", &bands, Some(0.0)).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("\ntch\n</text>"), "{svg}");
        assert!(svg.contains("&lt;tf&gt;") && !svg.contains("<tf>"));
        let bars = [
            Bar {
                backend: "tch".into(),
                value: 2.0,
                interval: Some(Interval {
                    low: 1.5,
                    high: 2.5,
                }),
            },
            Bar {
                backend: "burn".into(),
                value: 3.0,
                interval: None,
            },
        ];
        let svg = bar_chart("s/epoch", &bars, &|v| format!("{v:.2}")).unwrap();
        assert!(svg.contains("2.00") && svg.contains("3.00") && svg.contains("burn"));
    }
}
